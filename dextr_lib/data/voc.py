"""PASCAL VOC 2012 (``SegmentationObject`` instances) and SBD (``inst/*.mat``) file lists and classes.

Reading the target files themselves is :mod:`dextr_lib.formats.targets`'s job."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import DatasetError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def read_split(root: Path, names_file: Path, what: str) -> List[str]:
    """Image ids listed one per line in ``names_file``."""
    if not names_file.is_file():
        raise DatasetError(f"{what}: split file not found: {names_file} (is {root} the right folder?)")
    return [line.split()[0] for line in names_file.read_text().splitlines() if line.strip()]


def voc_files(root: Path, split: str) -> List[Tuple[str, str, str]]:
    """``(image, SegmentationObject png, SegmentationClass png)`` for each id of the split."""
    if split not in ("train", "val", "trainval"):
        raise DatasetError(f"pascal_voc split must be 'train', 'val' or 'trainval', got {split!r}")
    ids = read_split(root, root / "ImageSets" / "Segmentation" / f"{split}.txt", "pascal_voc")
    out = []
    for i in ids:
        files = (root / "JPEGImages" / f"{i}.jpg", root / "SegmentationObject" / f"{i}.png",
                 root / "SegmentationClass" / f"{i}.png")
        for f in files:
            if not f.is_file():
                raise DatasetError(f"pascal_voc: {f} is missing (listed in ImageSets/Segmentation/{split}.txt)")
        out.append(tuple(str(f) for f in files))
    return out


def sbd_files(root: Path, exclude_ids: set) -> List[Tuple[str, str]]:
    """``(image, inst .mat)`` for SBD train+val, minus ``exclude_ids`` (VOC val and VOC train)."""
    ids: List[str] = []
    for name in ("train.txt", "val.txt"):
        if (root / name).is_file():
            ids.extend(read_split(root, root / name, "sbd"))
    if not ids:
        raise DatasetError(f"sbd: no train.txt or val.txt in {root}; expected the SBD benchmark_RELEASE/dataset folder")
    out = []
    seen = set()
    for i in ids:
        if i in exclude_ids or i in seen:
            continue
        seen.add(i)
        img, inst = root / "img" / f"{i}.jpg", root / "inst" / f"{i}.mat"
        for f in (img, inst):
            if not f.is_file():
                raise DatasetError(f"sbd: {f} is missing (listed in the SBD split files)")
        out.append((str(img), str(inst)))
    return out


def voc_class_of(class_map: np.ndarray, instance: np.ndarray, ignore_index: Optional[int]) -> Optional[int]:
    """Majority VOC class under one instance's pixels (background and void excluded)."""
    vals = class_map[instance]
    vals = vals[(vals != 0) & (vals != (ignore_index if ignore_index is not None else -1))]
    if len(vals) == 0:
        return None
    return int(np.bincount(vals).argmax())


def class_name(class_id: Optional[int]) -> Optional[str]:
    if class_id is None or not 0 <= class_id < len(VOC_CLASSES):
        return None
    return VOC_CLASSES[class_id]
