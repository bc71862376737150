"""The annotations file of a serving session: a COCO instances file written after every change.

Everything COCO (RLE, boxes, ``extreme_points`` order, atomic writes) is :mod:`dextr_lib.formats.coco`'s;
this module maps the server's image ids to COCO images and keeps one server per file.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from filelock import FileLock, Timeout

from ..errors import DatasetError
from ..formats.coco import CocoFile, annotation_from_mask, extreme_points_from_coco


class AnnotationStore:
    """A COCO instances file that the server edits.

    An existing file is continued (its images, categories and annotations are kept); a new one
    is created at the first accepted object. Each change is saved at once, atomically, so a
    killed server or browser loses nothing already accepted. A lock file (``FILE.lock``) keeps
    a second server from editing the same file.

    Args:
        path: the JSON file.
        classes: category names to create up front (ids 1..N in this order, for a new file).
    """

    def __init__(self, path: Path, classes: Sequence[str] = ()):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._file_lock = FileLock(str(self.path) + ".lock")
        try:
            self._file_lock.acquire(timeout=0)
        except Timeout:
            raise DatasetError(
                f"{self.path} is being edited by another dextr serve (lock file "
                f"{self.path}.lock); stop that server or use another --annotations file"
            ) from None
        except OSError as e:
            raise DatasetError(f"cannot lock {self.path}: {e}") from None
        try:
            self.coco = CocoFile.load(self.path) if self.path.exists() else CocoFile(path=self.path)
        except BaseException:
            self._file_lock.release()
            raise
        self.existed = self.path.exists()
        for name in classes:
            self.coco.category_id(name)

    def close(self) -> None:
        """Let another server edit the file (idempotent)."""
        if self._file_lock.is_locked:
            self._file_lock.release()

    @property
    def classes(self) -> List[str]:
        return list(self.coco.categories.values())

    def counts(self) -> Dict[str, int]:
        """Objects per image ``file_name``."""
        with self._lock:
            return {img["file_name"]: len(self.coco.annotations_of(img["id"]))
                    for img in self.coco.images}

    def objects(self, file_name: str) -> List[Dict[str, Any]]:
        """The annotations of one image (COCO dicts), in file order."""
        with self._lock:
            iid = self.coco.image_id(file_name)
            return [] if iid is None else self.coco.annotations_of(iid)

    def annotation(self, ann_id: int) -> Dict[str, Any]:
        return self.coco.annotation(ann_id)

    def file_name_of(self, ann: Dict[str, Any]) -> str:
        return str(self.coco.image(ann["image_id"])["file_name"])

    def image_size(self, ann: Dict[str, Any]):
        """``(height, width)`` of an annotation's image."""
        img = self.coco.image(ann["image_id"])
        return int(img["height"]), int(img["width"])

    def category_name(self, category_id: int) -> str:
        return self.coco.categories.get(int(category_id), str(category_id))

    def points_yx(self, ann: Dict[str, Any]) -> Optional[np.ndarray]:
        """An annotation's extreme points as dextr's ``(4, 2)`` ``[y, x]`` (None if absent)."""
        if "extreme_points" not in ann:
            return None
        return extreme_points_from_coco(ann["extreme_points"], where=f"annotation {ann.get('id')}")

    def mask(self, ann_id: int) -> np.ndarray:
        return self.coco.annotation_mask(ann_id)

    def add(self, file_name: str, height: int, width: int, mask: np.ndarray,
            points_yx: np.ndarray, category: str, score: Optional[float]) -> Dict[str, Any]:
        """Store a new object and save the file; returns its annotation."""
        with self._lock:
            iid = self.coco.add_image(file_name, height=height, width=width)
            ann = annotation_from_mask(mask, ann_id=None, image_id=iid,
                                       category_id=self.coco.category_id(category),
                                       points_yx=points_yx, score=score)
            aid = self.coco.add_annotation(ann)
            self._save()
            return self.coco.annotation(aid)

    def replace(self, ann_id: int, *, mask: Optional[np.ndarray] = None,
                points_yx: Optional[np.ndarray] = None, category: Optional[str] = None,
                score: Optional[float] = None) -> Dict[str, Any]:
        """Change an object's mask (with its points and score) and/or its category; save."""
        with self._lock:
            old = self.coco.annotation(ann_id)
            cid = self.coco.category_id(category) if category is not None else old["category_id"]
            if mask is not None:
                new = annotation_from_mask(mask, ann_id=ann_id, image_id=old["image_id"],
                                           category_id=cid, points_yx=points_yx, score=score)
            else:
                new = {**old, "category_id": cid}
            self.coco.replace_annotation(ann_id, new)
            self._save()
            return self.coco.annotation(ann_id)

    def remove(self, ann_id: int) -> Dict[str, Any]:
        with self._lock:
            ann = self.coco.remove_annotation(ann_id)
            self._save()
            return ann

    def to_dict(self) -> Dict[str, Any]:
        return self.coco.to_dict()

    def _save(self) -> None:
        try:
            self.coco.save(self.path)
        except OSError as e:
            raise DatasetError(f"cannot write the annotations file {self.path}: "
                               f"{e.strerror or e}") from None
