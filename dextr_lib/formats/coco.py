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
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from ..core.geometry import EXTREME_POINT_ORDER, extreme_points_from_mask
from ..core.images import read_image
from ..errors import DatasetError, InvalidPointsError, MismatchError
from ..utils.fileio import atomic_write_text

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


def _to_rle(segmentation: Any, height: int, width: int, where: str = "segmentation") -> Dict:
    """pycocotools RLE (``counts`` bytes) of any of the three segmentation forms."""
    mask_api = _mask_api()
    if isinstance(segmentation, list):
        polys = []
        for i, poly in enumerate(segmentation):
            try:
                arr = np.asarray(poly, dtype=np.float64) if isinstance(poly, (list, tuple)) else None
            except (TypeError, ValueError):
                arr = None
            if arr is None or arr.ndim != 1 or not np.isfinite(arr).all():
                raise DatasetError(f"{where}: polygon {i} is not a list of numbers")
            if arr.size % 2:
                raise DatasetError(
                    f"{where}: polygon {i} has an odd number of coordinates ({arr.size}); "
                    "expected x0, y0, x1, y1, ..."
                )
            # Fewer than three vertices enclose nothing; pycocotools would read four numbers as a box.
            if arr.size >= 6:
                polys.append(arr)
        if not polys:
            return mask_api.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        rles = mask_api.frPyObjects(polys, height, width)
        return rles[0] if len(rles) == 1 else mask_api.merge(rles)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2):
            raise DatasetError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
        if [int(size[0]), int(size[1])] != [int(height), int(width)]:
            raise DatasetError(
                f"{where}: RLE size {list(size)} differs from its image's height x width "
                f"[{height}, {width}]"
            )
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts):
                raise DatasetError(f"{where}: uncompressed RLE counts must be non-negative integers")
            if sum(counts) != height * width:
                raise DatasetError(
                    f"{where}: uncompressed RLE counts add up to {sum(counts)} pixels; the image "
                    f"has {height} x {width} = {height * width}"
                )
            return mask_api.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        if isinstance(counts, (str, bytes)):
            return {"size": [height, width],
                    "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        raise DatasetError(f"{where}: RLE counts must be a string or a list of integers")
    raise DatasetError(
        f"{where}: expected polygons (a list of [x0, y0, x1, y1, ...]) or an RLE dict with "
        f"'size' and 'counts', got {type(segmentation).__name__}"
    )


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

    Returns:
        ``{"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd": 0,
        "extreme_points"[, "score"]}``; ``bbox`` is ``[x, y, w, h]`` tight around the pixels,
        ``area`` the pixel count of the stored segmentation.
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
            _require(img, ("id", "file_name", "height", "width"), f"{where}: images[{i}]")
            self._insert_image(img, f"{where}: images[{i}]")
        for i, cat in enumerate(data.get("categories", [])):
            _require(cat, ("id", "name"), f"{where}: categories[{i}]")
            cid = int(cat["id"])
            if cid in self._categories:
                raise DatasetError(f"{where}: categories[{i}] repeats id {cid}")
            self._categories[cid] = cat
            self._category_by_name.setdefault(str(cat["name"]), cid)
        for i, ann in enumerate(data.get("annotations", [])):
            _require(ann, ("id", "image_id", "category_id"), f"{where}: annotations[{i}]")
            aid = int(ann["id"])
            if aid in self._annotations:
                raise DatasetError(f"{where}: annotations[{i}] repeats id {aid}")
            if int(ann["image_id"]) not in self._images:
                raise DatasetError(
                    f"{where}: annotation {aid} refers to image_id {ann['image_id']}, "
                    "which is not in 'images'"
                )
            if int(ann["category_id"]) not in self._categories:
                raise DatasetError(
                    f"{where}: annotation {aid} refers to category_id {ann['category_id']}, "
                    "which is not in 'categories'"
                )
            self._annotations[aid] = ann
            self._by_image.setdefault(int(ann["image_id"]), {})[aid] = None

    # -- reading and writing
    @classmethod
    def load(cls, path: PathLike) -> "CocoFile":
        """Read and check an instances JSON file.

        Raises:
            DatasetError: missing or unreadable file, invalid JSON, or an inconsistent file
                (missing keys, repeated ids, references to unknown images or categories).
        """
        path = Path(path)
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise DatasetError(f"COCO file not found: {path}") from None
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read COCO file {path}: {e}") from None
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


def image_file_name(path: PathLike, root: PathLike) -> str:
    """``path`` as a COCO ``file_name``: relative to ``root`` (``/`` separators) where possible."""
    ap = os.path.abspath(path)
    try:
        return Path(os.path.relpath(ap, os.path.abspath(root))).as_posix()
    except ValueError:  # another drive on Windows
        return Path(ap).as_posix()

