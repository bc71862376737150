"""Object datasets: every object (a connected region of a label, or a whole label) of a set of
images, indexed once and cached.

Coordinates: boxes are ``(y0, x0, y1, x1)`` inclusive pixel indices. Masks are ``(H, W)`` bool.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.images import read_image as _read_rgb
from ..errors import DatasetError
from ..formats.targets import connected_regions, read_label_file, read_mask
from ..utils import paths
from ..utils.fileio import atomic_write_text

ProgressFn = Optional[Callable[[int, int], None]]
WarningFn = Optional[Callable[[str], None]]

#: Bumped whenever the cached index layout or the indexing rules change.
INDEX_VERSION = 1

@dataclass(frozen=True)
class ObjectRecord:
    """One object of a dataset.

    Attributes:
        image: image file path.
        target: the file holding its mask (label image, mask file or SBD ``.mat``).
        label: its value in the target (for mask stacks: the mask's 1-based position in the stack).
        region: 1-based connected-region number within the label (8-connectivity, raster order),
            or 0 when the whole label is the object.
        class_id, class_name: semantic class where the dataset has one (VOC, SBD), else None.
        area: pixel count.
        box: ``(y0, x0, y1, x1)`` inclusive bounds of its pixels.
    """

    image: str
    target: str
    label: int
    region: int
    class_id: Optional[int]
    class_name: Optional[str]
    area: int
    box: Tuple[int, int, int, int]


#: ObjectRecord's field names (the cache stores records as flat dicts; asdict() is slow).
_RECORD_FIELDS = tuple(f.name for f in fields(ObjectRecord))


class ImageTargets:
    """The decoded targets of one image; object masks are cut from them on demand."""

    def __init__(self, labels: Dict[str, np.ndarray], ignore: Optional[np.ndarray]):
        self._labels = labels  # target path -> (H, W) integer label array
        self._regions: Dict[Tuple[str, int], np.ndarray] = {}
        #: ``(H, W)`` bool mask of pixels to leave out of losses and metrics, or None.
        self.ignore = ignore

    @property
    def shape(self) -> Tuple[int, int]:
        return next(iter(self._labels.values())).shape[:2]

    def object_mask(self, record: ObjectRecord) -> np.ndarray:
        """``(H, W)`` bool mask of ``record``."""
        try:
            label = self._labels[record.target]
        except KeyError:
            raise DatasetError(f"{record.target} is not a target of {record.image}") from None
        mask = label == record.label
        if record.region == 0:
            return mask
        key = (record.target, record.label)
        if key not in self._regions:
            self._regions[key] = connected_regions(mask)
        return self._regions[key] == record.region


class ObjectDataset:
    """Objects of a set of images, plus readers for their images and targets.

    Attributes:
        kind: ``"pascal_voc"``, ``"custom_label"`` or ``"custom_mask"``.
        objects: the :class:`ObjectRecord` list (grouped by image, images in a stable order).
        targets: image path -> its target files (pascal_voc: its SegmentationObject file, then
            its SegmentationClass file, whose void pixels are ignored too).
        ignore_index: label value excluded from losses and metrics (label datasets), or None.
        from_cache: whether the index was read from the cache.
        spec: how it was described (``image_pat``, ``target_pat``, ``split``), for reports.
    """

    def __init__(
        self,
        kind: str,
        objects: Sequence[ObjectRecord],
        targets: Dict[str, List[str]],
        ignore_index: Optional[int] = None,
        from_cache: bool = False,
        spec: Optional[Dict[str, Any]] = None,
    ):
        self.kind = kind
        self.objects = list(objects)
        self.targets = dict(targets)
        self.ignore_index = ignore_index
        self.from_cache = from_cache
        self.spec = dict(spec or {})

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, i: int) -> ObjectRecord:
        return self.objects[i]

    def __repr__(self) -> str:
        return f"ObjectDataset(kind={self.kind!r}, images={len(self.targets)}, objects={len(self)})"

    def image_groups(self) -> List[Tuple[str, List[int]]]:
        """``(image path, indices of its objects)`` in the order of :attr:`objects`."""
        groups: "OrderedDict[str, List[int]]" = OrderedDict()
        for i, rec in enumerate(self.objects):
            groups.setdefault(rec.image, []).append(i)
        return list(groups.items())

    def read_image(self, image_path: str) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB, pixels as stored (no EXIF rotation: labels match the raw pixels)."""
        return _read_rgb(image_path, exif_transpose=False)

    def read_targets(self, image_path: str) -> ImageTargets:
        """Decode the targets of one image (once; cut object masks from the result)."""
        files = self.targets.get(image_path)
        if not files:
            raise DatasetError(f"{image_path} is not an image of this dataset")
        labels: Dict[str, np.ndarray] = {}
        ignore = None
        if self.kind == "custom_mask":
            for k, path in enumerate(files, start=1):
                labels[path] = read_mask(path).astype(np.int32) * k
        else:
            # pascal_voc lists [SegmentationObject, SegmentationClass]: both mark void pixels.
            for n, path in enumerate(files):
                label = read_label_file(path)
                if n == 0 or self.kind != "pascal_voc":
                    labels[path] = label
                if self.ignore_index is not None:
                    ign = label == self.ignore_index
                    if ign.any():
                        ignore = ign if ignore is None else (ignore | ign)
        shapes = {a.shape for a in labels.values()}
        if len(shapes) > 1:
            raise DatasetError(f"the targets of {image_path} differ in size: {sorted(shapes)}")
        return ImageTargets(labels, ignore)


# -- indexing ----------------------------------------------------------------------------------
def objects_in_label(
    label: np.ndarray,
    values: Optional[Sequence[int]] = None,
    *,
    exclude: Sequence[int] = (0,),
    min_object_area: int = 0,
    whole_labels: bool = False,
) -> List[Tuple[int, int, int, Tuple[int, int, int, int]]]:
    """``(label, region, area, box)`` of the objects in a label array.

    Args:
        label: ``(H, W)`` integer labels.
        values: labels to index (default: all present except ``exclude``).
        exclude: values that are never objects (background, ignore index).
        min_object_area: skip objects with fewer pixels.
        whole_labels: one object per label instead of one per connected region.
    """
    from skimage.measure import regionprops

    if values is None:
        values = [int(v) for v in np.unique(label) if int(v) not in set(exclude)]
    out = []
    for v in values:
        mask = label == v
        if whole_labels:
            ys, xs = np.nonzero(mask)
            if len(ys) == 0 or len(ys) < min_object_area:
                continue
            out.append((v, 0, int(len(ys)), (int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max()))))
            continue
        for reg in regionprops(connected_regions(mask)):
            if reg.area < max(min_object_area, 1):
                continue
            r0, c0, r1, c1 = reg.bbox
            out.append((v, int(reg.label), int(reg.area), (int(r0), int(c0), int(r1) - 1, int(c1) - 1)))
    return out


