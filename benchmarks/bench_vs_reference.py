"""Side-by-side ``predict`` timing: dextr_lib versus the ``dextr`` 0.1.2 package, same machine,
same objects, same network (resunet101, random weights; timings do not depend on them).

The package is imported from its unpacked source (``pip download --no-deps dextr==0.1.2`` and
unzip; pass the folder holding ``dextr/``) with the shims in ``tests/helpers/compare_dextr012.py``;
it is never a dependency.

    python benchmarks/bench_vs_reference.py --ref-src /path/to/unpacked --objects 16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "helpers"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_predict import load_objects  # noqa: E402
from compare_dextr012 import import_reference  # noqa: E402

import dextr_lib  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-src", required=True, help="folder that holds the package's dextr/ source")
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--target-size", type=int, default=512)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    ref_model, ref_resunet = import_reference(args.ref_src)
    torch.manual_seed(0)
    with torch.no_grad():  # the package writes into a leaf parameter in place
        ref_net = ref_resunet.dextr_resunet101()
    ref = ref_model.DextrModel(ref_net, (args.target_size,) * 2, 10, 10.0)
    ref.eval()
    ours = dextr_lib.create_model("resunet101", target_size=args.target_size)
    ours.net.load_state_dict({k: v for k, v in ref_net.state_dict().items() if not k.startswith("base_model.fc.")})

    pairs, source = load_objects(args.objects)
    images = [p[0] for p in pairs]
    points = [np.asarray(p[1], dtype=float) for p in pairs]
    rows = {}
    for name, fn in [
        ("dextr 0.1.2 (batch 4, its default)", lambda: ref.predict(images, points)),
        ("dextr 0.1.2 (batch 1)", lambda: ref.predict(images, points, batch_size=1)),
        ("dextr_lib fp32 (batch 8)", lambda: ours.predict(images, points)),
        ("dextr_lib fp32 (batch 1)", lambda: ours.predict(images, points, batch_size=1)),
        ("dextr_lib bf16 (batch 8)", lambda: ours.predict(images, points, precision="bf16")),
    ]:
        fn() if not rows else None  # first call warms oneDNN for everyone
        t = time.perf_counter()
        fn()
        rows[name] = (time.perf_counter() - t) / len(images)
        print(f"{name:40s} {rows[name]:.3f} s/object", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"data": source, "objects": len(images), "s_per_object": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
