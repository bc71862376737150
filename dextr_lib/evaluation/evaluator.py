"""Evaluate a DEXTR model on every object of a dataset, next to two baselines that need no network.

For each object, four extreme points are taken from its ground-truth mask by the paper's rule
(deterministic), optionally jittered (simulated annotators), or read from an ``objects.json``
points file (matched by :class:`dextr_lib.evaluation.matching.PointsMatcher`). The model's mask is
compared with the ground truth (IoU and the DAVIS boundary F-measure, ignore pixels left out),
and so are the baselines of :mod:`dextr_lib.evaluation.baselines` built from the same points.

Objects whose points span zero height or width (one-pixel-thin objects) cannot be cropped by
DEXTR; they are **skipped** for the model and the baselines alike (so all three are averaged
over the same objects) and listed in :attr:`EvalReport.skipped` with the reason.

Thresholds: the model's probabilities are binarised at each threshold of a sweep; the *main*
threshold (``threshold``, default: the model's profile threshold, 0.5 for new models) gives the
headline numbers such as ``mean_iou``; ``thresholds`` only add sweep rows and never change the
main one. The report and its exports live in :mod:`dextr_lib.evaluation.report`.
"""
from __future__ import annotations

import heapq
import time
from collections import deque
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..core.geometry import as_points_array, extreme_points_from_mask, jitter_points
from ..errors import DatasetError, InvalidPointsError, InvalidValueError
from ..inference.engine import check_threshold, resolve_threshold
from .baselines import BASELINE_MASKS, BASELINES, box_mask, quadrilateral_mask
from .matching import PointsMatcher
from .metrics import boundary_f, iou
from .noc import FIRST_CLICK, PredictFn, check_clicks, click_curve
from .report import CSV_COLUMNS, EvalReport, ObjectResult, SkippedObject, WorstCase, json_safe

ProgressFn = Optional[Callable[[int, int], None]]

__all__ = [
    "BASELINES", "CSV_COLUMNS", "EvalReport", "ObjectResult", "SkippedObject", "WorstCase",
    "box_mask", "evaluate", "quadrilateral_mask",
]


