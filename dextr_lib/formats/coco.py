"""COCO instances files: the one place that converts between COCO annotations and dextr's masks
and points.

COCO (https://cocodataset.org/#format-data) stores objects as ``annotations`` of ``images``, each
with a ``category_id`` (named in ``categories``) and a ``segmentation`` in one of three forms:

* polygons: ``[[x0, y0, x1, y1, ...], ...]`` in the continuous plane (pixel ``i`` covers
  ``[i, i + 1)``, as in dextr), the object being the union of the polygons;
* uncompressed RLE: ``{"size": [H, W], "counts": [n0, n1, ...]}`` (column-major run lengths,
  starting with background), used by COCO for ``iscrowd`` regions;
* compressed RLE: ``{"size": [H, W], "counts": "<ascii>"}``, what dextr writes.

Encoding and decoding go through pycocotools (``mask.encode`` on Fortran-ordered uint8,
``frPyObjects``, ``decode``), never a hand-written RLE, so the files read the same in
pycocotools' ``COCO(...).annToMask``, Detectron2, MMDetection, CVAT and FiftyOne.

``extreme_points`` follow ExtremeNet's ``tools/gen_coco_extreme_points.py``: four ``[x, y]``
pairs in the order top, left, bottom, right. dextr's library arrays are ``(4, 2)`` ``[y, x]`` in
the order left, right, top, bottom (:data:`dextr_lib.core.geometry.EXTREME_POINT_ORDER`);
:func:`extreme_points_to_coco` and :func:`extreme_points_from_coco` convert between the two.

:class:`CocoFile` holds an instances file (images, categories, annotations) and writes it
atomically, one change at a time if need be (the annotation server saves after every accept).
"""
from __future__ import annotations

import json
import math
import os
import reprlib
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from ..core.geometry import EXTREME_POINT_ORDER, extreme_points_from_mask
from ..core.images import read_image
from ..errors import DatasetError, InvalidPointsError, MismatchError
from ..utils.fileio import atomic_write_text, read_json
from ..utils.limits import check_pixels

PathLike = Union[str, os.PathLike]

#: Order of the points in a COCO annotation's ``extreme_points`` (ExtremeNet), each ``[x, y]``.
COCO_POINT_ORDER = ("top", "left", "bottom", "right")
# Index, in dextr's order (left, right, top, bottom), of each COCO point, and the reverse.
_DEXTR_OF_COCO = [EXTREME_POINT_ORDER.index(side) for side in COCO_POINT_ORDER]
_COCO_OF_DEXTR = [COCO_POINT_ORDER.index(side) for side in EXTREME_POINT_ORDER]


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError:  # a core dependency; only a broken install lacks it
        raise DatasetError(
            "COCO files need pycocotools: pip install pycocotools (it is a dependency of dextr)"
        ) from None
    return mask_api


