"""Time ``DextrModel.predict`` against the network forward alone.

For N objects at the given target size on the CPU (or --device), reports seconds per object for
the full ``predict`` (decode-free: images already in memory; conversion, crops, heatmaps,
forward, sigmoid, paste-back) and for the network forward on ready-made inputs, and the share of
time spent outside the network. Uses photos and Penn-Fudan objects from ../shared/data when
present, else synthetic images.

    python benchmarks/bench_predict.py --arch resunet101 --target-size 512 --objects 16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import dextr_lib
from dextr_lib.core.geometry import as_points_array, extreme_points_from_mask
from dextr_lib.core.images import read_image
from dextr_lib.inference.preprocessing import image_to_tensor
from dextr_lib.inference.runtimes import RUNTIMES
from dextr_lib.model import PRECISIONS

SHARED = Path(os.environ.get("DEXTR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_objects(n: int):
    """``n`` (image, points) pairs: Penn-Fudan pedestrians when available, else synthetic."""
    pairs = []
    labels_dir = SHARED / "pennfudan" / "labels"
    if labels_dir.is_dir():
        import PIL.Image

        for label_path in sorted(labels_dir.glob("*_mask.png")):
            image = read_image(SHARED / "pennfudan" / "images" / label_path.name.replace("_mask", ""))
            labels = np.asarray(PIL.Image.open(label_path))
            for v in np.unique(labels)[1:]:
                pairs.append((image, extreme_points_from_mask(labels == v)))
                if len(pairs) == n:
                    return pairs, "pennfudan"
    rng = np.random.default_rng(0)
    while len(pairs) < n:
        image = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
        y0, x0 = rng.integers(20, 200, size=2)
        pts = np.array([[y0 + 100, x0], [y0 + 120, x0 + 300], [y0, x0 + 150], [y0 + 250, x0 + 140]])
        pairs.append((image, pts))
    return pairs, "synthetic"


def timed(fn, repeats: int) -> list:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resunet101")
    ap.add_argument("--target-size", type=int, default=512)
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ap.add_argument("--runtime", default="torch", choices=RUNTIMES)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = dextr_lib.create_model(args.arch, target_size=args.target_size).to(args.device)
    pairs, source = load_objects(args.objects)
    images = [p[0] for p in pairs]
    points = [p[1] for p in pairs]
    dev = model.device

    # The exact inputs predict() builds, made once, for the network-only timing through the same
    # runner predict() calls (dextr_lib.inference.runtimes).
    inputs = torch.cat([
        model.preprocess.make_inputs(image_to_tensor(img, dev), as_points_array(pts))[0]
        for img, pts in pairs
    ])
    run_network = model.runner(args.runtime, args.precision)

    def forward_only():
        with torch.inference_mode():
            for s in range(0, len(inputs), args.batch_size):
                torch.sigmoid(run_network(inputs[s:s + args.batch_size]))
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def full_predict():
        model.predict(images, points, batch_size=args.batch_size, precision=args.precision,
                      runtime=args.runtime)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model.eval()
    forward_only()  # warm-up (allocator, oneDNN primitive cache)
    t_fwd, t_pred = [], []
    for _ in range(args.repeats):  # interleaved, so a load change hits both alike
        t_fwd += timed(forward_only, 1)
        t_pred += timed(full_predict, 1)
    fwd, pred = statistics.median(t_fwd), statistics.median(t_pred)
    result = {
        "arch": args.arch, "target_size": args.target_size, "objects": args.objects,
        "batch_size": args.batch_size, "device": str(dev), "precision": run_network.precision, "runtime": args.runtime, "threads": torch.get_num_threads(),
        "data": source, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "predict_s_per_object": pred / args.objects, "forward_s_per_object": fwd / args.objects,
        "overhead_fraction": (pred - fwd) / fwd,
        "predict_runs_s": t_pred, "forward_runs_s": t_fwd,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
