"""The result of an evaluation and its exports: summary, per-class table, threshold sweep,
JSON report, per-object CSV and overlays of the worst objects.

:func:`dextr_lib.evaluation.evaluator.evaluate` fills an :class:`EvalReport`; the CLI only renders it.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import PIL.Image

from ..formats.masks import safe_name, save_image
from ..formats.overlay import draw_overlay
from ..utils.fileio import atomic_open, atomic_write_text
from .baselines import BASELINES
from .metrics import group_means, summarize
from .noc import FIRST_CLICK, NOC_THRESHOLDS, noc, noc_per_class, noc_summary

REPORT_FORMAT = "dextr-eval"
REPORT_FORMAT_VERSION = 1
CSV_COLUMNS = (
    "image", "object", "label", "region", "class", "area", "threshold", "iou", "boundary_f",
    "box_iou", "quadrilateral_iou", "box_boundary_f", "quadrilateral_boundary_f",
)
#: Overlay outline colours of :func:`write_worst_overlays`: ground truth green, prediction red.
GT_COLOR, PRED_COLOR = (40, 220, 60), (255, 40, 40)


@dataclass
class ObjectResult:
    """Scores of one object.

    Attributes:
        index: the object's index in ``dataset.objects``.
        image, label, region, class_name, area: from the dataset's record.
        iou, boundary_f: the model's scores per threshold.
        baselines: ``{"box": {"iou", "boundary_f"}, "quadrilateral": {...}}``.
        click_ious: with ``clicks``, the IoU after clicks 4..K at the main threshold.
        corrections: with ``clicks``, the annotator's clicks 5.. as ``[x, y, positive]``.
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
    click_ious: Optional[List[float]] = None
    corrections: Optional[List[list]] = None


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
        interactive: with ``clicks``, the protocol's settings and timing (``clicks``,
            ``threshold``, ``takes_negatives``, ``corrections``, ``corrections_not_taken``,
            ``seconds``, ``network_seconds``, ``seconds_per_correction``).
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
    interactive: Optional[Dict[str, Any]] = None

    # -- summaries --
    @property
    def n_objects(self) -> int:
        return len(self.results)

    @property
    def objects_per_s(self) -> float:
        """Evaluated objects per second of wall-clock time (NaN when nothing was timed)."""
        return self.n_objects / self.seconds if self.seconds > 0 else math.nan

    @property
    def takes_negatives(self) -> bool:
        """Whether the evaluated model takes negative correction clicks (its profile's
        ``negative_clicks``: a fifth input channel)."""
        return bool(self.model.get("preprocess", {}).get("negative_clicks", False))

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

    def noc(self) -> Optional[Dict[str, Any]]:
        """NoC@80/85/90, objects never reaching 85/90 and mIoU after each click
        (:func:`dextr_lib.evaluation.noc.noc_summary`), or None without ``clicks``."""
        if self.interactive is None:
            return None
        return noc_summary([r.click_ious for r in self.results], self.interactive["clicks"])

    def noc_per_class(self) -> Dict[str, Dict[str, Any]]:
        """:meth:`noc` per class; empty without ``clicks`` or classes."""
        if self.interactive is None or not any(r.class_name is not None for r in self.results):
            return {}
        classes = [r.class_name if r.class_name is not None else "(none)" for r in self.results]
        return noc_per_class([r.click_ious for r in self.results], classes, self.interactive["clicks"])

    # -- export --
    def to_dict(self) -> Dict[str, Any]:
        """The JSON report: ``summary`` (key ``mean_iou`` etc., main threshold), ``baselines``,
        ``sweep``, ``per_class``, ``throughput``, ``settings``, ``model``, ``dataset``, ``skipped``;
        with ``clicks`` also ``interactive`` (its settings and timing, ``noc``, ``over_max``,
        ``miou`` per click count, and all of them ``per_class``)."""
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
        if self.interactive is not None:
            data["interactive"] = {**self.interactive, **self.noc(), "per_class": self.noc_per_class()}
        return json_safe(data)

    def to_json(self, path: Optional[Union[str, os.PathLike]] = None) -> str:
        """The JSON report as text (NaN written as null); written atomically to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @property
    def csv_columns(self) -> Tuple[str, ...]:
        """:data:`CSV_COLUMNS`; with ``clicks`` K also ``noc_80, noc_85, noc_90`` and ``iou_at_4``
        .. ``iou_at_K`` (filled on the main threshold's rows)."""
        if self.interactive is None:
            return CSV_COLUMNS
        k = self.interactive["clicks"]
        return CSV_COLUMNS + tuple(f"noc_{round(100 * t)}" for t in NOC_THRESHOLDS) + tuple(
            f"iou_at_{c}" for c in range(FIRST_CLICK, k + 1))

    def csv_rows(self) -> List[Dict[str, Any]]:
        """One row per object and threshold (main threshold first), columns :attr:`csv_columns`."""
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
                if self.interactive is not None:
                    rows[-1].update(self._click_columns(r) if t == self.threshold else {})
        return rows

    def _click_columns(self, r: ObjectResult) -> Dict[str, Any]:
        k = self.interactive["clicks"]
        out: Dict[str, Any] = {f"noc_{round(100 * t)}": noc(r.click_ious, t, k) for t in NOC_THRESHOLDS}
        out.update({f"iou_at_{c}": v for c, v in enumerate(r.click_ious, FIRST_CLICK)})
        return out

    def to_csv(self, path: Optional[Union[str, os.PathLike]] = None) -> str:
        """Per-object CSV text (see :meth:`csv_rows`); written atomically to ``path`` if given."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.csv_columns, lineterminator="\n")
        writer.writeheader()
        for row in self.csv_rows():
            writer.writerow({k: (repr(float(v)) if isinstance(v, (float, np.floating)) else v)
                             for k, v in row.items()})
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text


def json_safe(v: Any) -> Any:
    """``v`` with NaN/inf as None, numpy scalars as Python numbers, anything else as text."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)  # e.g. a path or tensor in a checkpoint's meta: readable, never a crash


def write_worst_overlays(
    report: EvalReport, folder: Union[str, os.PathLike], read_image: Callable[[str], np.ndarray]
) -> List[Path]:
    """Draw the report's worst objects into ``folder``: ground truth outlined green, prediction
    red, the points in red. Files are ``worst<rank>_iou<iou>_<image stem>_obj<index>.png``.

    Args:
        read_image: reads an image path as ``(H, W, 3)`` uint8 (the dataset's ``read_image``).

    Returns:
        The paths written, worst first.
    """
    folder = Path(folder)
    paths = []
    for rank, case in enumerate(report.worst, 1):
        r = case.result
        img = draw_overlay(read_image(r.image), [case.ground_truth, case.prediction], [None, case.points],
                           alpha=0.0, colors=[GT_COLOR, PRED_COLOR])
        name = f"worst{rank:02d}_iou{r.iou[report.threshold]:.3f}_{safe_name(Path(r.image).stem)}_obj{r.index}.png"
        save_image(PIL.Image.fromarray(img), folder / name)
        paths.append(folder / name)
    return paths


def plot_click_curves(
    curves: Dict[str, Dict[str, float]], path: Union[str, os.PathLike], *, title: str = ""
) -> Path:
    """Plot mIoU against the number of clicks, one line per model, as the field's papers do.

    Args:
        curves: model name -> ``{"4": mIoU after 4 clicks, ..., "K": ...}`` (a report's
            ``noc()["miou"]``, or the ``interactive.miou`` of a saved JSON report).
        path: the PNG to write (atomically).
        title: the plot's title (e.g. the dataset).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    last = FIRST_CLICK
    for name, miou in curves.items():
        ks = sorted(int(k) for k in miou)
        last = max([last] + ks)
        ax.plot(ks, [miou[str(k)] for k in ks], marker="o", markersize=3, label=name)
    ax.set_xlabel("number of clicks (the first 4: extreme points)")
    ax.set_ylabel("mIoU")
    ax.set_xlim(FIRST_CLICK - 0.5, last + 0.5)
    ax.grid(True, alpha=0.3)
    for t in NOC_THRESHOLDS[1:]:  # the NoC@85/90 targets
        ax.axhline(t, color="grey", linestyle=":", linewidth=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
    return Path(path)