# -- masks <-> segmentations -------------------------------------------------------------------
def encode_mask(mask: np.ndarray) -> Dict[str, Any]:
    """Compressed COCO RLE of a binary mask, ready for JSON.

    Args:
        mask: ``(H, W)`` array, non-zero on the object (bool or any number type).

    Returns:
        ``{"size": [H, W], "counts": str}``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetError(f"a mask to encode must be (H, W), got shape {mask.shape}")
    rle = _mask_api().encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


# -- checking segmentations ----------------------------------------------------------------------
# pycocotools trusts its input: a polygon coordinate of 1e12 overflows its C ints (a segfault), one
# of 1e8 asks for gigabytes, a compressed RLE string cut short is read past its end or decoded into
# uninitialised memory. Every segmentation is checked here before pycocotools sees it.

#: How far outside its image a polygon vertex may lie, as a fraction of the image's width
#: (x) or height (y): outlines drawn a little past the border are common and harmless.
POLYGON_MARGIN = 1.0


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 40, 40, 8, 4


def _shown(value: Any) -> str:
    """A short repr of a user's value for a message (bounded depth and length)."""
    return _REPR.repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _polygons(segmentation: list, height: int, width: int, where: str) -> List[np.ndarray]:
    """The polygons of a segmentation that enclose something (>= 3 vertices), each ``(2k,)``
    float64 ``x0, y0, x1, y1, ...``, checked: numbers, finite, even length, near the image, and
    an outline no longer than a mask of the image can have."""
    polys = []
    length = 0.0
    for i, poly in enumerate(segmentation):
        try:
            arr = np.asarray(poly) if isinstance(poly, (list, tuple)) else None
        except (TypeError, ValueError, OverflowError):  # ragged nesting
            arr = None
        # "iu" and "f" only: no strings, booleans, nested lists or integers past 64 bits
        if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iuf":
            arr = arr.astype(np.float64)
        else:
            arr = None
        if arr is None or not np.isfinite(arr).all():
            raise DatasetError(f"{where}: polygon {i} is not a list of numbers (x0, y0, x1, y1, ...): "
                               f"{_shown(poly)}")
        if arr.size % 2:
            raise DatasetError(
                f"{where}: polygon {i} has an odd number of coordinates ({arr.size}); "
                "expected x0, y0, x1, y1, ..."
            )
        # Fewer than three vertices enclose nothing (pycocotools would read four numbers as a
        # box); such polygons are left out, as detectron2 does.
        if arr.size < 6:
            continue
        xs, ys = arr[0::2], arr[1::2]
        far = (np.abs(xs - width / 2) > width * (0.5 + POLYGON_MARGIN)) | \
              (np.abs(ys - height / 2) > height * (0.5 + POLYGON_MARGIN))
        if far.any():
            k = int(np.argmax(far))
            raise DatasetError(
                f"{where}: polygon {i} has the point ({xs[k]:g}, {ys[k]:g}), far outside its "
                f"{width}x{height} image (points may lie at most one image width or height outside it)"
            )
        # pycocotools walks the outline pixel by pixel (5x upsampled): bound its length, the
        # larger of |dx| and |dy| of each edge, the closing one included.
        pts = arr.reshape(-1, 2)
        length += float(np.abs(np.concatenate([pts[1:], pts[:1]]) - pts).max(axis=1).sum())
        polys.append(arr)
    limit = 4 * height * width + 12 * (height + width)
    if length > limit:
        raise DatasetError(
            f"{where}: the polygons' outline is {length:.0f} px long, longer than any mask of its "
            f"{width}x{height} image can have ({limit} px)"
        )
    return polys


def _rle_string_runs(counts: bytes) -> Optional[np.ndarray]:
    """The run lengths of a compressed RLE ``counts`` string (pycocotools' ``rleFrString``
    format: 6-bit groups from ``'0'``, differences to the run two back from the fourth run on),
    or None when it is not one. Only to check a string before pycocotools reads it."""
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        return None
    more = (c & 0x20) != 0
    if more[-1]:  # the last number is unfinished: pycocotools would read past the string's end
        return None
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:  # 35 bits; a run of at most 2**32 pixels never needs more
        return None
    shift = 5 * (np.arange(c.size) - np.repeat(starts, lengths))
    x = np.add.reduceat((c & 0x1F) << shift, starts)
    x = np.where((c[ends] & 0x10) != 0, x - (1 << (5 * lengths)), x)  # sign-extended
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    return runs


