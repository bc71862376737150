"""Click-to-mask latency of one correction: after the four extreme points, one more click
(positive; it joins the heatmap, so the object's whole forward runs again) and its mask.

Times ``DextrModel.predict_image`` for one object with one positive correction on a 640x480
photo (crop, heatmaps, network, paste-back, threshold), per architecture at the target size,
with the runtime and precision given (default: OpenVINO at ``auto``, the fastest CPU runtime
measured in benchmarks/README.md). Weights are random: latency does not depend on them.

    nice -n 10 python benchmarks/bench_corrections_latency.py --arch resunet18 resunet101 \\
        --json benchmarks/results_corrections_latency_cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from dextr_lib.inference.device import cpu_flags
from dextr_lib.model import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["resunet18", "resunet101"])
    ap.add_argument("--target-size", type=int, default=512)
    ap.add_argument("--runtime", default="openvino")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    points = np.array([[240, 200], [250, 460], [120, 330], [400, 320]], dtype=float)
    results = []
    for arch in args.arch:
        torch.manual_seed(0)
        model = create_model(arch, target_size=args.target_size)
        kw = dict(threshold=0.5, batch_size=1, runtime=args.runtime, precision=args.precision)
        for _ in range(2):  # warm-up: graph export and compilation happen here
            model.predict_image(image, [points], positive=[[[260, 300]]], **kw)
        times = []
        for i in range(args.repeats):
            click = [[[250 + i, 300 + 3 * i]]]  # a new correction each time, as an annotator's
            t = time.perf_counter()
            model.predict_image(image, [points], positive=click, **kw)
            times.append(time.perf_counter() - t)
        row = {"arch": arch, "target_size": args.target_size, "runtime": args.runtime,
               "precision": args.precision, "median_s": round(statistics.median(times), 4),
               "min_s": round(min(times), 4), "repeats": args.repeats}
        print(row, flush=True)
        results.append(row)
    out = {"what": "click-to-mask latency of one positive correction, one object, 640x480 photo",
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "cpu": platform.processor() or platform.machine(), "cpu_flags": cpu_flags(),
                       "threads": torch.get_num_threads()},
           "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
