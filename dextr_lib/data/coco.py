"""The ``coco`` dataset kind: the objects of a COCO instances file (``instances.json`` + images).

* Every annotation with ``iscrowd`` 0 and at least one pixel is an object; its ``label`` is the
  annotation id, its ``target`` the instances file, its class the COCO category.
* ``iscrowd`` 1 regions are not objects: their pixels are ignored (left out of losses and
  metrics) wherever no non-crowd object of the image covers them, so an object's score is not
  hurt by a prediction spilling into an unlabelled crowd, and no object's own pixels are lost.
* Segmentations (polygons, uncompressed or compressed RLE) are decoded by :mod:`dextr_lib.formats.coco`
  (pycocotools), exactly as ``COCO.annToMask`` does; object areas are pixel counts.
* ``extreme_points`` (ExtremeNet's convention) are the clicks for evaluation when present and
  ``points_from="annotations"``; otherwise points come from the masks by the paper's rule.

Images must have the size their ``images`` entry states; their pixels are read as stored, or
EXIF-rotated where only that matches the stated size (:func:`dextr_lib.formats.coco.read_coco_image`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DatasetError
from ..formats import coco as coco_io
from .base import ImageTargets, ObjectDataset, ObjectRecord, index_key, load_cached_index, report, save_cached_index

#: Where the clicks of an annotated object come from.
POINT_SOURCES = ("annotations", "masks")


class CocoImageTargets(ImageTargets):
    """The annotations of one COCO image; object masks are decoded on demand (and kept)."""

    def __init__(self, height: int, width: int, segmentations: Dict[int, Any],
                 ignore: Optional[np.ndarray], where: str):
        super().__init__({}, ignore)
        self._size = (int(height), int(width))
        self._segmentations = segmentations  # annotation id -> segmentation
        self._masks: Dict[int, np.ndarray] = {}
        self._where = where

    @property
    def shape(self) -> Tuple[int, int]:
        return self._size

    def object_mask(self, record: ObjectRecord) -> np.ndarray:
        """``(H, W)`` bool mask of ``record`` (its ``label`` is the annotation id)."""
        return self.annotation_mask(record.label)

    def annotation_mask(self, ann_id: int) -> np.ndarray:
        """``(H, W)`` bool mask of a non-crowd annotation of this image."""
        mask = self._masks.get(ann_id)
        if mask is None:
            try:
                seg = self._segmentations[ann_id]
            except KeyError:
                raise DatasetError(f"{self._where}: annotation {ann_id} is not an object of this image") from None
            mask = coco_io.decode_segmentation(seg, *self._size, where=f"{self._where}: annotation {ann_id}")
            self._masks[ann_id] = mask
        return mask


class CocoDataset(ObjectDataset):
    """Objects of a COCO instances file (see the module docstring).

    Attributes (beyond :class:`ObjectDataset`'s):
        annotations: the instances file.
        categories: category id -> name, of the whole file.
        points_from: ``"annotations"`` or ``"masks"`` (see :meth:`annotated_points`).
    """

    def __init__(self, annotations: str, objects: Sequence[ObjectRecord], targets: Dict[str, List[str]],
                 images: Dict[str, Dict[str, Any]], categories: Dict[int, str],
                 points_from: str = "annotations", from_cache: bool = False):
        super().__init__("coco", objects, targets, ignore_index=None, from_cache=from_cache,
                         spec={"annotations": annotations, "points_from": points_from})
        self.annotations = annotations
        self.categories = dict(categories)
        self.points_from = points_from
        # image path -> {"height", "width", "anns": [(id, segmentation, iscrowd, extreme_points)]}
        self._images = images

    def read_image(self, image_path: str) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB on the pixel grid of its annotations
        (:func:`dextr_lib.formats.coco.read_coco_image`)."""
        info = self._images.get(image_path)
        if info is None:
            raise DatasetError(f"{image_path} is not an image of this dataset")
        return coco_io.read_coco_image(image_path, info["height"], info["width"])

    def read_targets(self, image_path: str) -> CocoImageTargets:
        """Decode the crowd regions of one image; object masks are decoded when asked for."""
        info = self._images.get(image_path)
        if info is None:
            raise DatasetError(f"{image_path} is not an image of this dataset")
        h, w = info["height"], info["width"]
        where = str(self.annotations)
        segs = {aid: seg for aid, seg, crowd, _ in info["anns"] if not crowd}
        targets = CocoImageTargets(h, w, segs, None, where)
        crowds = [(aid, seg) for aid, seg, crowd, _ in info["anns"] if crowd]
        if crowds:
            ignore = np.zeros((h, w), bool)
            for aid, seg in crowds:
                ignore |= coco_io.decode_segmentation(seg, h, w, where=f"{where}: annotation {aid}")
            # Pixels of real objects stay scored (decoded masks are kept for object_mask).
            for aid in segs:
                if not ignore.any():
                    break
                ignore &= ~targets.annotation_mask(aid)
            targets.ignore = ignore if ignore.any() else None
        return targets

    def annotated_points(self, record: ObjectRecord) -> Optional[np.ndarray]:
        """The object's ``(4, 2)`` ``[y, x]`` clicks (left, right, top, bottom) from its
        annotation's ``extreme_points``, or None (none stored, or ``points_from="masks"``)."""
        if self.points_from != "annotations":
            return None
        info = self._images.get(record.image)
        for aid, _, _, points in (info["anns"] if info else ()):
            if aid == record.label:
                if points is None:
                    return None
                return coco_io.extreme_points_from_coco(
                    points, where=f"{self.annotations}: annotation {aid} extreme_points")
        return None


def build_coco_dataset(
    annotations: str,
    images_dir: Optional[str] = None,
    *,
    categories: Optional[Sequence[str]] = None,
    min_object_area: int = 0,
    points_from: str = "annotations",
    cache_dir: Optional[Path] = None,
    on_progress: Optional[Callable[[int, int], None]] = None,
    on_warning: Optional[Callable[[str], None]] = None,
) -> CocoDataset:
    """Index the objects of a COCO instances file (or read the index from the cache).

    Args:
        annotations: the instances JSON file.
        images_dir: the folder that ``file_name`` entries are relative to (default: the JSON
            file's folder).
        categories: keep only objects of these category names (default: all).
        min_object_area: objects with fewer pixels are skipped.
        points_from: ``"annotations"`` (stored ``extreme_points`` where present) or ``"masks"``.
        cache_dir: index cache folder (None: no cache).
        on_progress: ``(done, total)`` annotations while indexing.
        on_warning: receives messages (images without objects are not reported).

    Raises:
        DatasetError: an unreadable or inconsistent file, an unknown category name, a missing
            image file (named), or no object at all.
    """
    if points_from not in POINT_SOURCES:
        raise DatasetError(f"points_from must be one of {', '.join(POINT_SOURCES)}, got {points_from!r}")
    ann_path = Path(annotations).expanduser()
    cf = coco_io.CocoFile.load(ann_path)
    root = cf.photos_root(images_dir)
    if images_dir is not None and not root.is_dir():
        raise DatasetError(f"COCO images folder not found: {root}")
    cat_names = cf.categories
    keep_cats = None
    if categories:
        by_name: Dict[str, List[int]] = {}
        for cid, name in cat_names.items():
            by_name.setdefault(name, []).append(cid)
        unknown = [c for c in categories if c not in by_name]
        if unknown:
            raise DatasetError(
                f"unknown COCO categor{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(repr(c) for c in unknown)} in {ann_path}; it has: "
                f"{', '.join(sorted(by_name))}"
            )
        keep_cats = {cid for c in categories for cid in by_name[c]}

    images: Dict[str, Dict[str, Any]] = {}
    path_of: Dict[int, str] = {}
    for img in cf.images:
        path = str(root / str(img["file_name"]))
        path_of[int(img["id"])] = path
        images[path] = {"height": int(img["height"]), "width": int(img["width"]), "anns": []}
    for ann in cf.annotations:
        images[path_of[int(ann["image_id"])]]["anns"].append(
            (int(ann["id"]), ann.get("segmentation", []), bool(ann.get("iscrowd", 0)),
             ann.get("extreme_points")))

    settings = {"images_dir": str(root.resolve()), "categories": sorted(keep_cats) if keep_cats else None,
                "min_object_area": int(min_object_area)}
    key = index_key("coco", settings, [str(ann_path.resolve())])
    cached = load_cached_index(cache_dir, "coco", key)
    if cached is not None:
        targets, objects, _ = cached
        from_cache = True
    else:
        objects = _index(cf, path_of, keep_cats, int(min_object_area), str(ann_path), on_progress)
        targets = {}
        for rec in objects:
            targets.setdefault(rec.image, [str(ann_path)])
        save_cached_index(cache_dir, "coco", key, targets, objects)
        from_cache = False
    del cf
    if not objects:
        what = f" of categories {', '.join(categories)}" if categories else ""
        raise DatasetError(
            f"{ann_path}: no objects{what} (non-crowd annotations with at least "
            f"{max(int(min_object_area), 1)} pixels)"
        )
    missing = [p for p in targets if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(
            f"image file not found: {missing[0]}{more}; {ann_path} names it relative to "
            f"{root} (set the images folder with --images)"
        )
    ds = CocoDataset(str(ann_path), objects, targets, {p: images[p] for p in targets}, cat_names,
                     points_from=points_from, from_cache=from_cache)
    ds.spec.update(images=str(root), categories=list(categories) if categories else None)
    skipped = len(images) - len(targets)
    if skipped and on_warning is not None and keep_cats is None and min_object_area <= 0:
        report(on_warning, f"{skipped} images of {ann_path} have no objects and are skipped")
    return ds


def _index(cf, path_of, keep_cats, min_area, ann_path, on_progress) -> List[ObjectRecord]:
    """Object records, grouped by image in the file's image order (no image is read)."""
    cats = cf.categories
    by_image: Dict[int, List[ObjectRecord]] = {}
    anns = cf.annotations
    total = len(anns)
    step = max(total // 100, 1)
    for n, ann in enumerate(anns, start=1):
        if on_progress is not None and (n % step == 0 or n == total):
            on_progress(n, total)
        if ann.get("iscrowd", 0):
            continue
        cid = int(ann["category_id"])
        if keep_cats is not None and cid not in keep_cats:
            continue
        img = cf.image(ann["image_id"])
        area, (x, y, w, h) = coco_io.segmentation_area_bbox(
            ann.get("segmentation", []), img["height"], img["width"],
            where=f"{ann_path}: annotation {ann['id']}")
        if area < max(min_area, 1):
            continue
        box = (int(y), int(x), int(y + h) - 1, int(x + w) - 1)
        rec = ObjectRecord(path_of[int(img["id"])], ann_path, int(ann["id"]), 0, cid, cats[cid], area, box)
        by_image.setdefault(int(img["id"]), []).append(rec)
    return [rec for img in cf.images for rec in by_image.get(int(img["id"]), [])]
