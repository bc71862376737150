"""Training throughput (samples/s, all processes) of ``dextr train`` with 1 and N processes.

Each run trains a fresh resunet18 (no pretrained weights) on Penn-Fudan from ../shared/data
(``--data`` to point elsewhere) for a few epochs; the first epoch is a warm-up, the later ones'
``samples_per_s`` from ``metrics.jsonl`` are averaged. Runs alternate between the process counts
(so load from other programs hits both alike) and print one JSON line each; a summary JSON goes
to ``--out``. Every process gets ``--threads`` threads (default 1)::

    python benchmarks/bench_train.py --nproc 1 2 --repeats 2 --out benchmarks/results_train_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from dextr_lib.inference.device import cpu_flags

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def run(nproc: int, args, jobs: Path, k: int) -> dict:
    name = f"n{nproc}-{k}"
    cmd = [sys.executable, "-m", "dextr_cli", "train", name, "--jobs-dir", str(jobs),
           "--dataset", "custom_label", "--image-pat", str(args.data / "images" / "*.png"),
           "--target-pat", str(args.data / "labels" / "*.png"), "--min-object-area", "100",
           "--arch", args.arch, "--target-size", str(args.target_size), "--no-pretrained",
           "--batch-size", str(args.batch_size), "--iters-per-epoch", str(args.iters),
           "--num-epochs", str(args.epochs), "--val-every-n-epochs", "0", "--seed", "0",
           "--opt-type", "adam", "--learning-rate", "1e-3", "--device", "cpu"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(x) for x in (jobs / name / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows[1:]]  # epoch 1 is the warm-up
    return {"nproc": nproc, "threads_per_process": args.threads, "arch": args.arch,
            "target_size": args.target_size, "batch_size_per_process": args.batch_size,
            "global_batch": args.batch_size * nproc, "samples_per_s": round(statistics.mean(rates), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--arch", default="resunet18")
    ap.add_argument("--target-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=SHARED / "pennfudan")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for n in args.nproc:
                r = run(n, args, Path(tmp), k)
                print(json.dumps(r), flush=True)
                results.append(r)
    summary = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "flags": cpu_flags()},
        "runs": results,
        "mean_samples_per_s": {str(n): round(statistics.mean(r["samples_per_s"] for r in results
                                                             if r["nproc"] == n), 3) for n in args.nproc},
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary["mean_samples_per_s"]))


if __name__ == "__main__":
    main()
