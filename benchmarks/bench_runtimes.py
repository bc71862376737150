"""CPU inference per runtime and precision, against the ``dextr`` 0.1.2 package in the same run.

For each architecture at the target size and each batch size: seconds per object of
``DextrModel.predict`` (images in memory: conversion, crops, heatmaps, network, paste-back) and of
the bare network call of the same runtime on ready inputs, for every runtime x precision this
machine has (torch fp32/bf16, onnxruntime fp32/int8, openvino fp32/bf16/int8); the package's
``predict`` on the same weights and objects runs between them (alternating, so load changes hit
both sides alike) and results are given as ratios to it. Peak RSS is measured in a fresh
process per variant (load the model, predict the objects). The machine (CPU model and flags,
threads) and versions go into the JSON.

int8 graphs are calibrated on jittered boxes of ../shared/data/photos. Pass ``--trained CKPT``
(a trained model, e.g. a resunet18 from ``dextr train``) to also report how close int8 and bf16
masks are to fp32 (IoU on Penn-Fudan objects at the checkpoint's own target size).

The package is imported from its unpacked wheel (``pip download --no-deps dextr==0.1.2``, unzip;
``--ref-src`` is the folder holding ``dextr/``) with the shims of ``tests/helpers/compare_dextr012.py``.

    python benchmarks/bench_runtimes.py --ref-src /tmp/ref --arch resunet18 resunet101 \\
        --objects 8 --json benchmarks/results_runtimes.json
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
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "helpers"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_predict import SHARED, load_objects, timed  # noqa: E402
from profile_memory import memory_mib  # noqa: E402

import dextr_lib  # noqa: E402
from dextr_lib.core.geometry import as_points_array  # noqa: E402
from dextr_lib.evaluation.metrics import iou  # noqa: E402
from dextr_lib.inference.device import cpu_capabilities, cpu_name  # noqa: E402
from dextr_lib.inference.preprocessing import image_to_tensor  # noqa: E402
from dextr_lib.workflows.export import (  # noqa: E402
    calibration_objects,
    model_from_onnx_bytes,
    onnx_metadata,
    quantize_int8,
    with_metadata,
)

#: (runtime, precision) pairs; "int8" is the int8 ONNX graph (run in fp32 mode).
VARIANTS = [
    ("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
    ("openvino", "bf16"), ("onnxruntime", "int8"), ("openvino", "int8"),
]


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "dextr": dextr_lib.__version__}
    for mod in ("onnx", "onnxruntime", "openvino", "onnxscript"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def machine() -> dict:
    return {"cpu": cpu_name(), "capabilities": cpu_capabilities(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "platform": platform.platform()}


def reference_model(ref_src: str, arch: str, target: int, state_dict=None):
    """The package's DextrModel for ``arch`` with our network's weights (or random when None)."""
    from compare_dextr012 import import_reference

    ref_model, ref_resunet = import_reference(ref_src)
    build = {"resunet101": ref_resunet.dextr_resunet101, "resunet50": ref_resunet.dextr_resunet50}.get(arch)
    if build is None:
        return None
    with torch.no_grad():  # the package writes into a leaf parameter in place
        net = build()
    ref = ref_model.DextrModel(net, (target, target), 10, 10.0)
    ref.eval()  # the package's eval() does not return the model
    return ref, net


def load_variant(models: dict, runtime: str, precision: str):
    """``(DextrModel, runtime, precision)`` to call predict with."""
    if precision == "int8":
        return models["int8"], runtime, "fp32"
    return (models["torch"] if runtime == "torch" else models["onnx"]), runtime, precision


def median_time(fn, repeats: int = 1) -> float:
    return statistics.median(timed(fn, repeats))


def rss_child(args) -> None:
    """In a fresh process: load one variant, predict the objects, print the peak RSS (MiB)."""
    pairs, _ = load_objects(args.objects)
    images, points = [p[0] for p in pairs], [np.asarray(p[1], float) for p in pairs]
    runtime, precision = args.rss_child
    if runtime == "reference":
        ref, net = reference_model(args.ref_src, args.arch[0], args.target_size)
        net.load_state_dict(torch.load(args.weights, weights_only=True), strict=False)
        ref.predict(images, points, batch_size=args.batch_sizes[0])
    else:
        model = dextr_lib.load_model(args.weights, map_location="cpu")
        model.predict(images, points, batch_size=args.batch_sizes[0], runtime=runtime,
                      precision="fp32" if precision == "int8" else precision)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report its parent's
    print(json.dumps({"peak_rss_mib": memory_mib()["peak"]}))


def peak_rss(args, weights: Path, runtime: str, precision: str, batch: int) -> float:
    cmd = [sys.executable, __file__, "--rss-child", runtime, precision, "--weights", str(weights),
           "--arch", args.arch_now, "--target-size", str(args.target_size), "--objects", str(args.objects),
           "--batch-sizes", str(batch)]
    if args.ref_src:
        cmd += ["--ref-src", args.ref_src]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]


def mask_agreement(trained: Path, n: int) -> dict:
    """IoU of bf16 / int8 masks against fp32 masks of a trained model on Penn-Fudan objects."""
    model = dextr_lib.load_model(trained, map_location="cpu")
    pairs, source = load_objects(n)
    images, points = [p[0] for p in pairs], [p[1] for p in pairs]
    calib = calibration_objects(sorted(str(p) for p in (SHARED / "photos").glob("*.jpg")), 32, seed=0)
    q_bytes, info = quantize_int8(model.onnx_graph(), model.preprocess, calib)
    int8 = model_from_onnx_bytes(with_metadata(q_bytes, onnx_metadata(model, info)))
    ref = model.predict(images, points, threshold=model.preprocess.threshold)
    out = {"model": str(trained), "arch": model.arch, "target_size": model.preprocess.target_size,
           "objects": len(images), "data": source}

    for name, m, rt, prec in [("torch bf16", model, "torch", "bf16"), ("openvino bf16", model, "openvino", "bf16"),
                              ("onnxruntime int8", int8, "onnxruntime", "fp32"),
                              ("openvino int8", int8, "openvino", "fp32")]:
        got = m.predict(images, points, threshold=model.preprocess.threshold, runtime=rt, precision=prec)
        ious = [iou(b, a) for a, b in zip(ref, got)]
        out[name] = {"min_iou_vs_fp32": min(ious), "mean_iou_vs_fp32": float(np.mean(ious))}
        print(f"  {name:20s} IoU vs fp32: min {min(ious):.4f} mean {np.mean(ious):.4f}", flush=True)
    return out


def bench_arch(args, arch: str, tmp: Path) -> dict:
    args.arch_now = arch
    torch.manual_seed(0)
    model = dextr_lib.create_model(arch, target_size=args.target_size)
    ref = None
    if args.ref_src:
        made = reference_model(args.ref_src, arch, args.target_size)
        if made is not None:
            ref, ref_net = made
            model.net.load_state_dict({k: v for k, v in ref_net.state_dict().items()
                                       if not k.startswith("base_model.fc.")})
    weights = tmp / f"{arch}.pt"
    model.save(weights)
    pairs, source = load_objects(args.objects)
    images, points = [p[0] for p in pairs], [np.asarray(p[1], float) for p in pairs]
    print(f"{arch}: exporting and quantising ...", flush=True)
    t = time.perf_counter()
    onnx_bytes = model.onnx_graph()
    export_s = time.perf_counter() - t
    calib = calibration_objects(sorted(str(p) for p in (SHARED / "photos").glob("*.jpg")), args.calibration, seed=0)
    t = time.perf_counter()
    q_bytes, info = quantize_int8(onnx_bytes, model.preprocess, calib)
    quant_s = time.perf_counter() - t
    models = {"torch": model,
              "onnx": model_from_onnx_bytes(with_metadata(onnx_bytes, onnx_metadata(model))),
              "int8": model_from_onnx_bytes(with_metadata(q_bytes, onnx_metadata(model, info)))}
    (tmp / f"{arch}.onnx").write_bytes(with_metadata(onnx_bytes, onnx_metadata(model)))
    (tmp / f"{arch}-int8.onnx").write_bytes(with_metadata(q_bytes, onnx_metadata(model, info)))
    inputs = torch.cat([model.preprocess.make_inputs(image_to_tensor(img), as_points_array(p))[0]
                        for img, p in zip(images, points)])
    rows = []
    for batch in args.batch_sizes:
        runs = {}
        variants = [v for v in VARIANTS if v[1] != "bf16" or args.bf16]
        for v in variants:  # warm-up: sessions, oneDNN primitive caches
            m, rt, prec = load_variant(models, *v)
            m.predict(images[:batch], points[:batch], batch_size=batch, runtime=rt, precision=prec)
        if ref is not None:
            ref.predict(images[:batch], points[:batch], batch_size=batch)
        for r in range(args.repeats):
            if ref is not None:
                runs.setdefault(("reference", ""), {"predict": []})["predict"].append(
                    median_time(lambda: ref.predict(images, points, batch_size=batch)) / len(images))
            for v in variants:
                m, rt, prec = load_variant(models, *v)
                run_net = m.runner(rt, prec)

                def bare():
                    with torch.inference_mode():
                        for s in range(0, len(inputs), batch):
                            torch.sigmoid(run_net(inputs[s:s + batch]))

                d = runs.setdefault(v, {"predict": [], "network": []})
                d["network"].append(median_time(bare) / len(images))
                d["predict"].append(median_time(
                    lambda: m.predict(images, points, batch_size=batch, runtime=rt, precision=prec)) / len(images))
            print(f"  batch {batch}: round {r + 1}/{args.repeats} done", flush=True)
        ref_s = statistics.median(runs[("reference", "")]["predict"]) if ref is not None else None
        for key, d in runs.items():
            pred = statistics.median(d["predict"])
            row = {"arch": arch, "batch_size": batch, "runtime": key[0], "precision": key[1] or "fp32",
                   "predict_s_per_object": pred, "predict_runs": d["predict"]}
            if "network" in d:
                net_s = statistics.median(d["network"])
                row.update(network_s_per_object=net_s, network_runs=d["network"],
                           predict_over_network=pred / net_s)
            if ref_s is not None:
                row["speedup_vs_dextr012"] = ref_s / pred
            rows.append(row)
            print(f"  {key[0]:12s} {row['precision']:5s} batch {batch}: predict {pred:.3f} s/obj"
                  + (f", network {row['network_s_per_object']:.3f}" if "network_s_per_object" in row else "")
                  + (f", {row['speedup_vs_dextr012']:.2f}x the package" if ref_s else ""), flush=True)
    if args.rss:
        print(f"{arch}: peak RSS per variant (fresh processes) ...", flush=True)
        for row in rows:
            if row["batch_size"] != args.batch_sizes[0]:
                continue
            rt, prec = row["runtime"], row["precision"]
            w = weights if rt in ("torch", "reference") else tmp / (f"{arch}-int8.onnx" if prec == "int8" else f"{arch}.onnx")
            row["peak_rss_mib"] = peak_rss(args, w, rt, prec, row["batch_size"])
            print(f"  {rt:12s} {prec:5s}: {row['peak_rss_mib']:.0f} MiB", flush=True)
    return {"arch": arch, "data": source, "objects": len(images), "export_s": export_s,
            "quantize_s": quant_s, "int8": info, "rows": rows}


def markdown(result: dict, tag: str = "") -> str:
    """The results as benchmarks/README.md's tables: one per architecture, then the mask agreement.

    ``tag`` is appended to the tables' marker comments, for a second machine's tables in the same file.
    """
    tag = f"_{tag.upper()}" if tag else ""
    def f(row, key, fmt, suffix=""):
        return format(row[key], fmt) + suffix if key in row else "-"

    out = []
    for arch in result["archs"]:
        out += [f"<!-- RUNTIMES_{arch['arch'].upper()}{tag} -->",
                "| batch | runtime | precision | predict s/object | network s/object | predict / network "
                "| vs dextr 0.1.2 | peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
        for r in arch["rows"]:
            runtime = "`dextr` 0.1.2" if r["runtime"] == "reference" else r["runtime"]
            out.append(f"| {r['batch_size']} | {runtime} | {r['precision']} | {f(r, 'predict_s_per_object', '.3f')} "
                       f"| {f(r, 'network_s_per_object', '.3f')} | {f(r, 'predict_over_network', '.2f')} "
                       f"| {f(r, 'speedup_vs_dextr012', '.2f', 'x')} | {f(r, 'peak_rss_mib', '.0f')} |")
        out += [f"<!-- /RUNTIMES_{arch['arch'].upper()}{tag} -->", ""]
    if "mask_agreement" in result:
        out += [f"<!-- AGREEMENT{tag} -->", "| variant | min IoU vs fp32 | mean IoU vs fp32 |", "|---|---|---|"]
        out += [f"| {name} | {v['min_iou_vs_fp32']:.3f} | {v['mean_iou_vs_fp32']:.3f} |"
                for name, v in result["mask_agreement"].items() if isinstance(v, dict) and "min_iou_vs_fp32" in v]
        out += [f"<!-- /AGREEMENT{tag} -->"]
    return "\n".join(out).rstrip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["resunet18", "resunet101"])
    ap.add_argument("--target-size", type=int, default=512)
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=16, help="int8 calibration objects")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16 variants")
    ap.add_argument("--no-rss", dest="rss", action="store_false", help="skip the peak-RSS processes")
    ap.add_argument("--ref-src", help="folder holding the dextr 0.1.2 package's dextr/ source")
    ap.add_argument("--trained", type=Path, help="a trained checkpoint for the int8/bf16 mask agreement")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--table", type=Path, help="print benchmarks/README.md's tables of this JSON and exit")
    ap.add_argument("--tag", default="", help="with --table: a suffix for the tables' marker comments")
    ap.add_argument("--note", default="", help="how the machine was (idle, shared...), kept in the JSON")
    ap.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return rss_child(args)
    if args.table:
        return print(markdown(json.loads(args.table.read_text()), args.tag))
    result = {"machine": machine(), "versions": versions(), "target_size": args.target_size,
              "note": args.note, "method": "variants and the package alternate within each round, "
                                           "medians over rounds", "archs": []}
    print(json.dumps(result["machine"]), flush=True)
    if args.trained:
        print(f"mask agreement on {args.trained} ...", flush=True)
        result["mask_agreement"] = mask_agreement(args.trained, 24)
    with tempfile.TemporaryDirectory(prefix="dextr-bench-") as tmp:
        for arch in args.arch:
            result["archs"].append(bench_arch(args, arch, Path(tmp)))
            if args.json:
                args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