def _rle_counts(segmentation: dict, height: int, width: int, where: str) -> Union[List[int], bytes]:
    """The checked ``counts`` of an RLE segmentation: a list of run lengths (uncompressed) or
    the ASCII bytes of a compressed string, adding up to the image's pixels."""
    size = segmentation["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) for s in size)):
        raise DatasetError(f"{where}: RLE 'size' must be [height, width] (two integers), got {_shown(size)}")
    if [size[0], size[1]] != [height, width]:
        raise DatasetError(
            f"{where}: RLE size {list(size)} differs from its image's height x width [{height}, {width}]"
        )
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            raise DatasetError(f"{where}: uncompressed RLE counts must be non-negative integers")
        if sum(counts) != height * width:
            raise DatasetError(
                f"{where}: uncompressed RLE counts add up to {sum(counts)} pixels; the image "
                f"has {height} x {width} = {height * width}"
            )
        return counts
    if isinstance(counts, str):
        if not counts.isascii():
            raise DatasetError(f"{where}: compressed RLE counts must be ASCII text, got {_shown(counts)}")
        counts = counts.encode("ascii")
    if isinstance(counts, bytes):
        runs = _rle_string_runs(counts)
        if runs is None or (runs < 0).any():
            raise DatasetError(f"{where}: compressed RLE counts {_shown(counts.decode('latin-1'))} "
                               "are not a COCO RLE string")
        if int(runs.sum()) != height * width:
            raise DatasetError(
                f"{where}: compressed RLE counts add up to {int(runs.sum())} pixels; the image "
                f"has {height} x {width} = {height * width}"
            )
        return counts
    raise DatasetError(f"{where}: RLE counts must be a string or a list of integers, got {_shown(counts)}")


def _checked(segmentation: Any, height: int, width: int, where: str):
    """Polygons (a list of arrays) or RLE counts (a list or bytes) of a checked segmentation.

    Raises:
        DatasetError: a malformed segmentation, one of another size than the image, or polygons
            far outside it (:data:`POLYGON_MARGIN`).
    """
    if isinstance(segmentation, list):
        return _polygons(segmentation, height, width, where)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        return _rle_counts(segmentation, height, width, where)
    raise DatasetError(
        f"{where}: expected polygons (a list of [x0, y0, x1, y1, ...]) or an RLE dict with "
        f"'size' and 'counts', got {type(segmentation).__name__}"
    )


def _to_rle(segmentation: Any, height: int, width: int, where: str = "segmentation") -> Dict:
    """pycocotools RLE (``counts`` bytes) of any of the three segmentation forms, checked first."""
    mask_api = _mask_api()
    checked = _checked(segmentation, height, width, where)
    if isinstance(checked, bytes):
        return {"size": [height, width], "counts": checked}
    if isinstance(segmentation, dict):
        return mask_api.frPyObjects({"size": [height, width], "counts": checked}, height, width)
    if not checked:
        return mask_api.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    rles = mask_api.frPyObjects(checked, height, width)
    return rles[0] if len(rles) == 1 else mask_api.merge(rles)


def decode_segmentation(segmentation: Any, height: int, width: int, *,
                        where: str = "segmentation") -> np.ndarray:
    """The mask of a COCO segmentation: polygons, uncompressed RLE or compressed RLE.

    Args:
        segmentation: the annotation's ``segmentation`` value.
        height, width: its image's size.
        where: names the annotation in error messages.

    Returns:
        ``(H, W)`` bool mask, exactly what pycocotools' ``annToMask`` gives.

    Raises:
        DatasetError: a malformed segmentation or one whose size differs from the image's.
    """
    rle = _to_rle(segmentation, int(height), int(width), where)
    try:
        with warnings.catch_warnings():
            # pycocotools' Cython __array__ predates NumPy 2's copy keyword; harmless.
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = _mask_api().decode(rle)
    except Exception as e:  # a corrupt counts string
        raise DatasetError(f"{where}: cannot decode the RLE: {e}") from None
    return mask.astype(bool)


def segmentation_area_bbox(segmentation: Any, height: int, width: int, *,
                           where: str = "segmentation"):
    """``(area, [x, y, w, h])`` of a segmentation without decoding it to a full mask (fast).

    ``area`` is the pixel count of the decoded mask; the box is tight around its pixels
    (``[0, 0, 0, 0]`` when empty).
    """
    mask_api = _mask_api()
    rle = _to_rle(segmentation, int(height), int(width), where)
    try:
        area = int(mask_api.area(rle))
        box = [float(v) for v in mask_api.toBbox(rle)]
    except Exception as e:
        raise DatasetError(f"{where}: cannot read the RLE: {e}") from None
    return area, box


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> List[List[float]]:
    """Polygons of a mask's outer boundaries, for files that want polygon segmentations.

    The boundary runs along pixel edges (marching squares at level 0.5, corners cut); holes
    cannot be expressed as COCO polygons and are filled. Use :func:`encode_mask` (RLE) where the
    mask must come back exactly.

    Args:
        mask: ``(H, W)``, non-zero on the object.
        tolerance: simplify each polygon to within this many pixels (0: keep every vertex).

    Returns:
        ``[[x0, y0, x1, y1, ...], ...]``, one flat list per outer boundary (at least 3 vertices),
        in the continuous plane (pixel ``i`` covers ``[i, i + 1)``).
    """
    from skimage.measure import approximate_polygon, find_contours

    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise DatasetError(f"a mask must be (H, W), got shape {mask.shape}")
    # Padding closes the contours of objects touching the border.
    padded = np.pad(mask, 1).astype(np.float32)
    polygons = []
    for contour in find_contours(padded, 0.5):
        y, x = contour[:, 0], contour[:, 1]
        # Outer boundaries run one way round, holes the other way: keep the outer ones.
        if 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1])) <= 0:
            continue
        if tolerance > 0:
            contour = approximate_polygon(contour, tolerance)
        contour = contour[:-1] if len(contour) > 1 and np.allclose(contour[0], contour[-1]) else contour
        if len(contour) < 3:
            continue
        # find_contours puts pixel centres on integers; remove the padding, shift to the plane.
        xy = contour[:, ::-1] - 0.5
        polygons.append([round(float(v), 2) for v in xy.ravel()])
    return polygons


