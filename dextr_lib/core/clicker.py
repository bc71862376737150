"""The simulated annotator of interactive segmentation: where the next corrective click goes.

Every interactive-segmentation paper since RITM (SimpleClick, FocalClick, ...) measures the
number of clicks to reach an IoU with the same robot user, RITM's
``isegm/inference/clicker.py::Clicker._get_next_click``. :func:`next_click` follows that rule
exactly, so dextr's NoC numbers compare with theirs:

1. false negatives ``gt & ~pred`` and false positives ``~gt & pred``, ignored pixels left out;
2. each error mask padded by one background pixel, so the image border counts as a boundary of
   the error region (a region touching the frame is not deeper for it);
3. the Euclidean distance of every error pixel to the nearest non-error pixel
   (``scipy.ndimage.distance_transform_edt``; RITM's ``cv2.distanceTransform(DIST_L2, 0)`` is
   the same exact transform);
4. pixels already clicked get distance 0, so a click is never repeated;
5. the click is positive when the largest false-negative distance is strictly greater than the
   largest false-positive distance (a tie gives a negative click), and lies at the first pixel
   of that largest distance in row-major order.

One difference: where RITM would still return a click for a prediction without error (a
negative one at pixel ``(0, 0)``), :func:`next_click` returns ``None`` -- also when every error
pixel has already been clicked -- so the caller can tell that the annotator has nothing to fix.

Coordinates are ``[y, x]`` pixel indices, as everywhere in :mod:`dextr_lib`.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Optional, Sequence, Union

import numpy as np
from scipy.ndimage import distance_transform_edt

from ..errors import MismatchError

__all__ = ["Click", "error_distances", "next_click"]


class Click(NamedTuple):
    """One click of the simulated annotator.

    Attributes:
        y, x: the clicked pixel (row, column).
        positive: True for a click inside the object (a missed region), False outside (a
            wrongly included region).
    """

    y: int
    x: int
    positive: bool


ClickLike = Union[Click, Sequence[float], np.ndarray]


def _padded_edt(mask: np.ndarray) -> np.ndarray:
    """Distance of each ``mask`` pixel to the nearest pixel outside it, the frame counting as outside.

    Computed on the mask's bounding box padded by one background pixel: the same distances as on
    the whole padded image (the nearest outside pixel of a box pixel is in the box or its
    padding), at the cost of the error region rather than of the image.
    """
    out = np.zeros(mask.shape, dtype=np.float64)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    padded = np.pad(mask[box], 1, mode="constant", constant_values=False)
    out[box] = distance_transform_edt(padded)[1:-1, 1:-1]
    return out


def error_distances(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    ignore: Optional[np.ndarray] = None,
    clicked: Iterable[ClickLike] = (),
) -> tuple:
    """The two distance maps :func:`next_click` chooses from.

    Args:
        gt: ``(H, W)`` boolean ground-truth mask.
        pred: ``(H, W)`` boolean prediction (already thresholded).
        ignore: optional ``(H, W)`` boolean mask of pixels that are neither object nor background.
        clicked: clicks made so far (:class:`Click` or ``[y, x]`` pairs, rounded to the nearest
            pixel; those outside the image are left out); their pixels get distance 0.

    Returns:
        ``(fn_dist, fp_dist)``: two ``(H, W)`` float64 maps, the distance of each false-negative
        (false-positive) pixel to the edge of its error region, 0 elsewhere.

    Raises:
        MismatchError: masks that are not ``(H, W)`` or differ in shape.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.ndim != 2 or pred.shape != gt.shape:
        raise MismatchError(
            f"expected two (H, W) masks of the same shape, got ground truth {gt.shape} and "
            f"prediction {pred.shape}"
        )
    valid = np.ones_like(gt)
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise MismatchError(f"ignore mask shape {ignore.shape} differs from the masks' {gt.shape}")
        valid = ~ignore
    fn = _padded_edt(gt & ~pred & valid)
    fp = _padded_edt(~gt & pred & valid)
    h, w = gt.shape
    for c in clicked:
        y, x = (c.y, c.x) if isinstance(c, Click) else (c[0], c[1])
        y, x = int(round(float(y))), int(round(float(x)))
        if 0 <= y < h and 0 <= x < w:
            fn[y, x] = 0.0
            fp[y, x] = 0.0
    return fn, fp


def next_click(
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    ignore: Optional[np.ndarray] = None,
    clicked: Iterable[ClickLike] = (),
) -> Optional[Click]:
    """The click RITM's simulated annotator makes next to fix ``pred`` towards ``gt``.

    Args:
        gt: ``(H, W)`` boolean ground-truth mask.
        pred: ``(H, W)`` boolean prediction (already thresholded).
        ignore: optional ``(H, W)`` boolean mask of pixels that count as neither (VOC's void,
            GrabCut's 128 band): never an error, never clicked.
        clicked: clicks made so far (:class:`Click` or ``[y, x]`` pairs, e.g. the extreme
            points); the new click never lands on one of their pixels.

    Returns:
        The :class:`Click` at the deepest point of the larger error (positive for a missed
        region, negative for a wrongly included one; a tie is negative), or ``None`` when no
        error pixel is left to click.

    Raises:
        MismatchError: masks that are not ``(H, W)`` or differ in shape.

    Example:
        >>> gt = np.zeros((5, 5), bool); gt[1:4, 1:4] = True
        >>> next_click(gt, np.zeros((5, 5), bool))
        Click(y=2, x=2, positive=True)
    """
    fn, fp = error_distances(gt, pred, ignore=ignore, clicked=clicked)
    fn_max, fp_max = fn.max(), fp.max()
    if fn_max == 0 and fp_max == 0:
        return None
    positive = bool(fn_max > fp_max)
    dist, best = (fn, fn_max) if positive else (fp, fp_max)
    # argmax returns the first maximum in row-major (C) order, as RITM's np.where(...)[0]
    y, x = np.unravel_index(int(np.argmax(dist == best)), dist.shape)
    return Click(int(y), int(x), positive)