# -- evaluation ----------------------------------------------------------------------------------
def evaluate(
    model,
    dataset,
    *,
    thresholds: Sequence[float] = (),
    threshold: Optional[float] = None,
    jitter: float = 0.0,
    seed: Optional[int] = None,
    points_file=None,
    batch_size: Optional[int] = None,
    device=None,
    precision: str = "fp32",
    runtime: Optional[str] = None,
    boundary_tolerance: Optional[float] = None,
    limit: Optional[int] = None,
    keep_worst: int = 0,
    clicks: Optional[int] = None,
    predict_fn: Optional[PredictFn] = None,
    on_progress: ProgressFn = None,
    on_warning: Optional[Callable[[str], None]] = None,
) -> EvalReport:
    """Evaluate ``model`` on every object of ``dataset`` (and the two baselines).

    Each image is decoded once; objects are batched across images for the network.

    Args:
        model: a :class:`~dextr_lib.model.DextrModel`.
        dataset: an :class:`~dextr_lib.data.ObjectDataset` (anything with ``objects``,
            ``image_groups()``, ``read_image(path)`` and ``read_targets(path)``). Where it has
            ``annotated_points(record)`` (COCO ``extreme_points``), those are the clicks of the
            objects that have them; the others get points from their masks.
        thresholds: extra probability thresholds to sweep.
        threshold: the main threshold (default: the model's profile threshold).
        jitter: std in pixels of Gaussian noise added to the ground-truth extreme points
            (clipped into the image); 0: the paper's deterministic points.
        seed: random seed of the jitter (objects are jittered in dataset order, so results do
            not depend on the batch size).
        points_file: a parsed ``objects.json`` (:func:`dextr_lib.formats.objects.read_objects`);
            objects are matched by image, target file and label. Excludes ``jitter``.
        batch_size: objects per network forward (default: as for ``DextrModel.predict``).
        device: run on this device (default: the model's).
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (see :meth:`DextrModel.predict`).
        runtime: ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (default: the model's).
        boundary_tolerance: boundary F match distance in pixels (default: 0.008 x diagonal).
        limit: evaluate only the first ``limit`` objects.
        keep_worst: keep the masks of this many worst objects (for
            :func:`dextr_lib.evaluation.report.write_worst_overlays`).
        clicks: run the interactive protocol of :mod:`dextr_lib.evaluation.noc` up to this many
            clicks (the four extreme points, then ``clicks - 4`` simulated corrections at the
            main threshold); each result gets ``click_ious`` and the report NoC numbers.
        predict_fn: how a correction is predicted (see :data:`~dextr_lib.evaluation.noc.PredictFn`;
            default: ``model.predict_image`` with the corrections, on the same device, precision
            and runtime).
        on_progress: ``(done, total)`` objects.
        on_warning: receives warnings (a points file whose points refer to EXIF-rotated photos).

    Returns:
        An :class:`EvalReport`.

    Raises:
        InvalidPointsError: negative jitter, or jitter together with a points file.
        InvalidValueError: a threshold outside [0, 1], a batch size or limit below 1.
        DatasetError: an image whose targets have a different size.
    """
    if jitter < 0:
        raise InvalidPointsError(f"jitter must be >= 0 pixels, got {jitter}")
    if jitter > 0 and points_file is not None:
        raise InvalidPointsError("jitter and a points file exclude each other: the points "
                                 "file's points are used as they are")
    main = resolve_threshold(threshold, model.preprocess)
    sweep = sorted({main, *(check_threshold(t, "every swept threshold") for t in thresholds)})
    if limit is not None and limit < 1:
        raise InvalidValueError(f"limit must be >= 1 object, got {limit}")
    if clicks is not None:
        clicks = check_clicks(clicks)
        takes_negatives = model.takes_negatives
        if predict_fn is None:
            predict_fn = _model_predict_fn(model, main, batch_size, precision, runtime)
    engine = model.engine(batch_size=batch_size, device=device, precision=precision, runtime=runtime)
    kind = getattr(dataset, "kind", None)
    matcher = PointsMatcher(points_file, dataset.objects, kind) if points_file is not None else None
    if points_file is not None and points_file.exif_transpose and on_warning is not None:
        on_warning("the points file's points refer to EXIF-rotated photos, but labels refer to the "
                   "stored pixels; photos with an EXIF rotation will not line up")
    rng = np.random.default_rng(seed)
    annotated = getattr(dataset, "annotated_points", None)
    n_annotated = 0

    groups = dataset.image_groups()
    if limit is not None:
        groups = _limit_groups(groups, limit)
    total = sum(len(idx) for _, idx in groups)
    results: List[ObjectResult] = []
    skipped: List[SkippedObject] = []
    worst_heap: list = []  # (-iou, -index, WorstCase); its top is the best of the kept worst
    reading = 0.0  # seconds spent reading the dataset inside the engine's pull of items
    t_start = time.perf_counter()
    # Each object's context waits here from when its image is handed to the engine (which reads
    # ahead to fill a batch across images) until its mask comes out; None marks an image's end.
    waiting: deque = deque()

    def items() -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        nonlocal reading, n_annotated
        for image_path, indices in groups:
            t0 = time.perf_counter()
            rgb = dataset.read_image(image_path)
            targets = dataset.read_targets(image_path)
            todo = []
            for i in indices:
                rec = dataset.objects[i]
                gt = targets.object_mask(rec)
                if gt.shape != rgb.shape[:2]:
                    raise DatasetError(
                        f"{rec.target} is {gt.shape[1]}x{gt.shape[0]} but its image {image_path} is "
                        f"{rgb.shape[1]}x{rgb.shape[0]}; targets must match their images pixel for pixel"
                    )
                given = annotated(rec) if annotated is not None and matcher is None else None
                if matcher is not None:
                    pts, reason = matcher.points_for(rec)
                elif given is not None:  # clicks stored with the annotation (COCO extreme_points)
                    pts, reason = given, ""
                    n_annotated += 1
                    if jitter > 0:
                        pts = jitter_points(pts, jitter, rng, gt)
                elif gt.any():
                    pts, reason = extreme_points_from_mask(gt).astype(np.float64), ""
                    if jitter > 0:
                        pts = jitter_points(pts, jitter, rng, gt)
                else:
                    pts, reason = None, "the object has no pixels"
                if pts is not None:
                    try:
                        pts = as_points_array(pts)[0]
                    except InvalidPointsError:
                        pts, reason = None, "its extreme points span zero height or width (a one-pixel-thin object)"
                if pts is None:
                    skipped.append(SkippedObject(i, rec.image, reason))
                    continue
                todo.append((targets, i, rec, gt, pts, rgb if clicks is not None else None))
            waiting.extend(todo)
            waiting.append(None)
            reading += time.perf_counter() - t0
            if todo:
                yield rgb, np.stack([t[4] for t in todo])

    def report_progress() -> None:
        if on_progress is not None:
            on_progress(len(results) + len(skipped), total)

    scoring = 0.0
    clicking, click_seconds, n_corrections, n_unused = 0.0, 0.0, 0, 0
    t_model = time.perf_counter()
    for prob in engine.run(items()):
        t0 = time.perf_counter()
        while waiting[0] is None:  # images whose objects are all done (or skipped)
            waiting.popleft()
            report_progress()
        targets, i, rec, gt, pts, rgb = waiting.popleft()
        res, pred_main = _score(i, rec, gt, targets.ignore, pts, prob, sweep, main, boundary_tolerance)
        if clicks is not None:
            t1 = time.perf_counter()
            res.click_ious, made, unused, spent = click_curve(
                predict_fn, rgb, gt, targets.ignore, pts, prob, clicks=clicks, threshold=main,
                takes_negatives=takes_negatives)
            res.corrections = [[c.x, c.y, c.positive] for c in made]
            n_corrections += len(made)
            n_unused += unused
            click_seconds += spent
            dt = time.perf_counter() - t1
            clicking += dt
            t0 += dt  # scoring leaves the corrections out
        results.append(res)
        if keep_worst > 0:
            case = (-res.iou[main], -i, WorstCase(res, pred_main, gt, targets.ignore, pts))
            if len(worst_heap) < keep_worst:
                heapq.heappush(worst_heap, case)
            elif case[:2] > worst_heap[0][:2]:
                heapq.heapreplace(worst_heap, case)
        scoring += time.perf_counter() - t0
    # the engine's own time: crops, network and paste-back of the extreme points' masks, not
    # reading, scoring nor the corrections
    model_seconds = time.perf_counter() - t_model - reading - scoring - clicking
    if on_progress is not None:
        on_progress(total, total)
    seconds = time.perf_counter() - t_start

    interactive = None
    if clicks is not None:
        interactive = {
            "clicks": clicks, "first_click": FIRST_CLICK, "threshold": main,
            "takes_negatives": takes_negatives, "corrections": n_corrections,
            "corrections_not_taken": n_unused,
            # the whole click loop (annotator, network, IoU) and its network part
            "seconds": clicking, "network_seconds": click_seconds,
            "seconds_per_correction": clicking / n_corrections if n_corrections else None,
        }
    worst = [c[2] for c in sorted(worst_heap, key=lambda c: (-c[0], -c[1]))]
    pp = model.preprocess
    return EvalReport(
        results=results,
        skipped=skipped,
        threshold=main,
        thresholds=sweep,
        seconds=seconds,
        model_seconds=model_seconds,
        settings={
            "point_source": "points_file" if matcher is not None else ("jitter" if jitter > 0 else "ground_truth"),
            "annotated_points": n_annotated,
            "jitter": jitter, "seed": seed, "threshold": main, "thresholds": sweep,
            "batch_size": engine.batch_size, "device": str(model.device),
            "precision": engine.runner.precision,
            "runtime": runtime or model.runtime,
            "limit": limit,
            "boundary_tolerance": "0.008 x image diagonal" if boundary_tolerance is None else boundary_tolerance,
        },
        model={"arch": model.arch, "preprocess": pp.to_dict(), "meta": json_safe(dict(model.meta)),
               "source": getattr(model, "source", None)},
        dataset={
            "kind": kind,
            **json_safe(dict(getattr(dataset, "spec", None) or {})),
            "images": len(groups),
            "objects": total,
            "ignore_index": getattr(dataset, "ignore_index", None),
        },
        worst=worst,
        interactive=interactive,
    )