# -- extreme points ------------------------------------------------------------------------------
def _plain_number(v: float) -> Union[int, float]:
    f = float(v)
    return int(f) if f.is_integer() else f


def extreme_points_to_coco(points_yx: Any) -> List[List[Union[int, float]]]:
    """dextr's ``(4, 2)`` ``[y, x]`` points (left, right, top, bottom) -> COCO ``extreme_points``:
    ``[[x, y], ...]`` in ExtremeNet's order top, left, bottom, right (whole numbers as ints)."""
    pts = np.asarray(points_yx, dtype=np.float64)
    if pts.shape != (4, 2):
        raise InvalidPointsError(f"extreme points must have shape (4, 2), got {pts.shape}")
    return [[_plain_number(pts[i, 1]), _plain_number(pts[i, 0])] for i in _DEXTR_OF_COCO]


#: The fields of an annotation that hold its correction clicks after the extreme points
#: (positive, then negative), each ``[[x, y], ...]`` like ``extreme_points``.
CLICK_FIELDS = ("positive_points", "negative_points")


def clicks_to_coco(points_yx: Any) -> List[List[Union[int, float]]]:
    """Correction clicks ``(k, 2)`` ``[y, x]`` -> ``[[x, y], ...]`` as stored beside
    ``extreme_points`` (``positive_points``, ``negative_points``; click order kept)."""
    pts = np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)
    return [[_plain_number(x), _plain_number(y)] for y, x in pts]


