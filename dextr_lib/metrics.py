"""Segmentation metrics shared by evaluation and training validation."""
from __future__ import annotations

from typing import Optional

import numpy as np


def iou(pred: np.ndarray, gt: np.ndarray, ignore: Optional[np.ndarray] = None) -> float:
    """Intersection over union of two binary masks; ``ignore`` pixels count for neither.

    Both empty (after ignoring) gives 1.0: nothing to find, nothing found.

    Args:
        pred, gt: ``(H, W)`` boolean (or 0/1) masks.
        ignore: optional ``(H, W)`` boolean mask of pixels to leave out.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        pred = pred & keep
        gt = gt & keep
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union
