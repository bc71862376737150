"""IoU, boundary F and summaries against hand-computed cases."""
import math

import numpy as np
import pytest

from dextr_lib.evaluation.metrics import (
    boundary_f, boundary_precision_recall, boundary_tolerance, group_means, iou, mask_boundary, per_image_mean,
    share_above, summarize,
)


def square(y0, x0, y1, x1, shape=(50, 50)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_perfect():
    gt = square(10, 10, 20, 20)
    assert iou(gt, gt) == 1.0
    assert boundary_precision_recall(gt, gt, tolerance=1) == (1.0, 1.0)
    assert boundary_f(gt, gt) == 1.0


def test_disjoint():
    a, b = square(0, 0, 10, 10), square(30, 30, 40, 40)
    assert iou(a, b) == 0.0
    assert boundary_f(a, b, tolerance=2) == 0.0


def test_empty_prediction():
    gt = square(10, 10, 20, 20)
    empty = np.zeros_like(gt)
    assert iou(empty, gt) == 0.0
    assert boundary_precision_recall(empty, gt) == (1.0, 0.0)
    assert boundary_f(empty, gt) == 0.0


def test_empty_ground_truth():
    pred = square(10, 10, 20, 20)
    empty = np.zeros_like(pred)
    assert iou(pred, empty) == 0.0
    assert boundary_precision_recall(pred, empty) == (0.0, 1.0)
    assert boundary_f(pred, empty) == 0.0
    # nothing to find, nothing found
    assert iou(empty, empty) == 1.0
    assert boundary_f(empty, empty) == 1.0


def test_partial_overlap_iou():
    a, b = square(0, 0, 10, 10), square(0, 5, 10, 15)  # 50 shared of 150
    assert iou(a, b) == pytest.approx(50 / 150)


def test_shifted_square_boundary_by_hand():
    # A 20x20 square shifted 2 px right. With a 1 px tolerance, of the prediction's 76 contour
    # pixels 16 (left column, y=12..27) + 18 (right column, y=11..28) + 2 (corners x=31) miss:
    # precision = 40/76; recall is the same by symmetry.
    gt = square(10, 10, 30, 30)
    pred = square(10, 12, 30, 32)
    p, r = boundary_precision_recall(pred, gt, tolerance=1)
    assert p == pytest.approx(40 / 76)
    assert r == pytest.approx(40 / 76)
    assert boundary_f(pred, gt, tolerance=1) == pytest.approx(40 / 76)
    # every contour pixel is within 2 px of the other contour
    assert boundary_f(pred, gt, tolerance=2) == 1.0


def test_ignore_pixels_count_for_neither_side():
    gt = square(10, 10, 20, 20)
    pred = gt.copy()
    pred[30:35, 30:35] = True  # a separate false blob
    ignore = square(28, 28, 37, 37)
    assert iou(pred, gt, ignore) == 1.0
    assert boundary_f(pred, gt, ignore, tolerance=1) == 1.0
    # Without ignoring: IoU 100/125; precision 36/52 (square contour 36 px, blob 16 px).
    assert iou(pred, gt) == pytest.approx(0.8)
    p = 36 / 52
    assert boundary_f(pred, gt, tolerance=1) == pytest.approx(2 * p / (p + 1))


def test_ignore_on_part_of_the_object():
    gt = square(10, 10, 20, 20)
    pred = square(10, 10, 20, 15)  # left half only; its right edge is a false contour...
    ignore = square(10, 14, 20, 20)  # ...unless the right part is ignored
    assert iou(pred, gt, ignore) == 1.0
    assert boundary_f(pred, gt, ignore, tolerance=1) == 1.0
    assert iou(pred, gt) == 0.5
    assert boundary_f(pred, gt, tolerance=1) < 1.0


def test_one_pixel_objects():
    gt = square(5, 5, 6, 6)
    assert mask_boundary(gt).sum() == 1
    assert iou(gt, gt) == 1.0
    assert boundary_f(gt, gt) == 1.0
    neighbour = square(5, 6, 6, 7)
    assert iou(neighbour, gt) == 0.0
    assert boundary_f(neighbour, gt, tolerance=1) == 1.0  # within the tolerance
    assert boundary_f(neighbour, gt, tolerance=0) == 0.0


def test_boundary_is_inner_contour_and_not_the_image_frame():
    m = square(2, 2, 7, 7, shape=(10, 10))
    assert mask_boundary(m).sum() == 16  # 25 - 9 interior
    assert not mask_boundary(np.ones((10, 10), bool)).any()


def test_default_tolerance_is_davis_rule():
    assert boundary_tolerance((500, 375)) == 5  # ceil(0.008 * 625)
    assert boundary_tolerance((64, 80)) == 1
    assert boundary_tolerance((3000, 4000), fraction=0.001) == 5


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        iou(np.zeros((3, 3)), np.zeros((3, 4)))


def test_summaries():
    values = [1.0, 0.9, 0.8, 0.2]
    images = ["a", "a", "b", "b"]
    s = summarize(values, images)
    assert s["count"] == 4
    assert s["mean"] == pytest.approx(0.725)
    assert s["median"] == pytest.approx(0.85)
    assert s["per_image_mean"] == pytest.approx((0.95 + 0.5) / 2)
    assert s["above_0.85"] == 0.5  # 1.0 and 0.9
    assert s["above_0.90"] == 0.25  # strictly above
    assert group_means(values, ["cat", "dog", "cat", "cat"]) == pytest.approx(
        {"cat": (1.0 + 0.8 + 0.2) / 3, "dog": 0.9}
    )
    assert per_image_mean([0.5], ["x"]) == 0.5
    assert share_above([0.1, 0.95], 0.9) == 0.5
    assert math.isnan(summarize([])["mean"])
