"""Objects/s of ``dextr predict --coco`` in one process and on a local Ray (1 and 2 CPU workers),
the Ray pipeline's overhead per object, and a projection for N machines.

The COCO file is made from the first ``--photos`` photos of ``shared/data/coco128seg`` (objects of
area >= 256 px, clicks from their masks). The model is a seeded, randomly initialised resunet18 at
``--size`` px (speed does not depend on the weights). Every runner uses 1 torch thread per worker,
so one process and one Ray worker do the same network work; the difference is the pipeline.

Measured:
- ``network_s_per_object``: the median forward time of one object's crop (batch 1);
- one process: ``predict_coco`` on ``--photos`` photos (and a quarter of them);
- Ray: ``ray.init(num_cpus=2)`` once, one warm-up run (Ray starts its worker processes; not
  counted), then ``predict_coco_ray`` with 1 and 2 workers on both sizes: the slope between the
  sizes is the marginal time per object, the intercept the fixed start of a run (actors, model
  shipping, Ray Data's planning).

Prints one JSON object (``--json FILE`` saves it):

    nice -n 10 python benchmarks/bench_ray.py --photos 32 --size 128 --json benchmarks/results_ray_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import dextr_lib
from dextr_lib.formats.coco import CocoFile
from dextr_lib.inference.device import cpu_flags, torch_threads
from dextr_lib.workflows import cluster
from dextr_lib.workflows.points import instances_from_masks
from dextr_lib.workflows.predict import predict_coco

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128seg"


def coco_file(folder: Path, n_photos: int) -> Path:
    images = DATA / "images"
    stems = sorted(p.stem for p in images.glob("*.jpg"))[:n_photos]
    masks = [m for s in stems for m in sorted((DATA / "masks").glob(f"{s}_mask*.png"))]
    cf = instances_from_masks(masks, images / "x.json", kind="mask", image_dir=images, min_area=256)
    path = folder / f"in_{n_photos}.json"
    cf.save(path)
    return path


def network_time(model, size: int, repeats: int = 30) -> float:
    # channels_last, as the torch runner feeds the network (contiguous inputs run ~30% slower
    # and made the network alone look slower than the whole one-process path)
    x = torch.randn(1, 4, size, size).contiguous(memory_format=torch.channels_last)
    model.net.to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), torch_threads(1):
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            model.net(x)
            if i >= 3:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--note", default="", help="where it ran and what else was running (kept in the JSON)")
    args = ap.parse_args()
    import ray

    torch.manual_seed(0)
    model = dextr_lib.create_model("resunet18", target_size=args.size)
    small_n = max(1, args.photos // 4)
    res = {"model": f"resunet18 at {args.size} px, random weights (seeded)", "threads_per_worker": 1,
           "photos": {"small": small_n, "full": args.photos}, "python": platform.python_version(),
           "torch": torch.__version__, "ray": ray.__version__, "cpus": os.cpu_count(),
           "cpu_flags": cpu_flags(), "load_average_before": os.getloadavg()[0],
           "note": args.note}
    res["network_s_per_object"] = network_time(model, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {k: coco_file(tmp, n) for k, n in res["photos"].items()}
        objects = {k: len(CocoFile.load(p).annotations) for k, p in files.items()}
        res["objects"] = objects
        one = {}
        with torch_threads(1):
            for k, p in files.items():
                t0 = time.perf_counter()
                predict_coco(model, CocoFile.load(p), tmp / f"one_{k}.json", images_dir=DATA / "images").save()
                one[k] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        res["ray_init_s"] = time.perf_counter() - t0
        runs = {}
        try:
            for workers, k in ((1, "warm-up"), (1, "small"), (1, "full"), (2, "small"), (2, "full")):
                t0 = time.perf_counter()
                cluster.predict_coco_ray(model, CocoFile.load(files.get(k, files["small"])),
                                         tmp / f"ray_{workers}_{k}.json",
                                         cluster.RaySettings(workers=workers, threads=1),
                                         images_dir=DATA / "images")
                runs[workers, k] = time.perf_counter() - t0
        finally:
            ray.shutdown()
        same = (tmp / "ray_1_full.json").read_text() == (tmp / "one_full.json").read_text()
    n, m = objects["full"], objects["small"]
    one_per = one["full"] / n
    res["one_process"] = {"s": one["full"], "objects_per_s": n / one["full"], "s_per_object": one_per}
    res["ray_local"] = {}
    for workers in (1, 2):
        slope = (runs[workers, "full"] - runs[workers, "small"]) / (n - m)
        res["ray_local"][f"{workers} worker{'s' * (workers > 1)}"] = {
            "s_full": runs[workers, "full"], "objects_per_s_full": n / runs[workers, "full"],
            "s_small": runs[workers, "small"], "marginal_s_per_object": slope,
            "marginal_objects_per_s": 1 / slope if slope > 0 else None,
            "fixed_start_s": runs[workers, "full"] - slope * n}
    slope = res["ray_local"]["1 worker"]["marginal_s_per_object"]
    res["ray_fixed_start_s"] = res["ray_local"]["1 worker"]["fixed_start_s"]
    res["pipeline_overhead_s_per_object"] = slope - one_per
    res["same_file_as_one_process"] = same
    # Projection: the per-object work outside the network (decode, crop, heatmap, paste-back,
    # RLE, Ray's own) runs on each machine's CPUs; the network on its GPUs.
    cpu_side = one_per - res["network_s_per_object"] + max(0.0, slope - one_per)
    res["cpu_side_s_per_object"] = cpu_side
    res["projection"] = {
        "formula": "objects/s = N * min(G / t_gpu, C / t_cpu_side), for N machines with G GPUs and "
                   "C CPU cores each, once the fixed start (ray_fixed_start_s) is paid",
        "assumes": "t_cpu_side measured here (1 thread per object) scales linearly over a machine's "
                   "cores; t_gpu is the network's per-object time on the GPU at a batch that fills it "
                   "(not measured here: no GPU); photos are read from storage that keeps up; the "
                   "driver's shard writing (JSON, a few KB per object) is not the bottleneck",
        "cpu_machines_like_this_one_objects_per_s": {
            f"N={k}": k * (os.cpu_count() or 1) / (one_per + max(0.0, slope - one_per)) for k in (1, 8, 64)},
        "gpu_machine_cpu_bound_objects_per_s_per_16_cores": 16 / cpu_side,
    }
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
