"""Matching an ``objects.json`` to a dataset's objects: the clicks ``dextr eval --points-from`` uses."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..formats.objects import ObjectsFile


class PointsMatcher:
    """Finds the points of dataset objects in a parsed ``objects.json``.

    A dataset object (anything with ``image``, ``target`` and ``label``, such as
    :class:`dextr_lib.data.ObjectRecord`) matches the file's object with the same photo,
    the same label file (``source``; an object without one matches by photo and label) and the
    same label value. Mask files hold one object each, so for ``custom_mask`` datasets the label
    is not compared (``points-from-mask`` writes none for masks). All paths are compared absolute.

    Args:
        points_file: from :func:`dextr_lib.formats.objects.read_objects`.
        objects: every object of the dataset (to see labels split into several regions).
        kind: the dataset kind (``"custom_mask"`` ignores labels).
    """

    def __init__(self, points_file: ObjectsFile, objects: Sequence[Any], kind: Optional[str]):
        self.kind = kind
        self._lookup: Dict[tuple, List[np.ndarray]] = {}
        for entry in points_file.images:
            if entry.image is None:
                continue
            img = os.path.abspath(entry.image)
            for o in entry.objects:
                src = None if o.source is None else os.path.abspath(o.source)
                self._lookup.setdefault((img, src, o.label), []).append(np.asarray(o.points, dtype=np.float64))
        self._counts: Dict[tuple, int] = {}
        for rec in objects:
            k = self._key(rec)
            self._counts[k] = self._counts.get(k, 0) + 1

    def _key(self, record: Any) -> tuple:
        label = None if self.kind == "custom_mask" else record.label
        return os.path.abspath(record.image), os.path.abspath(record.target), label

    def points_for(self, record: Any) -> "tuple[Optional[np.ndarray], str]":
        """``((4, 2) [y, x] points, "")`` for ``record``, or ``(None, reason)``."""
        img, _, label = key = self._key(record)
        if self._counts.get(key, 0) > 1:
            return None, ("the points file has one object per label but this label has several "
                          "regions in the dataset (build it with whole labels)")
        found = self._lookup.get(key) or self._lookup.get((img, None, label))
        if not found:
            return None, "no points for this object in the points file"
        if len(found) > 1:
            return None, "several objects of the points file match this object"
        return found[0], ""
