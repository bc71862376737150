"""Where training time goes: samples/s of the data pipeline alone, of the training step on ready
tensors, and of the full loop, for one architecture at several crop sizes.

- **data**: batches drawn from :func:`dextr_lib.training.loop.training_loader`, the loader the
  loop uses (decoding, augmented crops, heatmaps; ``--workers`` loading processes, default the
  ``[train] num_workers`` default), nothing else;
- **step**: :func:`dextr_lib.training.loop.train_step` (forward, balanced BCE, backward, Adam)
  on one batch made beforehand, again and again;
- **loop**: :func:`dextr_lib.training.training_loop` for two epochs without validation; the
  second epoch's ``samples_per_s`` (the first warms up caches and oneDNN primitives).

The three alternate within each round (load from other programs hits them alike); medians over
rounds. Penn-Fudan from ../shared/data (``DEXTR_SHARED_DATA`` elsewhere). The JSON records the CPU
model and flags, threads and versions::

    python benchmarks/bench_train_throughput.py --sizes 128 512 --json benchmarks/results_train_throughput_cpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_predict import SHARED  # noqa: E402
from bench_runtimes import machine, versions  # noqa: E402

import dextr_lib  # noqa: E402
from dextr_lib.config import TrainSettings  # noqa: E402
from dextr_lib.data import build_dataset  # noqa: E402
from dextr_lib.inference.device import cpu_flags  # noqa: E402
from dextr_lib.training import Callbacks, make_optimizer, seed_everything, training_loop  # noqa: E402
from dextr_lib.training.loop import train_step, training_loader  # noqa: E402


def data_rate(ds, model, s: TrainSettings, batches: int) -> float:
    loader = iter(training_loader(ds, model.preprocess, s))
    next(loader)  # worker start-up, first decodes
    t = time.perf_counter()
    for _ in range(batches):
        next(loader)
    rate = batches * s.batch_size / (time.perf_counter() - t)
    del loader
    return rate


def step_rate(ds, model, s: TrainSettings, steps: int) -> float:
    batch = next(iter(training_loader(ds, model.preprocess, s)))
    model.net.to(memory_format=torch.channels_last).train()  # as training_loop does
    optimizer = make_optimizer(model.net, s)
    dev = torch.device("cpu")
    for _ in range(2):  # warm-up
        train_step(model.net, optimizer, batch, dev)
    t = time.perf_counter()
    for _ in range(steps):
        train_step(model.net, optimizer, batch, dev)
    return steps * s.batch_size / (time.perf_counter() - t)


def loop_rate(ds, model, s: TrainSettings, steps: int) -> float:
    epochs = []

    class Record(Callbacks):
        def epoch_end(self, result, state):
            epochs.append(result)

    training_loop(model.net, model.preprocess, ds, None, s, device="cpu", num_epochs=2,
                  iters_per_epoch=steps, val_every_n_epochs=0, callbacks=Record())
    return epochs[-1].samples_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resunet18")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--batch-size", type=int, default=TrainSettings().batch_size)
    ap.add_argument("--workers", type=int, default=TrainSettings().num_workers)
    ap.add_argument("--steps", type=int, default=10, help="steps (batches) timed per measurement")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: dextr's automatic choice)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    threads = dextr_lib.inference.device.set_threads(args.threads or None)
    data = SHARED / "pennfudan"
    ds = build_dataset("custom_label", str(data / "images" / "*.png"), str(data / "labels" / "*.png"),
                       min_object_area=100, use_cache=False)
    result = {
        "machine": {**machine(), "flags": cpu_flags()},  # machine() records the threads just set
        "versions": versions(),
        "settings": {"arch": args.arch, "batch_size": args.batch_size, "num_workers": args.workers,
                     "steps": args.steps, "rounds": args.rounds, "objects": len(ds)},
        "rows": [],
    }
    print(json.dumps(result["machine"]["capabilities"]), f"threads {threads}", flush=True)
    for size in args.sizes:
        s = TrainSettings(arch=args.arch, target_size=size, pretrained=False, batch_size=args.batch_size,
                          num_workers=args.workers, opt_type="adam", learning_rate=1e-3, seed=0)
        runs = {"data": [], "step": [], "loop": []}
        for r in range(args.rounds):
            for what, fn in (("data", data_rate), ("step", step_rate), ("loop", loop_rate)):
                seed_everything(0)
                model = dextr_lib.create_model(args.arch, target_size=size)
                runs[what].append(fn(ds, model, s, args.steps))
            print(f"  {size} px round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()),
                  flush=True)
        row = {"target_size": size, **{f"{k}_samples_per_s": statistics.median(v) for k, v in runs.items()},
               "runs": runs}
        row["loop_over_step"] = row["loop_samples_per_s"] / row["step_samples_per_s"]
        result["rows"].append(row)
        print(f"{args.arch} {size} px, batch {args.batch_size}, {args.workers} workers: data "
              f"{row['data_samples_per_s']:.1f}, step {row['step_samples_per_s']:.2f}, loop "
              f"{row['loop_samples_per_s']:.2f} samples/s (loop / step {row['loop_over_step']:.2f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