def clicks_from_coco(clicks: Any, *, where: str = "clicks") -> np.ndarray:
    """An annotation's ``positive_points``/``negative_points`` (``[[x, y], ...]``, or a flat
    ``[x, y, ...]`` list) -> ``(k, 2)`` float64 ``[y, x]``; ``None`` -> ``(0, 2)``.

    Raises:
        DatasetError: not a list of numeric ``[x, y]`` pairs.
    """
    try:
        pts = np.asarray([] if clicks is None else clicks, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        pts = None
    if pts is not None and pts.size == 0:
        pts = pts.reshape(0, 2)
    elif pts is not None and pts.ndim == 1 and len(pts) % 2 == 0:
        pts = pts.reshape(-1, 2)
    if pts is None or pts.ndim != 2 or pts.shape[1] != 2 or not np.isfinite(pts).all():
        raise DatasetError(f"{where}: expected a list of [x, y] points, got {_shown(clicks)}")
    return pts[:, ::-1].copy()


def extreme_points_from_coco(extreme_points: Any, *, where: str = "extreme_points") -> np.ndarray:
    """COCO ``extreme_points`` (``[x, y]`` top, left, bottom, right) -> ``(4, 2)`` float64
    ``[y, x]`` in dextr's order left, right, top, bottom.

    Raises:
        DatasetError: not four numeric ``[x, y]`` pairs (a flat list of 8 numbers is accepted).
    """
    try:
        pts = np.asarray(extreme_points, dtype=np.float64)
    except (TypeError, ValueError):
        pts = None
    if pts is not None and pts.shape == (8,):
        pts = pts.reshape(4, 2)
    if pts is None or pts.shape != (4, 2) or not np.isfinite(pts).all():
        raise DatasetError(
            f"{where}: expected four [x, y] points (top, left, bottom, right), got {extreme_points!r}"
        )
    return pts[_COCO_OF_DEXTR][:, ::-1].copy()


# -- annotations ---------------------------------------------------------------------------------
def annotation_from_mask(
    mask: np.ndarray,
    *,
    ann_id: Optional[int],
    image_id: int,
    category_id: int,
    points_yx: Optional[Any] = None,
    score: Optional[float] = None,
    polygons: bool = False,
    positive_yx: Optional[Any] = None,
    negative_yx: Optional[Any] = None,
) -> Dict[str, Any]:
    """A COCO annotation for one object mask.

    Args:
        mask: ``(H, W)``, non-zero on the object.
        ann_id: the annotation id (None: let :meth:`CocoFile.add_annotation` assign one).
        image_id, category_id: its image and category.
        points_yx: the object's ``(4, 2)`` ``[y, x]`` extreme points (left, right, top, bottom),
            e.g. the clicks it was predicted from; default: derived from the mask by the paper's
            rule (omitted for an empty mask).
        score: a confidence to store (e.g. the mean foreground probability), or None.
        polygons: store polygon outlines instead of the exact compressed RLE.
        positive_yx, negative_yx: correction clicks ``(k, 2)`` ``[y, x]`` after the extreme
            points, stored as ``positive_points``/``negative_points`` ``[[x, y], ...]`` when
            there are any.

    Returns:
        ``{"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd": 0,
        "extreme_points"[, "positive_points", "negative_points", "score"]}``; ``bbox`` is
        ``[x, y, w, h]`` tight around the pixels, ``area`` the pixel count of the stored
        segmentation.
    """
    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise DatasetError(f"a mask must be (H, W), got shape {mask.shape}")
    h, w = mask.shape
    segmentation: Any = mask_to_polygons(mask) if polygons else encode_mask(mask)
    area, bbox = segmentation_area_bbox(segmentation, h, w)
    ann: Dict[str, Any] = {}
    if ann_id is not None:
        ann["id"] = int(ann_id)
    ann.update(image_id=int(image_id), category_id=int(category_id), segmentation=segmentation,
               area=area, bbox=[_plain_number(v) for v in bbox], iscrowd=0)
    if points_yx is not None:
        ann["extreme_points"] = extreme_points_to_coco(points_yx)
    elif mask.any():
        ann["extreme_points"] = extreme_points_to_coco(extreme_points_from_mask(mask))
    for key, clicks in zip(CLICK_FIELDS, (positive_yx, negative_yx)):
        if clicks is not None and len(clicks):
            ann[key] = clicks_to_coco(clicks)
    if score is not None:
        ann["score"] = float(score)
    return ann


# -- instances files -----------------------------------------------------------------------------
def _require(obj: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DatasetError(f"{where}: missing {', '.join(repr(k) for k in missing)}")


def _field_error(where: str, key: str, expected: str, value: Any) -> DatasetError:
    return DatasetError(f"{where}: {key!r} must be {expected}, got {_shown(value)}")


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a boolean), as float() reads it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer past float's range
        return False


def _int_field(entry: Dict[str, Any], key: str, where: str) -> int:
    """``entry[key]``, an integer that other tools can store too (64 bits)."""
    value = entry[key]
    if not _is_int(value) or not -2 ** 63 <= value < 2 ** 63:
        raise _field_error(where, key, "an integer", value)
    return value


def _checked_image(img: Any, source: str, index: int) -> Dict[str, Any]:
    """``images[index]`` of ``source``, checked: integer id, a file name, a size within the
    pixel limit (a small file may state any size; decoding allocates it)."""
    _require(img, ("id", "file_name", "height", "width"), f"{source}: images[{index}]")
    where = f"{source}: image {_int_field(img, 'id', f'{source}: images[{index}]')}"
    if not isinstance(img["file_name"], str) or not img["file_name"]:
        raise _field_error(where, "file_name", "a file name", img["file_name"])
    for key in ("height", "width"):
        if _int_field(img, key, where) < 1:
            raise _field_error(where, key, "a positive integer", img[key])
    check_pixels(img["width"], img["height"], where)
    return img


class CocoFile:
    """A COCO instances file in memory: ``images``, ``categories`` and ``annotations``.

    Lookups are kept in dicts, so adding, replacing or removing one annotation of a large file
    is cheap; :meth:`save` writes the whole file atomically (readers never see half a file).
    Methods are serialised by a lock, so one instance can be shared by a server's threads.

    Example:
        >>> coco = CocoFile()
        >>> img = coco.add_image("photo.jpg", height=480, width=640)
        >>> ann = annotation_from_mask(mask, ann_id=None, image_id=img,
        ...                            category_id=coco.category_id("dog"))
        >>> coco.add_annotation(ann)
        >>> coco.save("instances.json")
    """

    def __init__(self, data: Optional[Dict[str, Any]] = None, *, path: Optional[PathLike] = None):
        """Args:
            data: a parsed instances file (validated), or None for an empty one.
            path: where it came from (names it in errors, resolves relative image folders).
        """
        self.path = Path(path) if path is not None else None
        #: The folder ``file_name`` entries are relative to, where a writer chose it (not stored
        #: in the file: readers are given it, ``--images``).
        self.images_root: Optional[Path] = None
        self._lock = threading.RLock()
        data = {} if data is None else data
        where = str(path) if path is not None else "COCO data"
        if not isinstance(data, dict):
            raise DatasetError(f"{where}: expected a COCO instances object, got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if key in data and not isinstance(data[key], list):
                raise DatasetError(f"{where}: '{key}' must be a list")
        #: Top-level entries other than the three lists (``info``, ``licenses``...), kept as read.
        self.extra = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
        self._images: Dict[int, Dict[str, Any]] = {}
        self._image_by_name: Dict[str, int] = {}
        self._categories: Dict[int, Dict[str, Any]] = {}
        self._category_by_name: Dict[str, int] = {}
        self._annotations: Dict[int, Dict[str, Any]] = {}
        self._by_image: Dict[int, Dict[int, None]] = {}  # image id -> its annotation ids, ordered
        for i, img in enumerate(data.get("images", [])):
            self._insert_image(_checked_image(img, where, i), f"{where}: images[{i}]")
        for i, cat in enumerate(data.get("categories", [])):
            _require(cat, ("id", "name"), f"{where}: categories[{i}]")
            cid = _int_field(cat, "id", f"{where}: categories[{i}]")
            if not isinstance(cat["name"], str):
                raise _field_error(f"{where}: category {cid}", "name", "text", cat["name"])
            if cid in self._categories:
                raise DatasetError(f"{where}: categories[{i}] repeats id {cid}")
            self._categories[cid] = cat
            self._category_by_name.setdefault(cat["name"], cid)
        for i, ann in enumerate(data.get("annotations", [])):
            _require(ann, ("id", "image_id", "category_id"), f"{where}: annotations[{i}]")
            aid = _int_field(ann, "id", f"{where}: annotations[{i}]")
            if aid in self._annotations:
                raise DatasetError(f"{where}: annotations[{i}] repeats id {aid}")
            self._check_annotation(ann, f"{where}: annotation {aid}")
            self._annotations[aid] = ann
            self._by_image.setdefault(ann["image_id"], {})[aid] = None

    def photos_root(self, images_dir: Optional[PathLike] = None) -> Path:
        """The folder a reader joins with the ``file_name`` entries (detectron2's
        ``image_root``): ``images_dir`` (``--images``) when given, else the file's own folder
        (``.`` for a file not read from disk) — the one default of every COCO reader."""
        if images_dir is not None:
            return Path(images_dir).expanduser()
        return self.path.parent if self.path is not None else Path(".")

    def _check_annotation(self, ann: Dict[str, Any], where: str) -> None:
        """The schema of one annotation of a file being read (the fields dextr and pycocotools
        use; others are kept as they are)."""
        iid = _int_field(ann, "image_id", where)
        if iid not in self._images:
            raise DatasetError(f"{where} refers to image_id {iid}, which is not in 'images'")
        cid = _int_field(ann, "category_id", where)
        if cid not in self._categories:
            raise DatasetError(f"{where} refers to category_id {cid}, which is not in 'categories'")
        if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), float):
            raise _field_error(where, "iscrowd", "0 or 1", ann["iscrowd"])
        bbox = ann.get("bbox", [0, 0, 0, 0])
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise _field_error(where, "bbox", "[x, y, width, height] (four numbers)", bbox)
        for key in ("area", "score"):
            if ann.get(key) is not None and not _is_number(ann[key]):
                raise _field_error(where, key, "a number", ann[key])
        if "segmentation" in ann:
            img = self._images[iid]
            _checked(ann["segmentation"], img["height"], img["width"], f"{where}: 'segmentation'")
        if "extreme_points" in ann:
            extreme_points_from_coco(ann["extreme_points"], where=f"{where}: 'extreme_points'")
        for key in CLICK_FIELDS:
            if ann.get(key) is not None:  # absent: no clicks, nothing to check
                clicks_from_coco(ann[key], where=f"{where}: {key!r}")

    # -- reading and writing
    @classmethod
    def load(cls, path: PathLike) -> "CocoFile":
        """Read and check an instances JSON file.

        Every entry is checked against the COCO schema (ids, sizes, category ids, bbox, area,
        iscrowd, score, segmentation, extreme_points, positive_points, negative_points), so what
        was read can be decoded and served: a bad value is named with its annotation (or image)
        id and field.

        Raises:
            DatasetError: missing or unreadable file, invalid JSON, or an inconsistent file
                (missing keys, values of the wrong type, repeated ids, references to unknown
                images or categories, malformed segmentations or polygons far outside their image).
            LimitError: an image stated larger than the pixel limit.
        """
        path = Path(path)
        data = read_json(path, "COCO file")
        return cls(data, path=path)

    def to_dict(self) -> Dict[str, Any]:
        """The file's content: extra top-level entries, then images, categories, annotations."""
        with self._lock:
            return {**self.extra,
                    "images": list(self._images.values()),
                    "categories": list(self._categories.values()),
                    "annotations": list(self._annotations.values())}

    def save(self, path: Optional[PathLike] = None) -> Path:
        """Write the file atomically (to ``path``, default where it was loaded from)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise DatasetError("CocoFile.save needs a path: this file was not loaded from one")
        with self._lock:
            text = json.dumps(self.to_dict(), separators=(",", ":"))
            atomic_write_text(target, text)
        return target

    # -- images
    def _insert_image(self, img: Dict[str, Any], where: str) -> None:
        iid = int(img["id"])
        if iid in self._images:
            raise DatasetError(f"{where}: repeats image id {iid}")
        self._images[iid] = img
        self._image_by_name.setdefault(str(img["file_name"]), iid)

    @property
    def images(self) -> List[Dict[str, Any]]:
        """The image entries (``id``, ``file_name``, ``height``, ``width``, ...), in file order."""
        with self._lock:
            return list(self._images.values())

    def image(self, image_id: int) -> Dict[str, Any]:
        """The image entry with this id (KeyError-free: raises DatasetError)."""
        try:
            return self._images[int(image_id)]
        except KeyError:
            raise DatasetError(f"no image with id {image_id} in {self._name()}") from None

    def image_id(self, file_name: str) -> Optional[int]:
        """The id of the image whose ``file_name`` is this, or None."""
        return self._image_by_name.get(str(file_name))

    def add_image(self, file_name: str, height: int, width: int,
                  image_id: Optional[int] = None, **extra: Any) -> int:
        """Add an image (or return the id of the one with this ``file_name``, same size).

        Raises:
            DatasetError: the file name is known with another size, or ``image_id`` is taken.
        """
        with self._lock:
            known = self._image_by_name.get(str(file_name))
            if known is not None:
                img = self._images[known]
                if (int(img["height"]), int(img["width"])) != (int(height), int(width)):
                    raise DatasetError(
                        f"image {file_name} is already in {self._name()} with size "
                        f"{img['height']}x{img['width']}, not {height}x{width}"
                    )
                return known
            iid = int(image_id) if image_id is not None else max(self._images, default=0) + 1
            entry = {"id": iid, "file_name": str(file_name), "height": int(height),
                     "width": int(width), **extra}
            self._insert_image(entry, self._name())
            return iid

    # -- categories
    @property
    def categories(self) -> Dict[int, str]:
        """Category id -> name."""
        with self._lock:
            return {cid: str(c["name"]) for cid, c in self._categories.items()}

    def category_id(self, name: str, *, create: bool = True, supercategory: Optional[str] = None) -> int:
        """The id of the category called ``name``; with ``create``, a new one when unknown.

        Raises:
            DatasetError: unknown name and ``create=False`` (the message lists the names).
        """
        with self._lock:
            cid = self._category_by_name.get(str(name))
            if cid is not None:
                return cid
            if not create:
                names = ", ".join(sorted(self._category_by_name)) or "none"
                raise DatasetError(f"unknown category {name!r} in {self._name()}; categories: {names}")
            cid = max(self._categories, default=0) + 1
            entry: Dict[str, Any] = {"id": cid, "name": str(name)}
            if supercategory is not None:
                entry["supercategory"] = supercategory
            self._categories[cid] = entry
            self._category_by_name[str(name)] = cid
            return cid

    # -- annotations
    @property
    def annotations(self) -> List[Dict[str, Any]]:
        """The annotations, in file order (new ones last)."""
        with self._lock:
            return list(self._annotations.values())

    def annotation(self, ann_id: int) -> Dict[str, Any]:
        """The annotation with this id.

        Raises:
            DatasetError: no such annotation.
        """
        try:
            return self._annotations[int(ann_id)]
        except KeyError:
            raise DatasetError(f"no annotation with id {ann_id} in {self._name()}") from None

    def annotations_of(self, image_id: int) -> List[Dict[str, Any]]:
        """The annotations of one image, in the order they joined it."""
        with self._lock:
            return [self._annotations[a] for a in self._by_image.get(int(image_id), {})]

    def _check_refs(self, ann: Dict[str, Any]) -> None:
        _require(ann, ("image_id", "category_id"), "annotation")
        if int(ann["image_id"]) not in self._images:
            raise DatasetError(f"annotation refers to image_id {ann['image_id']}, not in {self._name()}")
        if int(ann["category_id"]) not in self._categories:
            raise DatasetError(
                f"annotation refers to category_id {ann['category_id']}, not in {self._name()}"
            )

    def add_annotation(self, ann: Dict[str, Any]) -> int:
        """Add an annotation; one without ``id`` (or ``id`` None) gets the next free id.

        Returns:
            its id.

        Raises:
            DatasetError: the id is taken, or its image or category is unknown.
        """
        with self._lock:
            self._check_refs(ann)
            ann = dict(ann)
            if ann.get("id") is None:
                ann["id"] = max(self._annotations, default=0) + 1
            aid = int(ann["id"])
            if aid in self._annotations:
                raise DatasetError(f"annotation id {aid} is already in {self._name()}")
            self._annotations[aid] = ann
            self._by_image.setdefault(int(ann["image_id"]), {})[aid] = None
            return aid

    def replace_annotation(self, ann_id: int, ann: Dict[str, Any]) -> None:
        """Replace an annotation, keeping its id and its place in the file."""
        with self._lock:
            old = self.annotation(ann_id)
            self._check_refs(ann)
            aid = int(ann_id)
            self._annotations[aid] = {**ann, "id": aid}
            if int(old["image_id"]) != int(ann["image_id"]):
                del self._by_image[int(old["image_id"])][aid]
                self._by_image.setdefault(int(ann["image_id"]), {})[aid] = None

    def remove_annotation(self, ann_id: int) -> Dict[str, Any]:
        """Remove an annotation and return it."""
        with self._lock:
            ann = self.annotation(ann_id)
            del self._annotations[int(ann_id)]
            del self._by_image[int(ann["image_id"])][int(ann_id)]
            return ann

    def annotation_mask(self, ann: Union[int, Dict[str, Any]]) -> np.ndarray:
        """``(H, W)`` bool mask of an annotation (or annotation id), sized as its image."""
        if not isinstance(ann, dict):
            ann = self.annotation(ann)
        img = self.image(ann["image_id"])
        return decode_segmentation(ann.get("segmentation", []), img["height"], img["width"],
                                   where=f"annotation {ann.get('id')}")

    def __len__(self) -> int:
        return len(self._annotations)

    def __repr__(self) -> str:
        return (f"CocoFile({self._name()}: images={len(self._images)}, "
                f"categories={len(self._categories)}, annotations={len(self._annotations)})")

    def _name(self) -> str:
        return str(self.path) if self.path is not None else "the COCO file"


def iter_images_with_annotations(coco: CocoFile) -> Iterable:
    """``(image entry, its annotations)`` for every image, in file order (one pass)."""
    for img in coco.images:
        yield img, coco.annotations_of(img["id"])


# -- images --------------------------------------------------------------------------------------
def read_coco_image(path: PathLike, height: int, width: int) -> np.ndarray:
    """An image of a COCO file as ``(H, W, 3)`` uint8 RGB, on the pixel grid its annotations use.

    Annotations refer to the stored pixels (as dextr's masks do) unless only the EXIF-rotated
    image has the ``height`` x ``width`` the file states (tools that annotate what viewers show).

    Raises:
        DatasetError: the file is missing (named), or neither orientation has the stated size.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"image file not found: {path}")
    rgb = read_image(path, exif_transpose=False)
    if rgb.shape[:2] == (int(height), int(width)):
        return rgb
    turned = read_image(path, exif_transpose=True)
    if turned.shape[:2] == (int(height), int(width)):
        return turned
    raise MismatchError(
        f"{path} is {rgb.shape[1]}x{rgb.shape[0]} px but the COCO file says {width}x{height}"
    )


def common_folder(paths: Iterable[PathLike]) -> Path:
    """The deepest folder holding every one of ``paths`` (absolute): the images root a new COCO
    file's ``file_name`` entries are relative to by default (``.`` when there is none)."""
    folders = [os.path.dirname(os.path.abspath(p)) for p in paths]
    return Path(os.path.commonpath(folders)) if folders else Path(".").absolute()


def image_file_name(path: PathLike, root: PathLike) -> str:
    """``path`` as a COCO ``file_name``: relative to the images root ``root``, ``/`` separators.

    COCO tools join an images folder and ``file_name`` (pycocotools users, detectron2's
    ``register_coco_instances(name, {}, json_file, image_root)``), so a name never climbs out of
    its root with ``..``.

    Raises:
        DatasetError: ``path`` is not inside ``root``.
    """
    ap, root_ap = os.path.abspath(path), os.path.abspath(root)
    try:
        rel = os.path.relpath(ap, root_ap)
    except ValueError:  # another drive on Windows
        rel = ap
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise DatasetError(
            f"photo {path} is not inside the images folder {root}: a COCO file names its photos "
            "relative to one folder (choose one that holds every photo, --images)"
        )
    return Path(rel).as_posix()
