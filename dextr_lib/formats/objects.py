"""The ``objects.json`` file: photos and the extreme points of their objects.

``objects.json`` (written by ``dextr points-from-mask``, read by ``dextr predict --points-file``)::

    {
      "format": "dextr-objects",
      "format_version": 2,
      "point_order": ["left", "right", "top", "bottom"],
      "exif_transpose": false,
      "images": [
        {
          "image": "images/FudanPed00001.png",      # the photo; null when none was found
          "height": 536, "width": 559,              # of the label image / photo
          "objects": [
            {"label": 1, "name": null, "source": "labels/FudanPed00001_mask.png",
             "area": 12345, "points_xy": [[x, y], [x, y], [x, y], [x, y]],
             "positive_xy": [[x, y]], "negative_xy": []}      # optional corrections
          ]
        }
      ]
    }

* ``points_xy`` are ``[x, y]`` = ``[column, row]`` pixel indices, as image viewers and the
  command line show them (the library's arrays are ``[y, x]``;
  :func:`dextr_lib.core.geometry.xy_to_yx` is the one place that converts). Jittered points are floats.
* ``positive_xy`` / ``negative_xy`` (optional, version 2): correction clicks after the extreme
  points, any number of ``[x, y]`` pairs each; a mask should include the positive ones and
  leave out the negative ones (:meth:`dextr_lib.DextrModel.predict`). Version 1 files (without
  them) are read as before.
* Relative paths are relative to the JSON file's folder (stdout output uses absolute paths).
* ``exif_transpose``: whether the points refer to the photo as image viewers show it (true,
  the default for hand-written files) or to the raw stored pixel grid, like annotation masks
  (false, written by ``points-from-mask``).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ..core.geometry import EXTREME_POINT_ORDER, as_points_array, xy_to_yx, yx_to_xy
from ..errors import DatasetError, InvalidPointsError
from ..utils.fileio import atomic_write_text, read_json
from ..utils.limits import check_objects

FORMAT = "dextr-objects"
FORMAT_VERSION = 2  # 2: optional positive_xy / negative_xy corrections per object
PathLike = Union[str, os.PathLike]


@dataclass
class ObjectEntry:
    """One object: ``points`` is a ``(4, 2)`` ``[y, x]`` array (left, right, top, bottom);
    ``positive`` and ``negative`` are its ``(k, 2)`` ``[y, x]`` correction clicks (``None``: none)."""

    points: np.ndarray
    label: Optional[int] = None
    name: Optional[str] = None
    source: Optional[str] = None
    area: Optional[int] = None
    positive: Optional[np.ndarray] = None
    negative: Optional[np.ndarray] = None


@dataclass
class ImageEntry:
    """One photo and its objects. ``image`` is None when no photo is known."""

    image: Optional[str]
    objects: List[ObjectEntry] = field(default_factory=list)
    height: Optional[int] = None
    width: Optional[int] = None


# -- objects.json ---------------------------------------------------------------------------------
def objects_to_dict(
    entries: Sequence[ImageEntry], *, relative_to: Optional[PathLike] = None, exif_transpose: bool = False
) -> Dict[str, Any]:
    """The JSON-ready dict of ``entries``. Paths become relative to ``relative_to`` (a folder)
    when given, else absolute."""

    def rel(p: Optional[str]) -> Optional[str]:
        if p is None:
            return None
        ap = os.path.abspath(p)
        if relative_to is None:
            return ap
        try:
            return Path(os.path.relpath(ap, os.path.abspath(relative_to))).as_posix()
        except ValueError:  # another drive on Windows
            return ap

    def num(v: float):
        v = float(v)
        return int(v) if v.is_integer() else round(v, 3)

    images = []
    for e in entries:
        objs = []
        for o in e.objects:
            pts = yx_to_xy(np.asarray(o.points, dtype=np.float64))
            obj = {
                "label": o.label, "name": o.name, "source": rel(o.source), "area": o.area,
                "points_xy": [[num(x), num(y)] for x, y in pts],
            }
            for key, clicks in (("positive_xy", o.positive), ("negative_xy", o.negative)):
                if clicks is not None and len(clicks):
                    obj[key] = [[num(x), num(y)] for x, y in yx_to_xy(np.asarray(clicks, dtype=np.float64))]
            objs.append(obj)
        images.append({"image": rel(e.image), "height": e.height, "width": e.width, "objects": objs})
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "point_order": list(EXTREME_POINT_ORDER), "exif_transpose": exif_transpose,
        "images": images,
    }


_NUM = r"-?[\d.]+(?:[eE][-+]?\d+)?"
_FLAT_LIST = re.compile(r"\[\s*((?:%s|\[[^\[\]]*\])(?:,\s*(?:%s|\[[^\[\]]*\]))*)\s*\]" % (_NUM, _NUM))


def dumps_objects(data: Dict[str, Any]) -> str:
    """JSON text of an objects dict, indented, with each object's points on one line."""
    text = json.dumps(data, indent=1)
    text = _FLAT_LIST.sub(lambda m: json.dumps(json.loads(m.group(0))), text)
    return text + "\n"


