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


#: How far outside the image a point may lie, as a share of the image's larger side (at least
#: :data:`POINT_MARGIN_MIN_PX`): a click on an object touching the border often lands a few
#: pixels beyond it (a canvas edge, a zoomed view), and the object is still in the image.
POINT_MARGIN_FRACTION = 0.05
#: The smallest margin in pixels, for small images.
POINT_MARGIN_MIN_PX = 16.0


def point_margin(image_hw: Sequence[int]) -> float:
    """How many pixels outside an ``(H, W)`` image a point may lie (see
    :data:`POINT_MARGIN_FRACTION`)."""
    return max(POINT_MARGIN_MIN_PX, POINT_MARGIN_FRACTION * max(image_hw))


def _fits(pts: np.ndarray, h: int, w: int, margin: float) -> bool:
    """Every point within ``margin`` of the image, and their box overlapping the image."""
    y, x = pts[..., 0], pts[..., 1]
    near = (y >= -margin) & (y <= h - 1 + margin) & (x >= -margin) & (x <= w - 1 + margin)
    overlaps = y.max() >= 0 and y.min() <= h - 1 and x.max() >= 0 and x.min() <= w - 1
    return bool(near.all() and overlaps)


def check_points_in_image(points_yx: PointsLike, image_hw: Sequence[int]) -> None:
    """The one rule for points and their image, used wherever points meet a photo (the inference
    engine, hence the library, the CLI and the servers): each object's points may lie a little
    outside the image (:func:`point_margin`: 5% of its larger side, at least 16 pixels), but no
    point beyond that margin, and not an object wholly outside the image (the points' box must
    overlap it).

    Args:
        points_yx: ``(4, 2)`` or ``(N, 4, 2)`` ``[y, x]`` points (checked by :func:`as_points_array`).
        image_hw: the image's ``(H, W)``.

    Raises:
        InvalidPointsError: the message gives the point as ``x=.., y=..`` (no doubt about the
            order), the image size as ``WxH`` and, when the points would fit with x and y
            swapped, names a likely X/Y swap.
    """
    pts = np.asarray(points_yx, dtype=np.float64).reshape(-1, 4, 2)
    h, w = int(image_hw[0]), int(image_hw[1])
    margin = point_margin((h, w))
    for i, obj in enumerate(pts):
        if _fits(obj, h, w, margin):
            continue
        y, x = obj[..., 0], obj[..., 1]
        far = (y < -margin) | (y > h - 1 + margin) | (x < -margin) | (x > w - 1 + margin)
        which = f"object {i + 1}: " if len(pts) > 1 else ""
        if far.any():
            py, px = obj[int(np.argmax(far))]
            what = (f"{which}the point x={px:g}, y={py:g} lies outside the {w}x{h} image "
                    f"(points may lie at most {margin:g} pixels beyond its edge)")
        else:
            what = (f"{which}the four points enclose no part of the {w}x{h} image: the object lies outside it "
                    f"({', '.join(f'x={px:g} y={py:g}' for py, px in obj)})")
        if _fits(obj[..., ::-1], h, w, margin):
            what += "; they fit the image with x and y swapped: were X and Y given the wrong way round?"
        raise InvalidPointsError(what)


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
