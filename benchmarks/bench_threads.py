"""How many torch threads? Time predict and a training step at each thread count, on the machine as
found and with deliberate load (busy-loop processes, one pinned to each core with taskset when
available), alternating thread counts and conditions round by round so that load changes from
other users of a shared machine hit every setting alike.

    python benchmarks/bench_threads.py --rounds 3 --json benchmarks/results_threads_cpu.json

Predict: a resunet101 at 512 (the published model's size) on --objects Penn-Fudan objects (from
../shared/data when present, else synthetic). Training step: resunet18 at 128, batch 8,
forward + backward + SGD step (the cpu-small scale). Reports the median seconds per setting and
the 1-minute load average seen before each timing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import dextr_lib
from dextr_lib.inference.device import auto_threads, cpu_flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import load_objects  # noqa: E402  (the benchmarks share their object loader)

BUSY = "while True:\n    pass\n"


def start_load(n: int) -> list:
    """``n`` busy-loop processes, the i-th pinned to core i (mod the cores) when taskset exists."""
    procs = []
    cores = os.cpu_count() or 1
    for i in range(n):
        cmd = [sys.executable, "-c", BUSY]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", str(i % cores)] + cmd
        procs.append(subprocess.Popen(cmd))
    time.sleep(1.0)
    return procs


def stop_load(procs: list) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="thread counts to compare (default: 1,2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--load", type=int, default=os.cpu_count() or 1,
                    help="busy-loop processes of the loaded condition (default: one per core)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--note", default="", help="how the machine was (idle, shared...), kept in the JSON")
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]

    torch.manual_seed(0)
    predictor = dextr_lib.create_model("resunet101", target_size=512)
    pairs, source = load_objects(args.objects)
    trainee = dextr_lib.create_model("resunet18", target_size=128)
    net = trainee.net
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(8, 4, 128, 128)
    y = (torch.rand(8, 1, 128, 128) > 0.5).float()

    def predict():
        for image, points in pairs:
            predictor.predict_image(image, [points])

    def train_step():
        opt.zero_grad()
        out = net(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        torch.nn.functional.binary_cross_entropy_with_logits(out, y).backward()
        opt.step()

    torch.set_num_threads(max(counts))
    predict(), train_step()  # warm-up: allocations, oneDNN kernels
    times = {(c, t, w): [] for c in ("as found", "loaded") for t in counts for w in ("predict", "train")}
    loads = {"as found": [], "loaded": []}
    auto = {"as found": [], "loaded": []}
    for r in range(args.rounds):
        conditions = ("as found", "loaded") if r % 2 == 0 else ("loaded", "as found")
        for cond in conditions:
            procs = start_load(args.load) if cond == "loaded" else []
            try:
                auto[cond].append(auto_threads())  # what dextr's default would pick now
                for t in (counts if r % 2 == 0 else counts[::-1]):
                    torch.set_num_threads(t)
                    loads[cond].append(os.getloadavg()[0])
                    for what, fn in (("predict", predict), ("train", train_step)):
                        t0 = time.perf_counter()
                        fn()
                        times[(cond, t, what)].append(time.perf_counter() - t0)
            finally:
                stop_load(procs)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    rows = []
    for (cond, t, what), ts in times.items():
        per = len(pairs) if what == "predict" else 1
        rows.append({"condition": cond, "threads": t, "what": what,
                     "median_s": statistics.median(ts) / per, "runs_s": [v / per for v in ts]})
    print(f"{'condition':10} {'what':8} " + " ".join(f"{t:>3} thr" for t in counts)
          + "   (median s per object / per training step)")
    for cond in ("as found", "loaded"):
        for what in ("predict", "train"):
            meds = [next(r["median_s"] for r in rows if r["condition"] == cond and r["threads"] == t
                         and r["what"] == what) for t in counts]
            print(f"{cond:10} {what:8} " + " ".join(f"{m:7.2f}" for m in meds))
    result = {
        "rows": rows, "objects": len(pairs), "object_source": source,
        "predict_model": "resunet101 @ 512", "train_model": "resunet18 @ 128, batch 8",
        "load_processes": args.load, "taskset": bool(shutil.which("taskset")),
        "loadavg_1min": {k: [round(v, 2) for v in vs] for k, vs in loads.items()},
        "auto_threads_picked": auto, "nice": os.nice(0),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "machine": platform.machine(),
        "cpu_flags": cpu_flags(),
        "note": args.note,
        "method": "runs alternate thread counts and conditions; the load average includes this "
                  "benchmark's own runs",
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
