"""Segmentation metrics shared by evaluation and training validation.

* :func:`iou` -- intersection over union of one object's masks (the DEXTR paper's metric).
* :func:`boundary_f` -- the contour F-measure of DAVIS: boundary pixels of the prediction and
  the ground truth are matched within a pixel tolerance, giving a precision and a recall.
* :func:`summarize` and friends -- mean, median, per-image mean, per-class mean, share above
  0.85 / 0.90 of a list of per-object scores.

All mask arguments are ``(H, W)`` boolean (or 0/1) arrays. ``ignore`` pixels (e.g. VOC's void
label 255) count for neither side.
"""
from __future__ import annotations

import math
from typing import Dict, Hashable, Optional, Sequence, Tuple

import numpy as np

from ..errors import InvalidValueError, MismatchError

#: DAVIS's default boundary tolerance, as a fraction of the image diagonal.
DEFAULT_BOUNDARY_FRACTION = 0.008

#: Score thresholds reported as "share of objects above" (the DEXTR paper's quality levels).
SHARE_THRESHOLDS = (0.85, 0.90)


def _as_masks(pred, gt, ignore) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise MismatchError(
            f"expected two (H, W) masks of the same shape, got prediction {pred.shape} and "
            f"ground truth {gt.shape}"
        )
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise MismatchError(f"ignore mask shape {ignore.shape} differs from the masks' {gt.shape}")
    return pred, gt, ignore


