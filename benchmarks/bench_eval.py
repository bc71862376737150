"""Throughput of ``dextr_lib.evaluation.evaluator.evaluate`` in objects/s (reading, network, metrics).

Random weights are enough for timing. Runs the first N Penn-Fudan objects of ../shared/data
(``--data`` to point elsewhere) for each architecture and prints one JSON line per run:

    python benchmarks/bench_eval.py --arch resunet18 resunet101 --target-size 512 --objects 24
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import dextr_lib
from dextr_lib.data import build_dataset
from dextr_lib.evaluation.evaluator import evaluate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["resunet18", "resunet101"])
    ap.add_argument("--target-size", type=int, default=512)
    ap.add_argument("--objects", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", type=Path, default=SHARED / "pennfudan")
    args = ap.parse_args()
    ds = build_dataset("custom_label", image_pat=str(args.data / "images" / "*.png"),
                       target_pat=str(args.data / "labels" / "*.png"), min_object_area=100)
    for arch in args.arch:
        torch.manual_seed(0)
        model = dextr_lib.create_model(arch, target_size=args.target_size).to(args.device)
        evaluate(model, ds, limit=2, batch_size=args.batch_size)  # warm-up
        t0 = time.perf_counter()
        report = evaluate(model, ds, limit=args.objects, batch_size=args.batch_size)
        wall = time.perf_counter() - t0
        print(json.dumps({
            "arch": arch, "target_size": args.target_size, "device": args.device,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "objects": report.n_objects, "objects_per_s": round(report.n_objects / wall, 3),
            "network_objects_per_s": round(report.n_objects / report.model_seconds, 3),
            "seconds": round(wall, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