def write_objects(entries: Sequence[ImageEntry], path: PathLike, *, exif_transpose: bool = False) -> None:
    """Write ``objects.json`` atomically, paths relative to its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = objects_to_dict(entries, relative_to=path.parent, exif_transpose=exif_transpose)
    atomic_write_text(path, dumps_objects(data))


def read_objects(path: PathLike) -> "ObjectsFile":
    """Read and validate an ``objects.json``; relative paths are resolved against its folder.

    Raises:
        DatasetError: unreadable JSON, wrong format, or a malformed entry (the message says where).
        InvalidPointsError: malformed points.
    """
    path = Path(path)
    data = read_json(path, "points file")
    return objects_from_dict(data, base_dir=path.parent, source=str(path))


@dataclass
class ObjectsFile:
    """A parsed ``objects.json``."""

    images: List[ImageEntry]
    exif_transpose: bool = True

    @property
    def n_objects(self) -> int:
        return sum(len(e.objects) for e in self.images)


def objects_from_dict(data: Any, base_dir: PathLike = ".", source: str = "<objects>") -> ObjectsFile:
    """Validate a parsed ``objects.json`` dict (see the module docstring)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetError(f"{source} is not a dextr objects file: expected a JSON object with "
                           f'"format": "{FORMAT}"')
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DatasetError(f"{source} has format_version {version!r}; this dextr reads up to "
                           f"{FORMAT_VERSION}")
    images = data.get("images")
    if not isinstance(images, list):
        raise DatasetError(f'{source}: "images" must be a list')
    exif = data.get("exif_transpose", True)
    if not isinstance(exif, bool):
        raise DatasetError(f'{source}: "exif_transpose" must be true or false, got {_short(exif)}')
    out = []
    for i, e in enumerate(images):
        where = f"{source}: images[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("objects"), list):
            raise DatasetError(f'{where} must be an object with an "objects" list')
        img = _field(e, "image", str, where, "a path string")
        height = _field(e, "height", int, where, "a positive integer", positive=True)
        width = _field(e, "width", int, where, "a positive integer", positive=True)
        entry = ImageEntry(
            image=None if img is None else str(Path(base_dir) / img), height=height, width=width,
        )
        check_objects(len(e["objects"]), where)
        for j, o in enumerate(e["objects"]):
            at = f"{where}.objects[{j}]"
            if not isinstance(o, dict) or "points_xy" not in o:
                raise DatasetError(f'{at} must be an object with "points_xy"')
            pts = as_points_array(xy_to_yx(_numeric(o["points_xy"], f"{at}.points_xy")),
                                  name=f"{at}.points_xy")[0]
            src = _field(o, "source", str, at, "a path string")
            clicks = {key: None if o.get(f"{key}_xy") is None else
                      xy_to_yx(_numeric(o[f"{key}_xy"], f"{at}.{key}_xy", count=None))
                      for key in ("positive", "negative")}
            entry.objects.append(ObjectEntry(
                pts, label=_field(o, "label", int, at, "an integer label value", signed=True),
                name=_field(o, "name", str, at, "a string"),
                source=None if src is None else str(Path(base_dir) / src),
                area=_field(o, "area", int, at, "a pixel count"), **clicks,
            ))
        out.append(entry)
    return ObjectsFile(out, exif_transpose=exif)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field(d: dict, key: str, kind: type, where: str, expected: str, positive: bool = False,
           signed: bool = False) -> Any:
    """``d[key]`` when it is null/absent or of ``kind`` (bools are not integers; integers are
    ``>= 0`` unless ``signed``, ``> 0`` when ``positive``)."""
    value = d.get(key)
    if value is None:
        return None
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and kind is str and "\x00" in value:
        ok = False
    if ok and kind is int and ((value < 0 and not signed) or (positive and value == 0)):
        ok = False
    if not ok:
        raise DatasetError(f"{where}.{key} must be {expected} or null, got {_short(value)}")
    return value


def _numeric(points: Any, where: str, count: Optional[int] = 4) -> np.ndarray:
    """``count`` (any number with ``None``) ``[x, y]`` number pairs as an ``(count, 2)`` array."""
    pairs = points if isinstance(points, list) else None
    if (pairs is None or (count is not None and len(pairs) != count) or not all(
            isinstance(p, list) and len(p) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
            for p in pairs)):
        try:
            shape = f" (shape {np.asarray(points, dtype=np.float64).shape})"
        except (TypeError, ValueError, OverflowError, RecursionError):
            shape = ""
        what = "four [x, y] number pairs (shape (4, 2))" if count == 4 else "a list of [x, y] number pairs"
        raise InvalidPointsError(f"{where} must be {what}, got {_short(points)}{shape}")
    try:
        arr = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    except OverflowError:  # an integer beyond float range
        raise InvalidPointsError(f"{where} has a coordinate too large, got {_short(points)}") from None
    if not np.isfinite(arr).all():
        raise InvalidPointsError(f"{where} has a NaN or infinite coordinate, got {_short(points)}")
    return arr


def check_photos(objects: ObjectsFile, source: str = "the points file") -> None:
    """Every image entry with objects names an existing photo (checked before any work).

    Raises:
        DatasetError: an entry without a photo, or a photo that does not exist.
    """
    for i, entry in enumerate(objects.images):
        if not entry.objects:
            continue
        if entry.image is None:
            raise DatasetError(f"{source}: images[{i}] has no photo (\"image\": null; its mask "
                               "had no matching photo); rerun points-from-mask with --image-dir")
        if not Path(entry.image).is_file():
            raise DatasetError(f"{source}: images[{i}]: photo not found: {entry.image}")
