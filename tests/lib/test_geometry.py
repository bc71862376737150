"""Geometry: point validation, the extreme-point rule, crop boxes and coordinate maps."""
from __future__ import annotations

import numpy as np
import pytest

from dextr_lib.core.geometry import (
    as_points_array, extreme_points_from_mask, image_to_crop, jitter_points, relaxed_boxes,
)
from dextr_lib.errors import InvalidPointsError

PTS = [[10, 2], [12, 40], [1, 20], [30, 22]]  # [y, x]: left, right, top, bottom


def test_points_accept_one_list_and_array_forms():
    one = as_points_array(PTS)
    assert one.shape == (1, 4, 2) and one.dtype == np.float64
    many = as_points_array([np.array(PTS), np.array(PTS) + 1])
    assert many.shape == (2, 4, 2)
    np.testing.assert_array_equal(many[1], np.array(PTS) + 1)
    np.testing.assert_array_equal(as_points_array(np.stack([PTS, PTS])), np.stack([PTS, PTS]))


@pytest.mark.parametrize(
    "points, needle",
    [
        ([[1, 2], [3, 4], [5, 6]], "shape (3, 2)"),
        (np.zeros((2, 3, 2)), "(2, 3, 2)"),
        ([[[1, 2]] * 4, [[1, 2]] * 3], "[1] must have shape (4, 2)"),
        (np.zeros((0, 4, 2)), "empty"),
        ([[1, 2], [3, np.nan], [5, 6], [0, 0]], "NaN"),
        ([[1, 2], [3, np.inf], [5, 6], [0, 0]], "infinite"),
        ([[5, 1], [5, 9], [5, 3], [5, 4]], "zero size"),
        ([[1, 5], [2, 5], [3, 5], [9, 5]], "horizontally"),
        ([["a", "b"]] * 4, "numeric"),
    ],
)
def test_bad_points_raise_with_what_was_received(points, needle):
    with pytest.raises(InvalidPointsError) as e:
        as_points_array(points)
    assert needle in str(e.value)


def test_extreme_points_order_and_ties_take_the_middle_pixel():
    mask = np.zeros((20, 30), bool)
    mask[4:11, 5:21] = True  # rows 4..10, cols 5..20: every side ties
    left, right, top, bottom = extreme_points_from_mask(mask)
    assert left.tolist() == [7, 5] and right.tolist() == [7, 20]
    # 16 tied columns 5..20: lower middle of an even count is column 12
    assert top.tolist() == [4, 12] and bottom.tolist() == [10, 12]


def test_extreme_points_lie_on_the_object(synthetic_sample):
    _, mask, pts = synthetic_sample
    ys, xs = np.nonzero(mask)
    assert all(mask[y, x] for y, x in pts)
    assert pts[0, 1] == xs.min() and pts[1, 1] == xs.max()
    assert pts[2, 0] == ys.min() and pts[3, 0] == ys.max()


def test_extreme_points_of_empty_mask_raise():
    with pytest.raises(InvalidPointsError, match="empty"):
        extreme_points_from_mask(np.zeros((5, 5), bool))


@pytest.mark.parametrize("padding, target", [(10, 512), (4, 64), (0, 32), (20, 100)])
def test_relaxed_box_puts_points_padding_px_from_crop_edges(padding, target):
    pts = as_points_array(PTS)
    boxes = relaxed_boxes(pts, padding, target)
    in_crop = image_to_crop(pts, boxes, target) + 0.5  # continuous crop coordinates
    np.testing.assert_allclose(in_crop.min(axis=1), [[padding, padding]], atol=1e-9)
    np.testing.assert_allclose(in_crop.max(axis=1), [[target - padding] * 2], atol=1e-9)


def test_jitter_is_seeded_and_clipped_into_the_image():
    pts = np.array([[0, 0], [9, 9], [0, 9], [9, 0]], float)
    mask = np.ones((10, 10), bool)
    a = jitter_points(pts, 3.0, np.random.default_rng(5), mask)
    b = jitter_points(pts, 3.0, np.random.default_rng(5), mask)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, pts)
    assert a.min() >= 0 and a.max() <= 9
