"""Interactive evaluation: IoU after each click and the number of clicks to reach an IoU (NoC).

The protocol of the interactive-segmentation field (RITM's ``isegm/inference/evaluation.py`` and
``utils.py::compute_noc_metric``), with DEXTR's start:

* clicks 1-4 are the object's four extreme points; the first mask exists after click 4;
* clicks 5..K come from the simulated annotator :func:`dextr_lib.core.clicker.next_click`
  applied to the current prediction binarised at the evaluation's main threshold
  (``prob >= threshold``, the model's 0.5 by default; RITM uses ``prob > 0.49``), never on a
  pixel already clicked (the extreme points included). A positive click is a positive
  correction, a negative one a negative correction;
* a click the model cannot take -- a negative click on a model without the negative channel,
  or a click outside the crop of the extreme points -- is still **spent**: it counts, the
  model's input and mask stay as they were;
* once the prediction has no error left, later clicks keep its IoU;
* NoC@T is the first click count whose IoU >= T, or K when none reaches it (RITM's rule), so
  a DEXTR NoC is at least 4.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.clicker import Click, next_click
from ..errors import CorrectionError, InvalidValueError
from .metrics import iou

#: The click count of the first mask: the four extreme points.
FIRST_CLICK = 4
#: The IoU targets of NoC@T.
NOC_THRESHOLDS = (0.80, 0.85, 0.90)
#: Targets whose "never reached within K clicks" count is reported (the field's NoC@85/90).
OVER_MAX_THRESHOLDS = (0.85, 0.90)

#: ``predict(image, points, positive, negative) -> prob``: one object's ``(H, W)`` probabilities
#: from its ``(4, 2)`` extreme points and ``(k, 2)`` ``[y, x]`` positive and negative corrections.
PredictFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def check_clicks(clicks: int) -> int:
    """``clicks`` if it is a usable K (at least the four extreme points)."""
    if int(clicks) != clicks or clicks < FIRST_CLICK:
        raise InvalidValueError(f"clicks must be a whole number >= {FIRST_CLICK} (the four extreme "
                                f"points, then corrections), got {clicks}")
    return int(clicks)


def click_curve(
    predict: PredictFn,
    image: np.ndarray,
    gt: np.ndarray,
    ignore: Optional[np.ndarray],
    points: np.ndarray,
    first_prob: np.ndarray,
    *,
    clicks: int,
    threshold: float,
    takes_negatives: bool,
) -> Tuple[List[float], List[Click], int, float]:
    """One object's IoU after each click, from click 4 (the extreme points) to ``clicks``.

    Args:
        predict: see :data:`PredictFn`; called once per correction the model takes.
        image: the object's image, handed to ``predict`` unchanged.
        gt, ignore: ``(H, W)`` boolean ground truth and ignored pixels (or None).
        points: ``(4, 2)`` ``[y, x]`` extreme points; first_prob: the ``(H, W)`` probabilities
            they gave (click 4).
        clicks: K, the last click count.
        threshold: binarise probabilities at ``prob >= threshold``.
        takes_negatives: whether the model takes negative clicks (else they are spent unused).

    Returns:
        ``(ious, corrections, unused, seconds)``: ``K - 3`` IoUs (after clicks 4..K), the
        corrections the annotator made (clicks 5..), how many of them the model could not take,
        and the seconds spent predicting corrections.
    """
    pred = first_prob >= threshold
    ious = [iou(pred, gt, ignore)]
    made: List[Click] = []
    pos: List[Tuple[float, float]] = []
    neg: List[Tuple[float, float]] = []
    unused, seconds = 0, 0.0
    clicked = [tuple(p) for p in np.asarray(points)]
    for _ in range(FIRST_CLICK + 1, clicks + 1):
        click = next_click(gt, pred, ignore=ignore, clicked=clicked + list(made))
        if click is None:  # nothing left to fix: the mask, and its IoU, stay
            ious.append(ious[-1])
            continue
        made.append(click)
        if not click.positive and not takes_negatives:
            unused += 1
            ious.append(ious[-1])
            continue
        (pos if click.positive else neg).append((click.y, click.x))
        t0 = time.perf_counter()
        try:
            prob = predict(image, points, np.asarray(pos, np.float64).reshape(-1, 2),
                           np.asarray(neg, np.float64).reshape(-1, 2))
        except CorrectionError:  # outside the crop of the extreme points: spent, not taken
            (pos if click.positive else neg).pop()
            unused += 1
            ious.append(ious[-1])
            continue
        finally:
            seconds += time.perf_counter() - t0
        pred = prob >= threshold
        ious.append(iou(pred, gt, ignore))
    return ious, made, unused, seconds


def noc(ious: Sequence[float], target: float, clicks: int) -> int:
    """The first click count whose IoU >= ``target`` (``ious[0]`` is click 4), or ``clicks`` if none."""
    for k, v in enumerate(ious, FIRST_CLICK):
        if v >= target:
            return k
    return clicks


def noc_summary(curves: Sequence[Sequence[float]], clicks: int) -> Dict[str, object]:
    """NoC numbers of a set of objects.

    Args:
        curves: one IoU list per object (after clicks 4..K).
        clicks: K.

    Returns:
        ``{"objects", "noc": {"0.80": mean NoC, ...}, "over_max": {"0.85": objects never
        reaching 0.85 within K, ...}, "miou": {"4": mIoU after 4 clicks, ..., "K": ...}}``
        (NoC means and mIoUs are NaN for no objects).
    """
    n = len(curves)
    out: Dict[str, object] = {"objects": n}
    nocs = {t: [noc(c, t, clicks) for c in curves] for t in NOC_THRESHOLDS}
    out["noc"] = {f"{t:.2f}": float(np.mean(v)) if n else float("nan") for t, v in nocs.items()}
    out["over_max"] = {f"{t:.2f}": int(sum(1 for c in curves if not any(v >= t for v in c)))
                       for t in OVER_MAX_THRESHOLDS}
    arr = np.asarray(curves, dtype=np.float64).reshape(n, -1)
    out["miou"] = {str(k): float(arr[:, j].mean()) if n else float("nan")
                   for j, k in enumerate(range(FIRST_CLICK, clicks + 1))}
    return out


def noc_per_class(curves: Sequence[Sequence[float]], classes: Sequence[str], clicks: int) -> Dict[str, Dict]:
    """:func:`noc_summary` of each class's objects, classes sorted."""
    order = sorted(set(classes))
    return {c: noc_summary([cv for cv, k in zip(curves, classes) if k == c], clicks) for c in order}
