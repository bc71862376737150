"""Evaluate a DEXTR model on every object of a dataset, next to two baselines that need no network.

For each object, four extreme points are taken from its ground-truth mask by the paper's rule
(deterministic), optionally jittered (simulated annotators), or read from an ``objects.json``
points file. The model's mask is compared with the ground truth (IoU and the DAVIS boundary
F-measure, ignore pixels left out), and so are two baselines built from the same points:

* ``box``: the filled bounding box of the points;
* ``quadrilateral``: the filled quadrilateral through the four points.

Objects whose points span zero height or width (one-pixel-thin objects) cannot be cropped by
DEXTR; they are **skipped** for the model and the baselines alike (so all three are averaged
over the same objects) and listed in :attr:`EvalReport.skipped` with the reason.

Thresholds: the model's probabilities are binarised at each threshold of a sweep; the *main*
threshold (default: the model's profile threshold, 0.5) gives the headline numbers such as
``mean_iou``, the others appear in :attr:`EvalReport.sweep` and as extra CSV rows.
"""
from __future__ import annotations

import csv
import heapq
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import DatasetError, InvalidPointsError, InvalidValueError
from .fileio import atomic_write_text
from .geometry import as_points_array, extreme_points_from_mask, jitter_points
from .metrics import boundary_f, group_means, iou, summarize
from .model import check_batch_size, check_threshold

ProgressFn = Optional[Callable[[int, int], None]]
BASELINES = ("box", "quadrilateral")
REPORT_FORMAT = "dextr-eval"
REPORT_FORMAT_VERSION = 1
CSV_COLUMNS = (
    "image", "object", "label", "region", "class", "area", "threshold", "iou", "boundary_f",
    "box_iou", "quadrilateral_iou", "box_boundary_f", "quadrilateral_boundary_f",
)


