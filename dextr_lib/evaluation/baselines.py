"""Masks from the four extreme points alone, no network: what ``dextr eval`` compares a model with.

* ``box``: the filled bounding box of the points;
* ``quadrilateral``: the filled quadrilateral through the four points.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from skimage.draw import line, polygon

#: Baseline names, in report order.
BASELINES = ("box", "quadrilateral")


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