def default_cache_dir() -> Path:
    """Where dataset indexes are cached: ``paths.user_dir("datasets")``."""
    return paths.user_dir(paths.DATASETS)


def _file_sig(path: str) -> List:
    st = os.stat(path)
    return [path, st.st_mtime_ns, st.st_size]


def index_key(kind: str, settings: Dict, files: Sequence[str]) -> str:
    """Cache key: the kind, the indexing settings, and every file's path, mtime and size."""
    payload = json.dumps(
        {"version": INDEX_VERSION, "kind": kind, "settings": settings,
         "files": [_file_sig(f) for f in files]},
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


def load_cached_index(cache_dir: Optional[Path], kind: str, key: str):
    """``(targets, objects, shown)`` from the cache, or None; ``shown`` lists the warnings already
    given for this index (see :func:`save_cached_index`)."""
    if cache_dir is None:
        return None
    path = Path(cache_dir) / f"{kind}-{key}.json"
    try:
        data = json.loads(path.read_text())
        if data.get("version") != INDEX_VERSION or data.get("key") != key:
            return None
        objects = [ObjectRecord(**{**o, "box": tuple(o["box"])}) for o in data["objects"]]
        return data["targets"], objects, list(data.get("shown", []))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no cache, or a damaged one: rebuild


def save_cached_index(cache_dir: Optional[Path], kind: str, key: str, targets, objects,
                      shown: Sequence[str] = ()) -> None:
    """Write the index atomically; a cache that cannot be written is not an error.

    ``shown``: warnings given while building it that later runs need not repeat (they are
    repeated when their text changes, e.g. when other files go unmatched).
    """
    if cache_dir is None:
        return
    cache_dir = Path(cache_dir)
    data = {"version": INDEX_VERSION, "key": key, "targets": targets,
            "objects": [{f: getattr(o, f) for f in _RECORD_FIELDS} for o in objects],
            "shown": list(shown)}
    try:
        atomic_write_text(cache_dir / f"{kind}-{key}.json", json.dumps(data))
    except OSError:
        pass


def report(on_warning: WarningFn, message: str) -> None:
    """Send a dataset warning to the callback, else to :mod:`warnings`."""
    if on_warning is not None:
        on_warning(message)
    else:
        warnings.warn(message, stacklevel=3)
