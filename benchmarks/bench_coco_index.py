"""How long a large COCO instances file takes to index as a ``coco`` dataset (and from the cache).

Writes a synthetic file (default 100k annotations: COCO-like polygons of 16 vertices on 640x480
images, 5% crowd regions as uncompressed RLE, 20 images' worth of annotations per image folder
entry) into a temporary folder, then times ``build_dataset("coco", ...)`` without and with the
index cache, and ``CocoFile.load`` alone. Prints one JSON object (add ``--json FILE`` to save it):

    python benchmarks/bench_coco_index.py --annotations 100000
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from dextr_lib.data import build_dataset
from dextr_lib.formats.coco import CocoFile
from dextr_lib.inference.device import cpu_flags


def synthetic_file(folder: Path, n_annotations: int, per_image: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n_images = -(-n_annotations // per_image)
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "height": 480, "width": 640}
              for i in range(1, n_images + 1)]
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    anns = []
    for k in range(n_annotations):
        cx, cy = rng.uniform(40, 600), rng.uniform(40, 440)
        r = rng.uniform(5, 40) * rng.uniform(0.7, 1.3, size=16)
        poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).round(2).ravel().tolist()
        ann = {"id": k + 1, "image_id": k // per_image + 1, "category_id": int(rng.integers(1, 81)),
               "iscrowd": 0, "segmentation": [poly]}
        if rng.random() < 0.05:  # a crowd region, stored as COCO does: uncompressed RLE
            ann["iscrowd"] = 1
            ann["segmentation"] = {"size": [480, 640], "counts": [100000, 5000, 480 * 640 - 105000]}
        anns.append(ann)
    path = folder / "instances_synthetic.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 81)]}))
    for img in images:  # the dataset checks that image files exist (it never reads them here)
        (folder / img["file_name"]).touch()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotations", type=int, default=100_000)
    ap.add_argument("--per-image", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = synthetic_file(folder, args.annotations, args.per_image)
        t0 = time.perf_counter()
        CocoFile.load(path)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = build_dataset("coco", annotations=path, cache_dir=folder / "cache")
        t_index = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = build_dataset("coco", annotations=path, cache_dir=folder / "cache")
        t_cached = time.perf_counter() - t0
        assert cached.from_cache and len(cached) == len(ds)
        result = {
            "annotations": args.annotations, "objects": len(ds), "images": len(ds.image_groups()),
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "load_json_s": round(t_load, 2), "index_s": round(t_index, 2),
            "index_cached_s": round(t_cached, 2),
            "python": platform.python_version(), "machine": platform.machine(),
            "cpu_flags": cpu_flags(),
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
