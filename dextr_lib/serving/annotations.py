"""The annotations file of a serving session: a COCO instances file written after every change.

Everything COCO (RLE, boxes, ``extreme_points`` order, atomic writes) is :mod:`dextr_lib.formats.coco`'s;
this module maps the server's image ids to COCO images and keeps one server per file.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from fastapi import HTTPException
from filelock import FileLock, Timeout

from ..errors import DatasetError
from ..formats.coco import (
    CLICK_FIELDS, CocoFile, annotation_from_mask, clicks_from_coco, extreme_points_from_coco,
)
from ..utils.fileio import os_error_cause

#: Top-level entry of the file where the server keeps the highest annotation id it ever gave, so
#: a deleted object's id is never given again, also after a restart (other tools ignore it).
SERVER_ENTRY = "dextr"
#: Image entry field holding an uploaded photo's SHA-256: the same photo uploaded again (in this
#: session or a later one) is the same COCO image.
CONTENT_FIELD = "dextr_sha256"


class AnnotationStore:
    """A COCO instances file that the server edits.

    An existing file is continued (its images, categories and annotations are kept); a new one
    is created at the first accepted object. Each change is saved at once, atomically, so a
    killed server or browser loses nothing already accepted; a save that fails (full disk,
    permissions) leaves memory as the file is and answers 503. A lock file (``FILE.lock``, beside
    the real file when ``path`` is a symlink, which stays one) keeps a second server from editing
    the same file. Annotation ids are never given twice, also after a delete and a restart.

    Args:
        path: the JSON file.
        classes: category names to create up front (ids 1..N in this order, for a new file).
    """

    def __init__(self, path: Path, classes: Sequence[str] = ()):
        self.path = Path(path)
        self._real = Path(os.path.realpath(self.path))  # saves write through a symlink
        self._lock = threading.RLock()
        self._file_lock = FileLock(str(self._real) + ".lock")
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
            self.coco = CocoFile.load(self._real) if self._real.exists() else CocoFile(path=self.path)
        except BaseException:
            self._file_lock.release()
            raise
        self.existed = self._real.exists()
        for name in classes:
            self.coco.category_id(name)
        entry = self.coco.extra.get(SERVER_ENTRY)
        given = entry.get("last_annotation_id") if isinstance(entry, dict) else None
        ids = [int(a["id"]) for a in self.coco.annotations]
        self._last_id = max(ids + ([given] if type(given) is int else []), default=0)

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

    def clicks_yx(self, ann: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
        """An annotation's positive and negative correction clicks, each ``(k, 2)`` ``[y, x]``."""
        pos, neg = (clicks_from_coco(ann.get(key), where=f"annotation {ann.get('id')}: {key!r}")
                    for key in CLICK_FIELDS)
        return pos, neg

    def mask(self, ann_id: int) -> np.ndarray:
        return self.coco.annotation_mask(ann_id)

    def upload_name(self, content_key: str, name: str, taken: Iterable[str] = ()) -> str:
        """The ``file_name`` of an uploaded photo: the one the file already gives this content,
        else ``name`` made unique (``bear-2.jpg``) among the file's images and ``taken``."""
        with self._lock:
            used = set(taken)
            for img in self.coco.images:
                if img.get(CONTENT_FIELD) == content_key:
                    return str(img["file_name"])
                used.add(str(img["file_name"]))
        stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{stem}-{n}{suffix}"
        return candidate

    def add(self, file_name: str, height: int, width: int, mask: np.ndarray,
            points_yx: np.ndarray, category: str, score: Optional[float],
            content_key: Optional[str] = None, positive: Optional[np.ndarray] = None,
            negative: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Store a new object and save the file; returns its annotation. ``content_key``: an
        uploaded photo's hash, kept in its image entry; ``positive``/``negative``: its correction
        clicks ``(k, 2)`` ``[y, x]`` (stored when there are any)."""
        with self._lock:
            before = self.coco.to_dict()
            extra = {CONTENT_FIELD: content_key} if content_key is not None else {}
            iid = self.coco.add_image(file_name, height=height, width=width, **extra)
            self._last_id += 1
            ann = annotation_from_mask(mask, ann_id=self._last_id, image_id=iid,
                                       category_id=self.coco.category_id(category),
                                       points_yx=points_yx, score=score,
                                       **_stored_clicks(positive, negative))
            aid = self.coco.add_annotation(ann)
            self.coco.extra[SERVER_ENTRY] = {"last_annotation_id": self._last_id}
            self._save(before)
            return self.coco.annotation(aid)

    def replace(self, ann_id: int, *, mask: Optional[np.ndarray] = None,
                points_yx: Optional[np.ndarray] = None, category: Optional[str] = None,
                score: Optional[float] = None, positive: Optional[np.ndarray] = None,
                negative: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Change an object's mask (with its points, clicks and score) and/or its category; save."""
        with self._lock:
            before = self.coco.to_dict()
            old = self.coco.annotation(ann_id)
            cid = self.coco.category_id(category) if category is not None else old["category_id"]
            if mask is not None:
                new = annotation_from_mask(mask, ann_id=ann_id, image_id=old["image_id"],
                                           category_id=cid, points_yx=points_yx, score=score,
                                           **_stored_clicks(positive, negative))
            else:
                new = {**old, "category_id": cid}
            self.coco.replace_annotation(ann_id, new)
            self._save(before)
            return self.coco.annotation(ann_id)

    def remove(self, ann_id: int) -> Dict[str, Any]:
        with self._lock:
            before = self.coco.to_dict()
            ann = self.coco.remove_annotation(ann_id)
            self._save(before)
            return ann

    def to_dict(self) -> Dict[str, Any]:
        return self.coco.to_dict()

    def _save(self, before: Dict[str, Any]) -> None:
        """Write the file; when that fails, go back to ``before`` (what the file still holds).

        Raises:
            HTTPException: 503 naming the file and the cause.
        """
        try:
            self.coco.save(self._real)
        except OSError as e:
            self.coco = CocoFile(before, path=self.path)
            cause = os_error_cause(e.__cause__ if isinstance(e.__cause__, OSError) else e)
            raise HTTPException(503, f"cannot save the annotations file {self.path}: {cause}; "
                                     "nothing was changed (fix that and try again)") from None


def _stored_clicks(positive: Optional[np.ndarray], negative: Optional[np.ndarray]) -> Dict[str, Any]:
    """``annotation_from_mask``'s click arguments: only kinds with clicks (files stay as before
    for objects made from the four points alone)."""
    return {key: clicks for key, clicks in (("positive_yx", positive), ("negative_yx", negative))
            if clicks is not None and len(clicks)}