def _model_predict_fn(model, threshold, batch_size, precision, runtime) -> PredictFn:
    """Corrections predicted by ``model.predict_image``, one object at a time (each click
    depends on the mask of the one before)."""
    def predict(image, points, positive, negative):
        return model.predict_image(
            image, points[None], positive=[positive], negative=[negative] if len(negative) else None,
            batch_size=batch_size, precision=precision, runtime=runtime)[0]
    return predict


def _limit_groups(groups, limit: int):
    out, left = [], limit
    for path, idx in groups:
        if left <= 0:
            break
        out.append((path, idx[:left]))
        left -= len(idx[:left])
    return out


def _score(i, rec, gt, ignore, pts, prob, sweep, main, tolerance) -> Tuple[ObjectResult, np.ndarray]:
    """Scores of one object; also returns the prediction at the main threshold."""
    ious, fs, pred_main = {}, {}, None
    for t in sweep:
        pred = prob >= t
        ious[t] = iou(pred, gt, ignore)
        fs[t] = boundary_f(pred, gt, ignore, tolerance=tolerance)
        if t == main:
            pred_main = pred
    baselines = {}
    for name, fn in BASELINE_MASKS.items():
        m = fn(pts, gt.shape)
        baselines[name] = {"iou": iou(m, gt, ignore), "boundary_f": boundary_f(m, gt, ignore, tolerance=tolerance)}
    res = ObjectResult(
        index=i, image=rec.image, label=rec.label, region=rec.region,
        class_name=rec.class_name, area=rec.area, iou=ious, boundary_f=fs, baselines=baselines,
    )
    return res, pred_main
