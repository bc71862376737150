"""Extreme points from label images and mask files, into an ``objects.json`` or a COCO file.

No network is involved: the objects and their points come from the masks by the paper's rule
(:func:`dextr_lib.core.geometry.extreme_points_from_mask`), optionally jittered like a human
annotator. ``dextr points-from-mask`` calls these.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from ..core.geometry import extreme_points_from_mask, jitter_points
from ..core.images import open_image
from ..errors import DatasetError, DextrError, InvalidPointsError
from ..formats.coco import CocoFile, annotation_from_mask, common_folder, image_file_name
from ..formats.objects import ImageEntry, ObjectEntry
from ..formats.targets import PhotoFinder, largest_component, read_label_image, read_mask

PathLike = Union[str, os.PathLike]


def points_from_masks(
    paths: Sequence[PathLike],
    *,
    kind: str = "label",
    ignore_index: Optional[int] = 255,
    min_area: int = 1,
    largest_component_only: bool = False,
    jitter: float = 0.0,
    seed: Optional[int] = None,
    image: Optional[PathLike] = None,
    image_dir: Optional[PathLike] = None,
    on_progress: Optional[Callable[[int, int], None]] = None,
    on_warning: Optional[Callable[[str], None]] = None,
    on_object: Optional[Callable[[ImageEntry, ObjectEntry, np.ndarray], None]] = None,
) -> List[ImageEntry]:
    """Extreme points of every object in label images or binary mask files.

    Args:
        paths: label images (``kind="label"``: each value other than 0 and ``ignore_index`` is an
            object) or mask files (``kind="mask"``: each file is one object; several masks of the
            same photo are grouped under it).
        ignore_index: label value that is not an object (void); None: none. Labels only.
        min_area: skip objects with fewer pixels (after ``largest_component_only``).
        largest_component_only: keep only each object's largest 8-connected part (drops stray
            pixels that would otherwise become extreme points).
        jitter: standard deviation in pixels of Gaussian noise added to the points (simulated
            annotators), clipped into the image; 0: exact points.
        seed: random seed of the jitter.
        image: the photo, when there is a single label/mask file.
        image_dir: folder holding the photos; each file's photo is found by the stem rule
            (:mod:`dextr_lib.formats.targets`), beside it and in ``../images`` when not given.
        on_object: called with ``(entry, object, mask)`` for each object kept (its ``(H, W)``
            bool mask, e.g. for a COCO file: :func:`dextr_lib.formats.coco.instances_from_masks`).

    Returns:
        One :class:`ImageEntry` per photo (or per label/mask file without a photo), in input order;
        ``image`` paths are as found (relative to the current folder when the input was).

    Raises:
        DatasetError: bad arguments (unknown kind, ``image`` with several files).
        InvalidImageError: unreadable or unsuitable files.
    """
    if kind not in ("label", "mask"):
        raise DatasetError(f"unknown kind {kind!r}: expected 'label' or 'mask'")
    if image is not None and len(paths) != 1:
        raise DatasetError(
            f"an explicit image goes with exactly one label/mask file, got {len(paths)} files; "
            "use an image folder instead"
        )
    if jitter < 0:
        raise InvalidPointsError(f"jitter must be >= 0 pixels, got {jitter}")
    warn = on_warning or (lambda msg: None)
    rng = np.random.default_rng(seed)
    entries: Dict[str, ImageEntry] = {}
    finder = PhotoFinder(image_dir, exclude=paths)
    for done, path in enumerate(paths, 1):
        path = Path(path)
        photo = Path(image) if image is not None else finder.find(path)
        if photo is None:
            warn(f"no photo found for {path} (looked for a photo whose name is the start of "
                 f"{path.stem!r} up to a '_', '-' or '.', "
                 f"{'in ' + str(image_dir) if image_dir else 'beside it and in ../images'})")
        if kind == "label":
            labels = read_label_image(path)
            values = [int(v) for v in np.unique(labels) if v != 0 and v != ignore_index]
            objects = [(v, None, labels == v) for v in values]
            shape = labels.shape
            if not values:
                hint = (" (only 0 and the ignore value: a binary mask? use kind 'mask')"
                        if ignore_index is not None and (labels == ignore_index).any() else "")
                warn(f"{path} holds no objects{hint}")
        else:
            mask = read_mask(path)
            objects = [(None, path.stem, mask)] if mask.any() else []
            shape = mask.shape
            if not objects:
                warn(f"{path} is empty: no object")
        key = str(photo) if photo is not None else f"<none>:{path}"
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = ImageEntry(
                image=None if photo is None else str(photo), height=shape[0], width=shape[1]
            )
            if photo is not None:
                _check_photo_size(photo, shape, warn)
        elif (entry.height, entry.width) != tuple(shape):
            warn(f"{path} is {shape[1]}x{shape[0]} but other masks of {photo} are "
                 f"{entry.width}x{entry.height}")
        for label, name, obj in objects:
            if largest_component_only:
                obj = largest_component(obj)
            area = int(obj.sum())
            if area < max(min_area, 1):
                continue
            pts = extreme_points_from_mask(obj).astype(np.float64)
            if jitter > 0:
                pts = jitter_points(pts, jitter, rng, obj)
            entry.objects.append(ObjectEntry(pts, label=label, name=name, source=str(path), area=area))
            if on_object is not None:
                on_object(entry, entry.objects[-1], obj)
        if on_progress is not None:
            on_progress(done, len(paths))
    return list(entries.values())


def mask_photos(
    paths: Sequence[PathLike], *, image: Optional[PathLike] = None, image_dir: Optional[PathLike] = None,
) -> List[Path]:
    """The photos :func:`points_from_masks` pairs with ``paths`` (same arguments), found without
    reading any pixel: the files a command reads besides the masks (no output may replace one)."""
    if image is not None:
        return [Path(image)]
    finder = PhotoFinder(image_dir, exclude=paths)
    return [p for p in (finder.find(path) for path in paths) if p is not None]


def _check_photo_size(photo: Path, shape, warn) -> None:
    try:
        with open_image(photo) as im:  # refuses pipes (which would hang) and pixel bombs
            size = im.size
    except DextrError as e:
        warn(str(e))
        return
    if (size[1], size[0]) != tuple(shape):
        warn(f"photo {photo} is {size[0]}x{size[1]} but its mask is {shape[1]}x{shape[0]}")


def instances_from_masks(
    paths: Sequence[PathLike],
    out_path: PathLike,
    *,
    category: str = "object",
    polygons: bool = False,
    images_dir: Optional[PathLike] = None,
    **options: Any,
) -> CocoFile:
    """A COCO instances file of the objects in label images or mask files (not yet saved).

    Objects and their extreme points are found as by
    :func:`dextr_lib.formats.objects.points_from_masks` (``options`` are its keyword arguments); each
    becomes an annotation with its exact RLE (or ``polygons``), bbox, area and ``extreme_points``.

    Args:
        paths: label images or mask files.
        out_path: where the file will be saved.
        category: the category of every object.
        images_dir: the images root that ``file_name`` entries are relative to (default: the
            photos' common folder, :func:`~dextr_lib.formats.coco.common_folder`).

    Returns:
        The file, its ``images_root`` set.

    Raises:
        DatasetError: an object whose photo was not found (COCO needs an image file), or a
            photo outside ``images_dir``.
    """
    cf = CocoFile(path=out_path)
    cid = cf.category_id(category)
    pending: List[Any] = []

    def add(entry, obj, mask) -> None:
        pending.append((entry, annotation_from_mask(mask, ann_id=None, image_id=0, category_id=cid,
                                                    points_yx=obj.points, polygons=polygons)))

    entries = points_from_masks(paths, on_object=add, **options)
    for entry, ann in pending:
        if entry.image is None:
            raise DatasetError(
                f"no photo found for {ann_source(entry)}; a COCO file needs one: give --image-dir "
                "(or --image for a single file)"
            )
    photos = [e for e in entries if e.image is not None]
    root = Path(images_dir) if images_dir is not None else common_folder(e.image for e in photos)
    image_ids = {id(e): cf.add_image(image_file_name(e.image, root), e.height, e.width) for e in photos}
    cf.images_root = root
    for entry, ann in pending:
        cf.add_annotation({**ann, "image_id": image_ids[id(entry)]})
    return cf


def ann_source(entry: Any) -> str:
    """The mask files of an entry, for messages."""
    sources = sorted({str(o.source) for o in entry.objects if o.source})
    return ", ".join(sources[:3]) + (" ..." if len(sources) > 3 else "") if sources else "a mask"
