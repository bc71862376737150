"""Click-to-mask latency of ``dextr serve`` against ``predict`` of the same object.

Starts the real server (uvicorn, in this process, on 127.0.0.1) on one photo and, alternating,
times (a) ``DextrModel.predict_image`` on the decoded photo — what ``predict`` runs for one
object — and (b) an HTTP ``POST /api/predict`` with the photo's id, as the page sends it after
the fourth click (``format=png``, ``crop=true``), measured by the client from request to parsed
answer. Points move by a pixel each click, so no answer comes from the server's result cache.
The server's overhead is (b) / (a) - 1, from the medians; its own cost per click (round trip
minus the network's time measured inside the server) is reported too. Runs alternate so that the load of a
shared machine hits both sides alike.

    python benchmarks/bench_serve.py --arch resunet18 --clicks 20 --json benchmarks/results_serve_resunet18_512_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

import dextr_lib
from dextr_lib.core.geometry import xy_to_yx
from dextr_lib.core.images import read_image
from dextr_lib.inference.device import cpu_flags

SHARED = Path(os.environ.get("DEXTR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BEAR = [[97, 268], [462, 400], [232, 215], [447, 430]]  # bear.jpg: left, right, top, bottom [x, y]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resunet18")
    ap.add_argument("--target-size", type=int, default=512)
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--photo", type=Path, default=SHARED / "photos" / "bear.jpg")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import httpx
    import uvicorn

    from dextr_lib.serving import create_app

    torch.manual_seed(0)
    model = dextr_lib.create_model(args.arch, target_size=args.target_size).to("cpu")
    if args.photo.is_file():
        folder, name, points = args.photo.parent, args.photo.name, BEAR
    else:  # no shared data: a synthetic photo
        folder = Path(tempfile.mkdtemp())
        name = "synthetic.png"
        import PIL.Image

        rng = np.random.default_rng(0)
        PIL.Image.fromarray(rng.integers(0, 255, (480, 854, 3), dtype=np.uint8)).save(folder / name)
        points = BEAR
    rgb = read_image(folder / name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ann = Path(tempfile.mkdtemp()) / "bench.json"
    app = create_app(model, folder, ann, precision=args.precision)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)

    def pts_for(i):
        return [[x + (i % 7), y - (i % 5)] for x, y in points]

    def direct(i):
        t = time.perf_counter()
        model.predict_image(rgb, [xy_to_yx(pts_for(i))], batch_size=1, precision=args.precision)
        return time.perf_counter() - t

    def served(i):
        t = time.perf_counter()
        r = client.post("/api/predict", json={"image_id": name, "points": pts_for(i), "format": "png",
                                              "crop": True})
        r.raise_for_status()
        r.json()
        return time.perf_counter() - t, r.json()["timing"]["model_ms"] / 1000

    # Warm-up (first forward, image decode and cache): not counted.
    direct(1000)
    served(1001)
    d, s, m = [], [], []
    for i in range(args.clicks):
        if i % 2 == 0:
            d.append(direct(i))
            st, mt = served(i + 500)
        else:
            st, mt = served(i + 500)
            d.append(direct(i))
        s.append(st)
        m.append(mt)
    server.should_exit = True
    thread.join(timeout=10)

    med_d, med_s = statistics.median(d), statistics.median(s)
    result = {
        "arch": args.arch, "target_size": args.target_size, "precision": args.precision,
        "photo": name, "size": list(rgb.shape[:2]), "clicks": args.clicks,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu_flags": cpu_flags(),
        "predict_median_s": med_d, "served_click_median_s": med_s,
        "served_model_median_s": statistics.median(m),
        "overhead_fraction": med_s / med_d - 1,
        # Per click: the round trip minus the network's time inside the server (HTTP, JSON,
        # image cache, thresholding, PNG): the server's own cost, free of the forward's noise.
        "server_extra_median_ms": statistics.median((a - b) * 1000 for a, b in zip(s, m)),
        "predict_runs_s": d, "served_runs_s": s,
        "note": "shared machine (other processes running); runs alternate predict/served",
    }
    print(f"{args.arch} @ {args.target_size}, {args.precision}: predict {med_d * 1000:.0f} ms, "
          f"served click-to-mask {med_s * 1000:.0f} ms (network in server "
          f"{result['served_model_median_s'] * 1000:.0f} ms), overhead {result['overhead_fraction']:+.1%}, "
          f"server's own cost {result['server_extra_median_ms']:.0f} ms per click")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
