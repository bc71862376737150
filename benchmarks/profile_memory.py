"""Where a fresh process's memory goes when it predicts: resident and peak memory after each stage
(importing torch, reading the photos, loading the model, making the runtime's session, predicting).

    python benchmarks/profile_memory.py model.onnx --runtime openvino
    python benchmarks/profile_memory.py model.pt --runtime torch --batch-size 8

Penn-Fudan objects from ../shared/data (``DEXTR_SHARED_DATA`` elsewhere), as bench_runtimes.py.
Run it once per model and runtime: the numbers are the process's own (VmRSS / VmHWM).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def memory_mib() -> dict:
    """The process's resident (VmRSS) and peak resident (VmHWM) memory in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[{"VmRSS": "rss", "VmHWM": "peak"}[key]] = int(value.split()[0]) // 1024
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a .pt or .onnx model")
    ap.add_argument("--runtime", default=None, help="torch, onnxruntime or openvino (default: the model's)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1)
    args = ap.parse_args(argv)

    stages = [("start", memory_mib())]
    import numpy as np
    import torch  # noqa: F401  (its own share, measured on its own)
    stages.append(("import torch", memory_mib()))
    import dextr_lib
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_predict import load_objects
    stages.append(("import dextr", memory_mib()))

    pairs, _ = load_objects(args.objects)
    images, points = [p[0] for p in pairs], [np.asarray(p[1], float) for p in pairs]
    stages.append((f"read {len(images)} photos", memory_mib()))
    model = dextr_lib.load_model(args.model, map_location="cpu")
    stages.append(("load the model", memory_mib()))
    model.runner(args.runtime, args.precision)
    stages.append(("make the runtime's session", memory_mib()))
    model.predict(images, points, batch_size=args.batch_size, runtime=args.runtime, precision=args.precision)
    stages.append((f"predict (batch {args.batch_size})", memory_mib()))

    previous = 0
    print(f"{'stage':28s} {'RSS MiB':>8s} {'+':>6s} {'peak MiB':>9s}")
    for name, m in stages:
        print(f"{name:28s} {m['rss']:8d} {m['rss'] - previous:+6d} {m['peak']:9d}")
        previous = m["rss"]
    print(json.dumps({"model": args.model, "runtime": args.runtime or model.runtime,
                      "precision": args.precision, "stages": dict(stages)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
