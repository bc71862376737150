"""Extreme points, boxes and crop geometry (NumPy only).

Conventions used throughout dextr:

* Points are ``[y, x]`` pixel indices (floats allowed), shape ``(4, 2)`` per object, as in the
  ``dextr`` 0.1.2 API. The command line takes ``X,Y`` and converts in one place.
* The *continuous* image plane puts pixel ``i`` over ``[i, i + 1)``; its centre is ``i + 0.5``.
  Crop boxes are ``[y0, x0, y1, x1]`` in that plane.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from ..errors import InvalidPointsError, InvalidValueError

PointsLike = Union[np.ndarray, Sequence]

#: Order of the points returned by :func:`extreme_points_from_mask`.
EXTREME_POINT_ORDER = ("left", "right", "top", "bottom")
#: Largest |coordinate| a point may have, in pixels: beyond it float32 (the network's precision)
#: cannot tell neighbouring pixels apart, and crop arithmetic would overflow.
MAX_COORDINATE = float(2 ** 24)


def as_points_array(points: PointsLike, *, name: str = "extreme_points") -> np.ndarray:
    """Validate one or many objects' extreme points.

    Args:
        points: a ``(4, 2)`` array-like of ``[y, x]``, a list of them, or an ``(N, 4, 2)`` array.
        name: what to call the argument in error messages.

    Returns:
        ``(N, 4, 2)`` float64 array.

    Raises:
        InvalidPointsError: wrong shape, non-numeric, NaN/inf, or points spanning no area.
    """
    if isinstance(points, (list, tuple)) and len(points) > 0 and all(
        _ndim(p) == 2 for p in points
    ):
        arrays = []
        for i, p in enumerate(points):
            a = _to_float_array(p, f"{name}[{i}]")
            if a.shape != (4, 2):
                raise InvalidPointsError(
                    f"{name}[{i}] must have shape (4, 2) as four [y, x] points, got shape {a.shape}"
                )
            arrays.append(a)
        arr = np.stack(arrays)
    else:
        arr = _to_float_array(points, name)
        if arr.shape == (4, 2):
            arr = arr[None]
        elif arr.ndim != 3 or arr.shape[1:] != (4, 2):
            raise InvalidPointsError(
                f"{name} must be a (4, 2) array of [y, x] points, a list of them, or an (N, 4, 2) "
                f"array; got shape {arr.shape}"
            )
    if arr.shape[0] == 0:
        raise InvalidPointsError(f"{name} is empty: expected at least one object's (4, 2) points")
    bad = ~np.isfinite(arr).all(axis=(1, 2))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidPointsError(f"{name}[{i}] contains NaN or infinite values: {arr[i].tolist()}")
    huge = (np.abs(arr) > MAX_COORDINATE).any(axis=(1, 2))
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise InvalidPointsError(
            f"{name}[{i}] has a point too far from the image: coordinates must lie within "
            f"+-{MAX_COORDINATE:.0f} pixels, got {arr[i].tolist()}"
        )
    extent = arr.max(axis=1) - arr.min(axis=1)
    flat = (extent <= 0).any(axis=1)
    if flat.any():
        i = int(np.flatnonzero(flat)[0])
        axis = "vertically (y)" if extent[i, 0] <= 0 else "horizontally (x)"
        raise InvalidPointsError(
            f"{name}[{i}] spans a box of zero size: the four points do not differ {axis}; "
            f"expected the object's left-most, right-most, top and bottom points, got "
            f"{arr[i].tolist()}"
        )
    return arr


def _ndim(value) -> int:
    """``np.ndim``, or -1 for ragged or otherwise non-array-like input."""
    try:
        return np.ndim(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return -1


def _to_float_array(points: PointsLike, name: str) -> np.ndarray:
    try:
        return np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise InvalidPointsError(f"{name} must be numeric [y, x] points: {e}") from None


def relaxed_boxes(points: np.ndarray, padding: float, target_size: int) -> np.ndarray:
    """Crop boxes that put the points ``padding`` px from the edges of a ``target_size`` crop.

    The points' box is enlarged on each side by ``padding / (target_size - 2 * padding)`` of its
    size (the ``dextr`` 0.1.2 rule). Points are pixel indices, so ``+0.5`` moves them to pixel
    centres in the continuous plane.

    Args:
        points: ``(N, 4, 2)`` validated ``[y, x]`` points.

    Returns:
        ``(N, 4)`` float64 boxes ``[y0, x0, y1, x1]`` in the continuous plane; may extend past the image.
    """
    inner = target_size - 2 * padding
    if inner <= 0:
        raise InvalidValueError(
            f"padding {padding} leaves no room in a {target_size} px crop: padding must be below "
            f"{target_size / 2:g} (half the target size)"
        )
    lo = points.min(axis=1) + 0.5
    hi = points.max(axis=1) + 0.5
    margin = (hi - lo) * (padding / inner)
    return np.concatenate([lo - margin, hi + margin], axis=1)


def pixel_relaxed_boxes(points: np.ndarray, relax: float) -> np.ndarray:
    """Boxes grown by ``relax`` image pixels around the points' pixels (original DEXTR's rule).

    The box covers whole pixels ``min - relax .. max + relax`` inclusive, i.e. the continuous
    interval ``[min - relax, max + relax + 1)`` after rounding the points to pixels.
    """
    p = np.round(points)
    lo = p.min(axis=1) - relax
    hi = p.max(axis=1) + relax + 1
    return np.concatenate([lo, hi], axis=1)


def image_to_crop(points: np.ndarray, boxes: np.ndarray, crop_size: int) -> np.ndarray:
    """Map ``[y, x]`` pixel indices into crop pixel indices for crops of ``crop_size`` px.

    Args:
        points: ``(N, K, 2)`` pixel indices in the image.
        boxes: ``(N, 4)`` continuous boxes from :func:`relaxed_boxes`.

    Returns:
        ``(N, K, 2)`` pixel indices in the crop (a point's pixel centre maps to its crop pixel centre).
    """
    lo = boxes[:, None, :2]
    size = boxes[:, None, 2:] - lo
    return (points + 0.5 - lo) / size * crop_size - 0.5


def extreme_points_from_mask(mask: np.ndarray) -> np.ndarray:
    """The four extreme points of a binary mask by the DEXTR paper's rule.

    Each point is an object pixel on the extreme row/column of its side; where several pixels tie,
    the middle one (in sorted order, the lower middle for an even count) is taken.

    Args:
        mask: ``(H, W)`` array, non-zero on the object.

    Returns:
        ``(4, 2)`` int64 ``[y, x]`` points in the order left, right, top, bottom.

    Raises:
        InvalidPointsError: the mask is empty.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise InvalidPointsError("the mask is empty: an object needs at least one pixel")

    def middle(values: np.ndarray) -> int:
        v = np.sort(values)
        return int(v[(v.size - 1) // 2])

    x_min, x_max, y_min, y_max = xs.min(), xs.max(), ys.min(), ys.max()
    return np.array(
        [
            [middle(ys[xs == x_min]), x_min],
            [middle(ys[xs == x_max]), x_max],
            [y_min, middle(xs[ys == y_min])],
            [y_max, middle(xs[ys == y_max])],
        ],
        dtype=np.int64,
    )


def jitter_points(
    points: np.ndarray, jitter: float, rng: np.random.Generator, mask: np.ndarray | None = None
) -> np.ndarray:
    """Add Gaussian noise of std ``jitter`` px to points, simulating a human annotator.

    With ``mask``, each jittered point is clipped into the image.
    """
    out = np.asarray(points, dtype=np.float64) + rng.normal(0.0, jitter, size=np.shape(points))
    if mask is not None:
        h, w = mask.shape[:2]
        out[..., 0] = np.clip(out[..., 0], 0, h - 1)
        out[..., 1] = np.clip(out[..., 1], 0, w - 1)
    return out


# -- the x/y convention: the command line and JSON files say [x, y], the library [y, x] ---------
def xy_to_yx(points: Any) -> np.ndarray:
    """``[..., 2]`` ``[x, y]`` points (command line, objects.json) -> ``[y, x]`` (library)."""
    return np.asarray(points, dtype=np.float64)[..., ::-1].copy()


def yx_to_xy(points: Any) -> np.ndarray:
    """``[..., 2]`` ``[y, x]`` library points -> ``[x, y]``."""
    return np.asarray(points)[..., ::-1].copy()