# -- baselines -----------------------------------------------------------------------------------
def box_mask(points: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """The filled bounding box of the points (baseline 1).

    Args:
        points: ``(4, 2)`` ``[y, x]`` pixel indices (floats are rounded).
        shape: ``(H, W)`` of the image.

    Returns:
        ``(H, W)`` bool mask covering the pixels ``min..max`` of the points, inclusive.
    """
    p = np.round(np.asarray(points, dtype=np.float64)).astype(np.int64)
    h, w = int(shape[0]), int(shape[1])
    y0, x0 = np.clip(p.min(axis=0), 0, [h, w])
    y1, x1 = np.clip(p.max(axis=0) + 1, 0, [h, w])
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def quadrilateral_mask(points: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """The filled quadrilateral through the four points (baseline 2).

    The points are joined in angular order around their centre (left, top, right, bottom for
    extreme points), so any input order gives the same convex-when-possible polygon. Pixels
    whose centres lie inside, plus the pixels along its edges (so the points themselves are
    always covered, and a degenerate quadrilateral is a line rather than nothing).

    Args:
        points: ``(4, 2)`` ``[y, x]`` pixel indices.
        shape: ``(H, W)`` of the image.

    Returns:
        ``(H, W)`` bool mask.
    """
    from skimage.draw import line, polygon

    p = np.asarray(points, dtype=np.float64)
    centre = p.mean(axis=0)
    order = np.argsort(np.arctan2(p[:, 0] - centre[0], p[:, 1] - centre[1]))
    p = p[order]
    h, w = int(shape[0]), int(shape[1])
    m = np.zeros((h, w), dtype=bool)
    rr, cc = polygon(p[:, 0], p[:, 1], shape=(h, w))
    m[rr, cc] = True
    v = np.round(p).astype(np.int64)
    for k in range(4):
        rr, cc = line(v[k, 0], v[k, 1], v[(k + 1) % 4, 0], v[(k + 1) % 4, 1])
        keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        m[rr[keep], cc[keep]] = True
    return m


BASELINE_MASKS = {"box": box_mask, "quadrilateral": quadrilateral_mask}


# -- results -------------------------------------------------------------------------------------
@dataclass
class ObjectResult:
    """Scores of one object.

    Attributes:
        index: the object's index in ``dataset.objects``.
        image, label, region, class_name, area: from the dataset's record.
        iou, boundary_f: the model's scores per threshold.
        baselines: ``{"box": {"iou", "boundary_f"}, "quadrilateral": {...}}``.
    """

    index: int
    image: str
    label: int
    region: int
    class_name: Optional[str]
    area: int
    iou: Dict[float, float]
    boundary_f: Dict[float, float]
    baselines: Dict[str, Dict[str, float]]


@dataclass
class SkippedObject:
    """An object that was not evaluated, and why."""

    index: int
    image: str
    reason: str


@dataclass
class WorstCase:
    """Everything needed to draw one of the worst objects: masks are ``(H, W)`` bool,
    ``points`` ``(4, 2)`` ``[y, x]``."""

    result: ObjectResult
    prediction: np.ndarray
    ground_truth: np.ndarray
    ignore: Optional[np.ndarray]
    points: np.ndarray


@dataclass
class EvalReport:
    """What :func:`evaluate` found; ``to_dict``/``to_json``/``to_csv`` export it.

    Attributes:
        results: per-object scores (evaluated objects only).
        skipped: objects left out (zero-size points, no points in the points file).
        threshold: the main threshold (headline numbers); thresholds: the sweep, ascending.
        seconds: wall-clock time of the evaluation (reading, network, metrics).
        model_seconds: the part spent in the network (pre-processing and pasting included).
        settings, model, dataset: plain descriptions saved in the JSON report.
        worst: the worst objects at the main threshold, worst first (if asked for).
    """

    results: List[ObjectResult]
    skipped: List[SkippedObject]
    threshold: float
    thresholds: List[float]
    seconds: float
    model_seconds: float
    settings: Dict[str, Any] = field(default_factory=dict)
    model: Dict[str, Any] = field(default_factory=dict)
    dataset: Dict[str, Any] = field(default_factory=dict)
    worst: List[WorstCase] = field(default_factory=list)

    # -- summaries --
    @property
    def n_objects(self) -> int:
        return len(self.results)

    @property
    def objects_per_s(self) -> float:
        """Evaluated objects per second of wall-clock time (NaN when nothing was timed)."""
        return self.n_objects / self.seconds if self.seconds > 0 else math.nan

    @property
    def mean_iou(self) -> float:
        """The model's mean IoU over objects at the main threshold (the paper's metric)."""
        return self.summary()["mean_iou"]

    def _method_scores(self, method: str, threshold: float) -> Tuple[List[float], List[float]]:
        if method == "model":
            return ([r.iou[threshold] for r in self.results],
                    [r.boundary_f[threshold] for r in self.results])
        return ([r.baselines[method]["iou"] for r in self.results],
                [r.baselines[method]["boundary_f"] for r in self.results])

    def summary(self, method: str = "model", threshold: Optional[float] = None) -> Dict[str, Any]:
        """Headline numbers of ``method`` (``"model"``, ``"box"``, ``"quadrilateral"``).

        Returns:
            ``{"objects", "mean_iou", "median_iou", "per_image_mean_iou", "above_0.85",
            "above_0.90", "mean_boundary_f"}`` (NaN when no object was evaluated).
        """
        t = self.threshold if threshold is None else threshold
        ious, fs = self._method_scores(method, t)
        s = summarize(ious, [r.image for r in self.results])
        return {
            "objects": s["count"],
            "mean_iou": s["mean"],
            "median_iou": s["median"],
            "per_image_mean_iou": s["per_image_mean"],
            "above_0.85": s["above_0.85"],
            "above_0.90": s["above_0.90"],
            "mean_boundary_f": float(np.mean(fs)) if fs else math.nan,
        }

    @property
    def sweep(self) -> List[Dict[str, Any]]:
        """The model's summary at each threshold of the sweep."""
        return [{"threshold": t, **self.summary("model", t)} for t in self.thresholds]

    def per_class(self) -> Dict[str, Dict[str, Any]]:
        """Mean IoU per class (model at the main threshold and baselines); empty when the
        dataset has no classes."""
        if not any(r.class_name is not None for r in self.results):
            return {}
        classes = [r.class_name if r.class_name is not None else "(none)" for r in self.results]
        counts: Dict[str, int] = {}
        for c in classes:
            counts[c] = counts.get(c, 0) + 1
        out: Dict[str, Dict[str, Any]] = {c: {"objects": n} for c, n in sorted(counts.items())}
        for method in ("model",) + BASELINES:
            ious, fs = self._method_scores(method, self.threshold)
            prefix = "" if method == "model" else f"{method}_"
            for c, m in group_means(ious, classes).items():
                out[c][f"{prefix}mean_iou"] = m
            if method == "model":
                for c, m in group_means(fs, classes).items():
                    out[c]["mean_boundary_f"] = m
        return out

    # -- export --
    def to_dict(self) -> Dict[str, Any]:
        """The JSON report: ``summary`` (key ``mean_iou`` etc., main threshold), ``baselines``,
        ``sweep``, ``per_class``, ``throughput``, ``settings``, ``model``, ``dataset``, ``skipped``."""
        summary = self.summary()
        summary.update(
            threshold=self.threshold,
            images=len({r.image for r in self.results}),
            skipped=len(self.skipped),
        )
        data = {
            "format": REPORT_FORMAT,
            "format_version": REPORT_FORMAT_VERSION,
            "summary": summary,
            "baselines": {b: self.summary(b) for b in BASELINES},
            "sweep": self.sweep,
            "per_class": self.per_class(),
            "throughput": {
                "objects_per_s": self.objects_per_s,
                "seconds": self.seconds,
                "model_seconds": self.model_seconds,
            },
            "settings": self.settings,
            "model": self.model,
            "dataset": self.dataset,
            "skipped": [vars(s) for s in self.skipped],
        }
        return _json_safe(data)

    def to_json(self, path: Optional[Union[str, os.PathLike]] = None) -> str:
        """The JSON report as text (NaN written as null); written atomically to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def csv_rows(self) -> List[Dict[str, Any]]:
        """One row per object and threshold (main threshold first), columns :data:`CSV_COLUMNS`."""
        rows = []
        ordered = [self.threshold] + [t for t in self.thresholds if t != self.threshold]
        for t in ordered:
            for r in self.results:
                rows.append({
                    "image": r.image, "object": r.index, "label": r.label, "region": r.region,
                    "class": r.class_name if r.class_name is not None else "", "area": r.area,
                    "threshold": t, "iou": r.iou[t], "boundary_f": r.boundary_f[t],
                    "box_iou": r.baselines["box"]["iou"],
                    "quadrilateral_iou": r.baselines["quadrilateral"]["iou"],
                    "box_boundary_f": r.baselines["box"]["boundary_f"],
                    "quadrilateral_boundary_f": r.baselines["quadrilateral"]["boundary_f"],
                })
        return rows

    def to_csv(self, path: Optional[Union[str, os.PathLike]] = None) -> str:
        """Per-object CSV text (see :meth:`csv_rows`); written atomically to ``path`` if given."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.csv_rows():
            writer.writerow({k: (repr(float(v)) if isinstance(v, (float, np.floating)) else v)
                             for k, v in row.items()})
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)  # e.g. a path or tensor in a checkpoint's meta: readable, never a crash




# -- points --------------------------------------------------------------------------------------
def _points_file_lookup(points_file) -> Dict[Tuple[str, Optional[str], Optional[int]], List[np.ndarray]]:
    """``(image, source, label) -> [points, ...]`` from a read ``objects.json`` (paths absolute)."""
    lookup: Dict[Tuple[str, Optional[str], Optional[int]], List[np.ndarray]] = {}
    for entry in points_file.images:
        if entry.image is None:
            continue
        img = os.path.abspath(entry.image)
        for o in entry.objects:
            src = None if o.source is None else os.path.abspath(o.source)
            lookup.setdefault((img, src, o.label), []).append(np.asarray(o.points, dtype=np.float64))
    return lookup


def _file_key(record, kind: str) -> Tuple[str, str, Optional[int]]:
    # mask files hold one object each, so points-from-mask writes no label for them
    label = None if kind == "custom_mask" else record.label
    return os.path.abspath(record.image), os.path.abspath(record.target), label


def _file_points(lookup, record, kind: str, key_counts) -> Tuple[Optional[np.ndarray], str]:
    """The points file's points for a dataset record, or ``(None, reason)``."""
    img, tgt, label = key = _file_key(record, kind)
    if key_counts[key] > 1:
        return None, ("the points file has one object per label but this label has several "
                      "regions in the dataset (build it with whole labels)")
    found = lookup.get((img, tgt, label)) or lookup.get((img, None, label))
    if not found:
        return None, "no points for this object in the points file"
    if len(found) > 1:
        return None, "several objects of the points file match this object"
    return found[0], ""


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
    batch_size: int = 8,
    device=None,
    precision: str = "fp32",
    boundary_tolerance: Optional[float] = None,
    limit: Optional[int] = None,
    keep_worst: int = 0,
    on_progress: ProgressFn = None,
) -> EvalReport:
    """Evaluate ``model`` on every object of ``dataset`` (and the two baselines).

    Each image is decoded once; objects are batched across images for the network.

    Args:
        model: a :class:`~dextr_lib.model.DextrModel`.
        dataset: an :class:`~dextr_lib.datasets.ObjectDataset` (anything with ``objects``,
            ``image_groups()``, ``read_image(path)`` and ``read_targets(path)``).
        thresholds: extra probability thresholds to sweep.
        threshold: the main threshold (default: the model's profile threshold).
        jitter: std in pixels of Gaussian noise added to the ground-truth extreme points
            (clipped into the image); 0: the paper's deterministic points.
        seed: random seed of the jitter (objects are jittered in dataset order, so results do
            not depend on the batch size).
        points_file: a parsed ``objects.json`` (:func:`dextr_lib.points_io.read_objects`);
            objects are matched by image, target file and label. Excludes ``jitter``.
        batch_size: objects per network forward.
        device: run on this device (default: the model's).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :meth:`DextrModel.predict`).
        boundary_tolerance: boundary F match distance in pixels (default: 0.008 x diagonal).
        limit: evaluate only the first ``limit`` objects.
        keep_worst: keep the masks of this many worst objects (for overlays).
        on_progress: ``(done, total)`` objects.

    Returns:
        An :class:`EvalReport`.

    Raises:
        InvalidPointsError: negative jitter, or jitter together with a points file.
        DatasetError: an image whose targets have a different size.
    """
    if jitter < 0:
        raise InvalidPointsError(f"jitter must be >= 0 pixels, got {jitter}")
    if jitter > 0 and points_file is not None:
        raise InvalidPointsError("jitter and a points file exclude each other: the points "
                                 "file's points are used as they are")
    check_batch_size(batch_size)
    main = check_threshold(model.preprocess.threshold if threshold is None else threshold)
    sweep = sorted({main, *(check_threshold(t, "every swept threshold") for t in thresholds)})
    if device is not None:
        model.to(device)
    kind = getattr(dataset, "kind", None)
    lookup = _points_file_lookup(points_file) if points_file is not None else None
    key_counts: Dict[Any, int] = {}
    if lookup is not None:
        for rec in dataset.objects:
            k = _file_key(rec, kind)
            key_counts[k] = key_counts.get(k, 0) + 1
    rng = np.random.default_rng(seed)

    groups = dataset.image_groups()
    if limit is not None:
        groups = _limit_groups(groups, limit)
    total = sum(len(idx) for _, idx in groups)
    results: List[ObjectResult] = []
    skipped: List[SkippedObject] = []
    worst_heap: list = []  # (-iou, -index, WorstCase); its top is the best of the kept worst
    model_seconds = 0.0
    done = 0
    t_start = time.perf_counter()
    pending: List[Tuple[Any, ...]] = []  # (rgb, targets, record index, record, gt, points)

    def flush() -> None:
        nonlocal model_seconds, done
        if not pending:
            return
        t0 = time.perf_counter()
        probs = model.predict(
            [p[0] for p in pending], np.stack([p[5] for p in pending]),
            batch_size=batch_size, threshold=None, precision=precision,
        )
        model_seconds += time.perf_counter() - t0
        for (rgb, targets, i, rec, gt, pts), prob in zip(pending, probs):
            res, pred_main = _score(i, rec, gt, targets.ignore, pts, prob, sweep, main, boundary_tolerance)
            results.append(res)
            if keep_worst > 0:
                case = (-res.iou[main], -i, WorstCase(res, pred_main, gt, targets.ignore, pts))
                if len(worst_heap) < keep_worst:
                    heapq.heappush(worst_heap, case)
                elif case[:2] > worst_heap[0][:2]:
                    heapq.heapreplace(worst_heap, case)
        done += len(pending)
        pending.clear()
        if on_progress is not None:
            on_progress(done + len(skipped), total)

    # Enough objects per predict() call that batches stay full across image boundaries.
    chunk = max(4 * batch_size, 16)
    for image_path, indices in groups:
        rgb = dataset.read_image(image_path)
        targets = dataset.read_targets(image_path)
        for i in indices:
            rec = dataset.objects[i]
            gt = targets.object_mask(rec)
            if gt.shape != rgb.shape[:2]:
                raise DatasetError(
                    f"{rec.target} is {gt.shape[1]}x{gt.shape[0]} but its image {image_path} is "
                    f"{rgb.shape[1]}x{rgb.shape[0]}; targets must match their images pixel for pixel"
                )
            if lookup is not None:
                pts, reason = _file_points(lookup, rec, kind, key_counts)
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
            pending.append((rgb, targets, i, rec, gt, pts))
        if len(pending) >= chunk:
            flush()
    flush()
    if on_progress is not None:
        on_progress(total, total)
    seconds = time.perf_counter() - t_start

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
            "point_source": "points_file" if lookup is not None else ("jitter" if jitter > 0 else "ground_truth"),
            "jitter": jitter, "seed": seed, "threshold": main, "thresholds": sweep,
            "batch_size": batch_size, "device": str(model.device), "precision": precision,
            "limit": limit,
            "boundary_tolerance": "0.008 x image diagonal" if boundary_tolerance is None else boundary_tolerance,
        },
        model={"arch": model.arch, "preprocess": pp.to_dict(), "meta": _json_safe(dict(model.meta))},
        dataset={
            "kind": kind,
            "images": len(groups),
            "objects": total,
            "ignore_index": getattr(dataset, "ignore_index", None),
        },
        worst=worst,
    )


def _limit_groups(groups, limit: int):
    if limit < 1:
        raise InvalidValueError(f"limit must be >= 1 object, got {limit}")
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