def iou(pred: np.ndarray, gt: np.ndarray, ignore: Optional[np.ndarray] = None) -> float:
    """Intersection over union of two binary masks; ``ignore`` pixels count for neither.

    Both empty (after ignoring) gives 1.0: nothing to find, nothing found.

    Args:
        pred, gt: ``(H, W)`` boolean (or 0/1) masks.
        ignore: optional ``(H, W)`` boolean mask of pixels to leave out.

    Returns:
        IoU in ``[0, 1]``.
    """
    pred, gt, ignore = _as_masks(pred, gt, ignore)
    if ignore is not None:
        keep = ~ignore
        pred = pred & keep
        gt = gt & keep
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def boundary_tolerance(shape: Sequence[int], fraction: float = DEFAULT_BOUNDARY_FRACTION) -> int:
    """DAVIS's pixel tolerance for an image of ``shape`` ``(H, W, ...)``: ``ceil(fraction * diagonal)``.

    E.g. 5 px for a 500x375 VOC image, 4 px for 480x360 (at least 1 px).
    """
    h, w = int(shape[0]), int(shape[1])
    return max(1, int(math.ceil(fraction * math.hypot(h, w))))


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner contour of a mask: mask pixels with a 4-neighbour outside the mask.

    The image border is not a contour (the object is only cut there by the frame), so a mask
    filling the whole image has no boundary, while a single pixel is its own boundary.

    Args:
        mask: ``(H, W)`` boolean mask.

    Returns:
        ``(H, W)`` boolean boundary map.
    """
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1, mode="edge")
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~interior


def boundary_precision_recall(
    pred: np.ndarray,
    gt: np.ndarray,
    ignore: Optional[np.ndarray] = None,
    *,
    tolerance: Optional[float] = None,
) -> Tuple[float, float]:
    """Contour precision and recall as DAVIS measures them.

    A prediction contour pixel is correct when a ground-truth contour pixel lies within
    ``tolerance`` px (a disk), and vice versa for recall. Contour pixels on ``ignore`` pixels
    are not counted on either side (they still serve as matches for the other side, so a
    contour drawn through VOC's void band next to the true one is not penalised).

    Edge cases: no contour on either side gives ``(1, 1)``; an empty prediction against a
    non-empty ground truth ``(1, 0)``; a prediction against an empty ground truth ``(0, 1)``.

    Args:
        pred, gt: ``(H, W)`` boolean masks.
        ignore: optional ``(H, W)`` boolean mask of pixels that count for neither side.
        tolerance: match distance in pixels; default :func:`boundary_tolerance` of the image
            (DAVIS: 0.008 x the image diagonal, rounded up).

    Returns:
        ``(precision, recall)``, each in ``[0, 1]``.
    """
    from skimage.morphology import dilation, disk

    pred, gt, ignore = _as_masks(pred, gt, ignore)
    tol = boundary_tolerance(gt.shape) if tolerance is None else float(tolerance)
    if tol < 0:
        raise InvalidValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    radius = int(math.floor(tol))
    # Work in the box around both masks (plus the tolerance): contours only live there.
    either = pred | gt
    if not either.any():
        return 1.0, 1.0
    ys, xs = np.nonzero(either)
    m = radius + 2
    y0, y1 = max(ys.min() - m, 0), min(ys.max() + m + 1, gt.shape[0])
    x0, x1 = max(xs.min() - m, 0), min(xs.max() + m + 1, gt.shape[1])
    win = (slice(y0, y1), slice(x0, x1))
    pb = mask_boundary(pred[win])
    gb = mask_boundary(gt[win])
    if radius > 0:
        fp = disk(radius)
        pd, gd = dilation(pb, fp), dilation(gb, fp)
    else:
        pd, gd = pb, gb
    if ignore is not None:
        keep = ~ignore[win]
        pb_counted, gb_counted = pb & keep, gb & keep
    else:
        pb_counted, gb_counted = pb, gb
    n_pred = np.count_nonzero(pb_counted)
    n_gt = np.count_nonzero(gb_counted)
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0
    if n_pred == 0:
        return 1.0, 0.0
    if n_gt == 0:
        return 0.0, 1.0
    precision = np.count_nonzero(pb_counted & gd) / n_pred
    recall = np.count_nonzero(gb_counted & pd) / n_gt
    return float(precision), float(recall)


def boundary_f(
    pred: np.ndarray,
    gt: np.ndarray,
    ignore: Optional[np.ndarray] = None,
    *,
    tolerance: Optional[float] = None,
) -> float:
    """Boundary F-measure ``2PR / (P + R)`` of :func:`boundary_precision_recall` (0 when both are 0).

    Args:
        pred, gt: ``(H, W)`` boolean masks.
        ignore: optional ``(H, W)`` boolean mask of pixels that count for neither side.
        tolerance: match distance in pixels (default: 0.008 x the image diagonal, rounded up).

    Returns:
        F in ``[0, 1]``.
    """
    p, r = boundary_precision_recall(pred, gt, ignore, tolerance=tolerance)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


# -- summaries ---------------------------------------------------------------------------------
def share_above(values: Sequence[float], threshold: float) -> float:
    """Fraction of ``values`` strictly above ``threshold`` (NaN for no values)."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.mean(v > threshold)) if v.size else math.nan


def group_means(values: Sequence[float], keys: Sequence[Hashable]) -> Dict[Hashable, float]:
    """Mean of ``values`` per key, keys in order of first appearance."""
    if len(values) != len(keys):
        raise MismatchError(f"got {len(values)} values but {len(keys)} keys")
    sums: Dict[Hashable, list] = {}
    for v, k in zip(values, keys):
        s = sums.setdefault(k, [0.0, 0])
        s[0] += float(v)
        s[1] += 1
    return {k: s / n for k, (s, n) in sums.items()}


def per_image_mean(values: Sequence[float], images: Sequence[Hashable]) -> float:
    """Mean over images of each image's mean score (every image weighs the same)."""
    means = list(group_means(values, images).values())
    return float(np.mean(means)) if means else math.nan


def summarize(
    values: Sequence[float], images: Optional[Sequence[Hashable]] = None
) -> Dict[str, float]:
    """Summary of per-object scores.

    Args:
        values: one score per object (IoU or boundary F).
        images: the image of each object, for ``per_image_mean``.

    Returns:
        ``{"count", "mean", "median", "per_image_mean", "above_0.85", "above_0.90"}``; the
        statistics are NaN when there are no values.
    """
    v = np.asarray(values, dtype=np.float64)
    out: Dict[str, float] = {
        "count": int(v.size),
        "mean": float(v.mean()) if v.size else math.nan,
        "median": float(np.median(v)) if v.size else math.nan,
        "per_image_mean": per_image_mean(v, images) if images is not None else math.nan,
    }
    for t in SHARE_THRESHOLDS:
        out[f"above_{t:.2f}"] = share_above(v, t)
    return out
