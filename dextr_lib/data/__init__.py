"""Datasets of objects for training and evaluating DEXTR.

Three kinds, built with :func:`build_dataset`:

- ``custom_label``: each image has one label image (palette PNG indices, 8-bit grayscale, or
  16/32-bit integers; 0 is background, ``ignore_index`` pixels are left out).
- ``custom_mask``: each image has a stack of binary masks (``img0_mask0.png``, ``img0_mask1.png``...).

Label images and masks are read by :mod:`dextr_lib.formats.targets` (its rules: what a label value is,
which mask pixels are object, which photo a target belongs to).
- ``pascal_voc``: VOC 2012 ``SegmentationObject`` instances with their ``SegmentationClass``
  classes; with ``sbd_root``, the ``train`` split adds SBD (VOC val images excluded).
- ``coco``: the annotations of a COCO instances file (``annotations``, ``images_dir``;
  :mod:`dextr_lib.data.coco`): crowd regions are ignored, classes are COCO categories.

Each connected region of a label is one object (``whole_labels=True``: one object per label).
The object index is built once and cached in a JSON file keyed by every file's path, mtime and
size plus the settings, so later runs start at once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from ..config import DATASET_KINDS as KINDS
from ..errors import DatasetError
from ..formats.targets import read_label_image, read_mask, read_sbd_instances
from . import voc
from .base import (
    ImageTargets, ObjectDataset, ObjectRecord, default_cache_dir, index_key, load_cached_index, objects_in_label,
    report, save_cached_index,
)
from .coco import CocoDataset, build_coco_dataset
from .pairing import PatternLike, as_pattern_list, describe_unmatched, expand_patterns, pair_files
from .voc import VOC_CLASSES

__all__ = [
    "KINDS", "VOC_CLASSES", "CocoDataset", "ImageTargets", "ObjectDataset", "ObjectRecord", "build_dataset",
    "expand_patterns", "pair_files",
]


def build_dataset(
    kind: str,
    image_pat: PatternLike = None,
    target_pat: PatternLike = None,
    split: str = "train",
    pascal_voc_root: Optional[str] = None,
    sbd_root: Optional[str] = None,
    ignore_index: Optional[int] = 255,
    min_object_area: int = 0,
    whole_labels: bool = False,
    cache_dir: Optional[str] = None,
    on_progress: Optional[Callable[[int, int], None]] = None,
    on_warning: Optional[Callable[[str], None]] = None,
    use_cache: bool = True,
    annotations: Optional[str] = None,
    images_dir: Optional[str] = None,
    categories: Optional[List[str]] = None,
    points_from: str = "annotations",
) -> ObjectDataset:
    """Build (or read from the cache) the object index of a dataset.

    Args:
        kind: ``"pascal_voc"``, ``"custom_label"`` or ``"custom_mask"``.
        image_pat, target_pat: custom kinds: glob pattern(s) of images and of label images / masks
            (a list unites several patterns; ``@FILE`` reads patterns from a text file).
        split: pascal_voc: ``"train"``, ``"val"`` (``ImageSets/Segmentation/<split>.txt``).
        pascal_voc_root: the VOC2012 folder. sbd_root: SBD's ``dataset`` folder (train split only).
        ignore_index: label value that is neither object nor background (None: none).
        min_object_area: objects with fewer pixels are skipped.
        whole_labels: one object per label value instead of one per connected region.
        cache_dir: index cache folder (default ``$DEXTR_HOME/datasets`` or the user cache).
        on_progress: ``(done, total)`` while images are indexed.
        on_warning: receives messages about unmatched images/targets (default: ``warnings``).
        use_cache: read and write the index cache.
        annotations, images_dir: coco: the instances JSON file and the folder its ``file_name``
            entries are relative to (default: the JSON file's folder).
        categories: coco: keep only these category names.
        points_from: coco: ``"annotations"`` (stored ``extreme_points`` are the evaluation
            clicks where present) or ``"masks"``.

    Raises:
        DatasetError: unknown kind, missing files, no image/target match, or no object at all.
    """
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of: {', '.join(KINDS)}")
    if min_object_area < 0:
        raise DatasetError(f"min_object_area must be >= 0, got {min_object_area}")
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    if kind == "coco":
        if annotations is None:
            raise DatasetError("the coco dataset needs its instances file (annotations=...)")
        return build_coco_dataset(
            annotations, images_dir, categories=categories, min_object_area=min_object_area,
            points_from=points_from, cache_dir=cache, on_progress=on_progress, on_warning=on_warning,
        )
    settings = {"ignore_index": ignore_index, "min_object_area": int(min_object_area),
                "whole_labels": bool(whole_labels)}
    once: List[str] = []  # warnings given once per index (not again when it comes from the cache)
    if kind == "pascal_voc":
        entries, key_files, desc = _voc_entries(split, pascal_voc_root, sbd_root)
        settings["split"] = split
    else:
        entries, key_files, desc, once = _custom_entries(kind, image_pat, target_pat, on_warning)
    targets = {img: tgts + ([extra] if extra else []) for img, tgts, extra in entries}
    spec = {"image_pat": as_pattern_list(image_pat) or None, "target_pat": as_pattern_list(target_pat) or None,
            "split": split if kind == "pascal_voc" else None}
    key = index_key(kind, settings, key_files)
    cached = load_cached_index(cache, kind, key)
    if cached is not None:
        _, objects, shown = cached
        new = [m for m in once if m not in shown]
        for message in new:
            report(on_warning, message)
        if new:
            save_cached_index(cache, kind, key, targets, objects, shown=shown + new)
        ds = ObjectDataset(kind, objects, targets, _ignore(kind, ignore_index), from_cache=True,
                           spec=spec)
    else:
        for message in once:
            report(on_warning, message)
        objects = []
        for n, (img, tgts, extra) in enumerate(entries, start=1):
            objects.extend(_index_image(kind, img, tgts, extra, settings))
            if on_progress is not None:
                on_progress(n, len(entries))
        save_cached_index(cache, kind, key, targets, objects, shown=once)
        ds = ObjectDataset(kind, objects, targets, _ignore(kind, ignore_index), spec=spec)
    if not ds.objects:
        raise DatasetError(
            f"{desc}: no objects found (min_object_area={min_object_area}); check the targets"
        )
    return ds


def _ignore(kind: str, ignore_index: Optional[int]) -> Optional[int]:
    return None if kind == "custom_mask" else ignore_index


def _custom_entries(kind, image_pat, target_pat, on_warning):
    if not as_pattern_list(image_pat) or not as_pattern_list(target_pat):
        raise DatasetError(f"dataset kind {kind!r} needs both an image pattern and a target pattern")
    images = expand_patterns(image_pat, "images")
    targets = expand_patterns(target_pat, "targets")
    pairs, lone_images, lone_targets = pair_files(images, targets)
    desc = f"images {_pats(image_pat)} / targets {_pats(target_pat)}"
    if not pairs:
        raise DatasetError(
            f"no image matches a target: {len(images)} images from {_pats(image_pat)}, "
            f"{len(targets)} targets from {_pats(target_pat)}; a target's file stem must start "
            "with its image's stem (img0.jpg <-> img0.png, img0_mask0.png)"
        )
    if lone_images:
        report(on_warning, describe_unmatched("images have no target and are skipped", lone_images))
    once = []
    if lone_targets:  # usual when one target folder serves several splits: say so, in proportion, once
        once.append(describe_unmatched(
            f"of {len(targets)} targets match none of the {len(images)} images and are skipped (expected "
            "when the target pattern also covers other splits; said once for these files)", lone_targets))
    if kind == "custom_label":
        multi = [(img, t) for img, t in pairs.items() if len(t) > 1]
        if multi:
            img, t = multi[0]
            raise DatasetError(
                f"{len(multi)} images have several label images (e.g. {os.path.basename(img)}: "
                f"{', '.join(os.path.basename(x) for x in t[:3])}); custom_label needs one label "
                "image per image (use custom_mask for one mask per object, or narrow --target-pat)"
            )
    entries = [(img, tgts, None) for img, tgts in pairs.items()]
    key_files = [f for img, tgts in pairs.items() for f in [img] + tgts]
    return entries, key_files, desc, once


def _voc_entries(split, pascal_voc_root, sbd_root):
    if pascal_voc_root is None:
        raise DatasetError(
            "the pascal_voc dataset needs the VOC2012 folder: set [paths] pascal_voc in the config "
            "file (it holds JPEGImages/, SegmentationObject/, ImageSets/)"
        )
    root = Path(pascal_voc_root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"pascal_voc folder not found: {root}")
    files = voc.voc_files(root, split)
    entries = [(img, [obj], cls) for img, obj, cls in files]
    if sbd_root is not None and split == "train":
        sroot = Path(sbd_root).expanduser()
        if not sroot.is_dir():
            raise DatasetError(f"sbd folder not found: {sroot}")
        exclude = {Path(img).stem for img, _, _ in entries}
        exclude |= set(voc.read_split(root, root / "ImageSets" / "Segmentation" / "val.txt", "pascal_voc"))
        entries += [(img, [inst], None) for img, inst in voc.sbd_files(sroot, exclude)]
    key_files = [f for img, tgts, cls in entries for f in [tgts[0]] + ([cls] if cls else [])]
    return entries, key_files, f"pascal_voc {split} in {root}"


def _index_image(kind, image, targets, extra, settings) -> List[ObjectRecord]:
    """Records of one image's objects (reads only its targets, never the image)."""
    ign = settings["ignore_index"]
    opts = dict(min_object_area=settings["min_object_area"], whole_labels=settings["whole_labels"])
    out = []
    if kind == "custom_mask":
        for k, path in enumerate(targets, start=1):
            label = read_mask(path).astype(np.int32) * k
            for lab, reg, area, box in objects_in_label(label, [k], **opts):
                out.append(ObjectRecord(image, path, lab, reg, None, None, area, box))
        return out
    path = targets[0]
    if path.lower().endswith(".mat"):
        label, cats = read_sbd_instances(path)
        class_of = {i + 1: c for i, c in enumerate(cats)}
    else:
        label = read_label_image(path)
        class_of = None
        if extra is not None:
            class_map = read_label_image(extra)
            class_of = {int(v): voc.voc_class_of(class_map, label == v, ign)
                        for v in np.unique(label) if v not in (0, ign)}
    exclude = (0,) if ign is None else (0, ign)
    for lab, reg, area, box in objects_in_label(label, exclude=exclude, **opts):
        cid = class_of.get(lab) if class_of is not None else None
        name = voc.class_name(cid) if kind == "pascal_voc" else None
        out.append(ObjectRecord(image, path, lab, reg, cid, name, area, box))
    return out


def _pats(p: PatternLike) -> str:
    return " + ".join(repr(x) for x in as_pattern_list(p))
