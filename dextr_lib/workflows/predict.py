"""Predicting every object of a points file or a COCO file: the masks written as files, or a new
COCO file holding them.

``dextr predict --points-file`` and ``dextr predict --coco`` call these. Each photo is decoded
once; objects are batched across photos; masks are written as each batch comes out, so memory
holds one batch of masks rather than every mask of an image.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.geometry import extreme_points_from_mask
from ..core.images import read_image
from ..errors import DatasetError, MismatchError
from ..formats.coco import (
    CLICK_FIELDS, CocoFile, annotation_from_mask, clicks_from_coco, common_folder, decode_segmentation,
    extreme_points_from_coco, image_file_name, read_coco_image,
)
from ..formats.masks import MaskNamer, write_mask
from ..formats.objects import ImageEntry, ObjectsFile, check_photos
from ..inference.engine import mask_and_score, resolve_threshold
from ..model import DextrModel
from ..utils.fileio import check_outputs
from ..utils.limits import check_objects

PathLike = Union[str, os.PathLike]
ProgressFn = Optional[Callable[[int, int], None]]


@dataclass
class BatchResult:
    """What :func:`predict_objects` wrote: ``written`` mask paths in object order."""

    out_dir: Path
    written: List[Path] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.written)


def predict_objects(
    model: DextrModel,
    objects: ObjectsFile,
    out_dir: PathLike,
    *,
    prob: bool = False,
    threshold: Optional[float] = None,
    batch_size: Optional[int] = None,
    precision: str = "fp32",
    device=None,
    on_progress: ProgressFn = None,
    force: bool = False,
    inputs: Iterable[PathLike] = (),
) -> BatchResult:
    """Predict every object of a parsed ``objects.json`` and write one mask file per object.

    Each photo is decoded once; objects are batched across photos; masks are written as each
    batch comes out. An object's ``positive``/``negative`` correction clicks go into its
    prediction (:meth:`DextrModel.predict`).

    Args:
        model: the model.
        objects: from :func:`dextr_lib.formats.objects.read_objects` (check it with
            :func:`dextr_lib.formats.objects.check_photos` before loading the model).
        out_dir: folder for the masks (created); names as in the module docstring.
        prob: write probabilities as 8-bit grayscale instead of binary masks.
        threshold: binary masks are ``prob >= threshold`` (default: the model's).
        batch_size, precision, device: as for :meth:`DextrModel.predict`.
        on_progress: ``(written, total)`` after each mask.
        force: replace existing mask files (else any existing one is refused before any work);
            an input (a photo, a label file the points file names, ``inputs``) is never replaced.
        inputs: the other files the caller read (the points file, the model...), never replaced.

    Returns:
        A :class:`BatchResult`; its ``count`` is the number of files written.

    Raises:
        MismatchError: a photo whose size differs from the entry's ``height``/``width``.
        CorrectionError: negative clicks for a model that takes none (before any work), or a
            correction outside its object's crop.
        OutputError: a mask that cannot be written, or one that exists (without ``force``) or
            is a photo of the points file; checked for every object before predicting.
    """
    thr = resolve_threshold(threshold, model.preprocess)
    entries, paths = mask_paths(objects, out_dir)
    check_outputs([(path, "--out-dir", "mask") for path in paths],
                  inputs=[*objects_files(objects), *inputs], force=force)
    check_negatives(model, (o.negative for e in entries for o in e.objects))
    result = BatchResult(Path(out_dir))

    items = ((read_photo(entry, objects.exif_transpose), *entry_clicks(entry)) for entry in entries)
    masks = model.predict_iter(items, batch_size=batch_size, device=device,
                               threshold=None if prob else thr, precision=precision)
    for path, mask in zip(paths, masks):
        write_mask(mask, path, prob)
        result.written.append(path)
        if on_progress is not None:
            on_progress(result.count, len(paths))
    return result


def objects_files(objects: ObjectsFile) -> List[str]:
    """The files a points file names: its photos and the label/mask files of its objects (no
    output may replace one)."""
    return [p for e in objects.images for p in (e.image, *(o.source for o in e.objects)) if p]


def coco_files(source: CocoFile, images_dir: Optional[PathLike] = None) -> List[Path]:
    """The photos a COCO file names (under :meth:`CocoFile.photos_root`; no output may replace one)."""
    root = source.photos_root(images_dir)
    return [root / str(img["file_name"]) for img in source.images if img.get("file_name")]


def mask_paths(objects: ObjectsFile, out_dir: PathLike) -> Tuple[List[ImageEntry], List[Path]]:
    """The entries of ``objects`` that have objects, and the mask file of each of their objects
    in order (names as in :func:`predict_objects`)."""
    entries = [e for e in objects.images if e.objects]
    namer = MaskNamer(out_dir)
    return entries, [namer.path_for(e.image, o, i) for e in entries for i, o in enumerate(e.objects)]


def read_photo(entry: ImageEntry, exif_transpose: bool) -> np.ndarray:
    """The photo of a points-file entry, checked against the entry's ``height``/``width``."""
    rgb = read_image(entry.image, exif_transpose=exif_transpose)
    if entry.height is not None and (entry.height, entry.width) != rgb.shape[:2]:
        raise MismatchError(f"{entry.image} is {rgb.shape[1]}x{rgb.shape[0]} but the points "
                            f"file says {entry.width}x{entry.height}")
    return rgb


_NO_CLICKS = np.zeros((0, 2))


def per_object(clicks: Sequence[Optional[np.ndarray]]) -> Optional[List[np.ndarray]]:
    """One image's per-object correction clicks (``None`` or ``(k, 2)`` ``[y, x]`` each) as
    :meth:`DextrModel.predict_iter` takes them: ``None`` when no object has any."""
    out = [_NO_CLICKS if c is None else c for c in clicks]
    return out if any(len(c) for c in out) else None


def entry_clicks(entry: ImageEntry) -> Tuple[np.ndarray, Optional[List[np.ndarray]], Optional[List[np.ndarray]]]:
    """A points-file entry's clicks as :meth:`DextrModel.predict_iter` takes them: its objects'
    ``(n, 4, 2)`` ``[y, x]`` extreme points, and their positive and negative corrections
    (:func:`per_object`)."""
    objs = entry.objects
    return (np.stack([o.points for o in objs]), per_object([o.positive for o in objs]),
            per_object([o.negative for o in objs]))


def check_negatives(model: DextrModel, negatives: Iterable[Optional[np.ndarray]]) -> None:
    """Refuse before any work the negative clicks (``None`` or ``(k, 2)`` per object) of a
    model that takes none (:class:`~dextr_lib.errors.CorrectionError`, saying how to get one)."""
    model.preprocess.check_negatives([n for n in negatives if n is not None])


def _scored_masks(
    model: DextrModel, photos: Iterable[Tuple[np.ndarray, Sequence[Tuple[Any, np.ndarray]]]],
    threshold: float, **kw: Any,
) -> Iterator[Tuple[Any, np.ndarray, np.ndarray, float]]:
    """``(*entry, binary mask, score)`` per object entry of ``photos``, streamed through the engine.

    Args:
        photos: ``(rgb, [entry, ...])`` per photo, read lazily (a photo is read when the engine
            needs it, objects batched across photos); an entry is ``(tag, (4, 2) [y, x] points,
            positive, negative)`` with ``None`` or ``(k, 2)`` ``[y, x]`` correction clicks.
        threshold: in ``[0, 1]``.
        kw: ``batch_size``, ``precision``... as for :meth:`DextrModel.predict_iter`.
    """
    waiting: deque = deque()  # the engine reads ahead of the masks it yields: the entries wait here

    def items() -> Iterator[tuple]:
        for rgb, objs in photos:
            waiting.extend(objs)
            clicks = [per_object([o[k] for o in objs]) for k in (2, 3)]
            yield (rgb, np.stack([o[1] for o in objs]), *clicks)

    for prob in model.predict_iter(items(), threshold=None, **kw):
        yield (*waiting.popleft(), *mask_and_score(prob, threshold))


def predict_points_file(
    model,
    objects,
    out_path: PathLike,
    *,
    category: str = "object",
    polygons: bool = False,
    threshold: Optional[float] = None,
    batch_size: Optional[int] = None,
    precision: str = "fp32",
    on_progress: Optional[Callable[[int, int], None]] = None,
    images_dir: Optional[PathLike] = None,
) -> CocoFile:
    """Predict every object of a parsed ``objects.json`` into a COCO instances file (not saved).

    Args:
        model: a :class:`~dextr_lib.model.DextrModel`.
        objects: from :func:`dextr_lib.formats.objects.read_objects`; every entry with objects needs a photo.
        out_path: where the file will be saved.
        category: the category of every object.
        polygons: polygon segmentations instead of exact RLE.
        threshold: binary masks are ``prob >= threshold`` (default: the model's).
        images_dir: the images root that ``file_name`` entries are relative to (default: the
            photos' common folder, :func:`~dextr_lib.formats.coco.common_folder`).

    Returns:
        A :class:`CocoFile` (its ``images_root`` set): one image per photo, one annotation per
        object with its mask, the clicks as ``extreme_points`` (and its correction clicks as
        ``positive_points``/``negative_points``) and ``score`` (mean probability over the mask).

    Raises:
        DatasetError: an entry without a photo, a photo that does not exist or lies outside
            ``images_dir`` (checked before any work).
        CorrectionError: as for :func:`predict_objects`.
    """
    check_photos(objects)
    check_negatives(model, (o.negative for e in objects.images for o in e.objects))
    thr = resolve_threshold(threshold, model.preprocess)
    cf = CocoFile(path=out_path)
    cid = cf.category_id(category)
    photo_paths = [e.image for e in objects.images if e.objects]
    root = Path(images_dir) if images_dir is not None else common_folder(photo_paths)
    names = {p: image_file_name(p, root) for p in photo_paths}  # refuses a photo outside root, at once
    cf.images_root = root
    total = sum(len(e.objects) for e in objects.images)

    def photos() -> Iterator[Tuple[np.ndarray, List[Tuple[Any, np.ndarray]]]]:
        for entry in objects.images:
            if entry.objects:
                rgb = read_photo(entry, objects.exif_transpose)
                iid = cf.add_image(names[entry.image], *rgb.shape[:2])
                last = len(entry.objects) - 1
                yield rgb, [((iid, i == last), o.points, o.positive, o.negative)
                            for i, o in enumerate(entry.objects)]

    done = 0
    for (iid, last), points, pos, neg, mask, score in _scored_masks(model, photos(), thr, batch_size=batch_size,
                                                                    precision=precision):
        cf.add_annotation(annotation_from_mask(mask, ann_id=None, image_id=iid, category_id=cid,
                                               points_yx=points, score=score, polygons=polygons,
                                               positive_yx=pos, negative_yx=neg))
        done += 1
        if last and on_progress is not None:  # progress per photo, as its last mask comes
            on_progress(done, total)
    return cf


def predict_coco(
    model,
    source: CocoFile,
    out_path: PathLike,
    *,
    images_dir: Optional[PathLike] = None,
    points_from: str = "annotations",
    polygons: bool = False,
    threshold: Optional[float] = None,
    batch_size: Optional[int] = None,
    precision: str = "fp32",
    on_progress: Optional[Callable[[int, int], None]] = None,
    on_warning: Optional[Callable[[str], None]] = None,
) -> CocoFile:
    """Predict the mask of every annotation of a COCO file; a new file (not saved) holds them.

    The clicks of an annotation are its ``extreme_points`` and its correction clicks
    ``positive_points``/``negative_points`` (with ``points_from="annotations"``), else the
    extreme points of its segmentation by the paper's rule (:func:`coco_clicks`). Crowd annotations, and
    annotations with neither, are left out (reported through ``on_warning``). The new file keeps
    the images, categories and each annotation's id, image, category and other fields; it
    replaces ``segmentation``, ``area``, ``bbox``, the clicks and ``score``.

    Args:
        model: a :class:`~dextr_lib.model.DextrModel`.
        source: the input file (:meth:`CocoFile.load`).
        out_path: where the new file will be saved (its images keep their ``file_name``; save it
            where the same images folder applies, or pass that folder when reading it).
        images_dir: folder of the images (default: the input file's folder).
        points_from: ``"annotations"`` or ``"masks"``.
        polygons: polygon segmentations instead of exact RLE.
        threshold: binary masks are ``prob >= threshold`` (default: the model's).

    Raises:
        DatasetError: a missing image file (named), a malformed segmentation or extreme_points.
        CorrectionError: as for :func:`predict_objects`.
    """
    thr = resolve_threshold(threshold, model.preprocess)
    root, jobs = coco_jobs(source, images_dir=images_dir, points_from=points_from, on_warning=on_warning)
    objs = [[((img, ann, k == len(todo) - 1), *clicks) for k, (ann, *clicks) in enumerate(todo)]
            for img, todo in jobs]
    check_negatives(model, (o[3] for image_objs in objs for o in image_objs))
    out = coco_output(source, out_path)
    out.images_root = root  # the new file names the same photos, relative to the same folder
    total = sum(len(t) for _, t in jobs)
    photos = ((read_coco_image(root / str(img["file_name"]), img["height"], img["width"]), image_objs)
              for (img, _), image_objs in zip(jobs, objs))
    done = 0
    for (img, ann, last), pts, pos, neg, mask, score in _scored_masks(model, photos, thr, batch_size=batch_size,
                                                                      precision=precision):
        out.add_annotation(coco_annotation(img, ann, pts, mask, score, polygons, positive=pos, negative=neg))
        done += 1
        if last and on_progress is not None:  # progress per image, as its last mask comes
            on_progress(done, total)
    return out


#: One COCO image's objects to predict: ``(image entry, [(annotation, (4, 2) [y, x] points,
#: (k, 2) [y, x] positive and negative corrections (:func:`coco_clicks`)), ...])``.
CocoJob = Tuple[dict, List[Tuple[dict, np.ndarray, np.ndarray, np.ndarray]]]


def coco_jobs(
    source: CocoFile, *, images_dir: Optional[PathLike] = None, points_from: str = "annotations",
    on_warning: Optional[Callable[[str], None]] = None,
) -> Tuple[Path, List[CocoJob]]:
    """The objects of a COCO file that :func:`predict_coco` predicts, image by image, and the
    folder its images are read from (arguments as for :func:`predict_coco`).

    Raises:
        DatasetError: a missing image file (named), a malformed segmentation, extreme_points or
            correction clicks.
    """
    if points_from not in ("annotations", "masks"):
        raise DatasetError(f"points_from must be 'annotations' or 'masks', got {points_from!r}")
    warn = on_warning or (lambda msg: None)
    root = source.photos_root(images_dir)
    jobs: List[CocoJob] = []
    crowd = no_points = 0
    for img in source.images:
        todo = []
        anns = source.annotations_of(img["id"])
        check_objects(len(anns), f"{source._name()}: image {img['id']}")  # before decoding any
        for ann in anns:
            if ann.get("iscrowd", 0):
                crowd += 1
                continue
            where = f"{source._name()}: annotation {ann['id']}"
            pts = None
            if points_from == "annotations" and ann.get("extreme_points") is not None:
                pts = extreme_points_from_coco(ann["extreme_points"], where=f"{where} extreme_points")
            elif ann.get("segmentation"):
                mask = decode_segmentation(ann["segmentation"], img["height"], img["width"], where=where)
                if mask.any():
                    pts = extreme_points_from_mask(mask).astype(np.float64)
            if pts is None:
                no_points += 1
                continue
            todo.append((ann, pts, *coco_clicks(ann, points_from)))
        if todo:
            jobs.append((img, todo))
    missing = [str(root / str(img["file_name"])) for img, _ in jobs
               if not (root / str(img["file_name"])).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"image file not found: {missing[0]}{more}; the images of "
                           f"{source._name()} are looked for in {root} (set the images folder)")
    if crowd:
        warn(f"{crowd} crowd annotations (iscrowd=1) are not objects and are left out")
    if no_points:
        warn(f"{no_points} annotations have neither extreme_points nor a non-empty segmentation "
             "and are left out")
    return root, jobs


def coco_output(source: CocoFile, out_path: PathLike) -> CocoFile:
    """The new file :func:`predict_coco` fills: ``source``'s images, categories and other
    top-level fields, no annotations yet."""
    data = source.to_dict()
    return CocoFile({**{k: v for k, v in data.items() if k != "annotations"}, "annotations": []},
                    path=out_path)


def coco_annotation(img: dict, ann: dict, points: np.ndarray, mask: np.ndarray, score: float,
                    polygons: bool, *, positive: Optional[np.ndarray] = None,
                    negative: Optional[np.ndarray] = None) -> dict:
    """``ann`` with its predicted ``(H, W)`` bool ``mask``: segmentation, area, bbox, the
    ``(4, 2)`` ``[y, x]`` clicks as extreme_points, the ``(k, 2)`` ``[y, x]`` correction clicks
    it was predicted with (none: the old ones are dropped) and the score replaced, other fields kept."""
    new = annotation_from_mask(mask, ann_id=ann["id"], image_id=img["id"], category_id=ann["category_id"],
                               points_yx=points, score=score, polygons=polygons,
                               positive_yx=positive, negative_yx=negative)
    return {**{k: v for k, v in ann.items() if k not in CLICK_FIELDS}, **new}


def coco_clicks(ann: dict, points_from: str = "annotations") -> Tuple[np.ndarray, np.ndarray]:
    """A COCO annotation's positive and negative correction clicks, ``(k, 2)`` ``[y, x]`` each,
    where its ``extreme_points`` are the clicks (``points_from="annotations"``); none where the
    points come from its mask (the corrections were made for other extreme points)."""
    if points_from != "annotations" or ann.get("extreme_points") is None:
        return _NO_CLICKS, _NO_CLICKS
    pos, neg = (clicks_from_coco(ann.get(key), where=f"annotation {ann.get('id')}: {key!r}")
                for key in CLICK_FIELDS)
    return pos, neg
