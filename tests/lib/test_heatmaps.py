"""Guidance heatmaps: Gaussians peaking exactly at the points."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dextr_lib.core.geometry import as_points_array, image_to_crop
from dextr_lib.inference.heatmaps import gaussian_heatmaps
from dextr_lib.inference.preprocessing import Preprocess

POINTS = torch.tensor([[[10.0, 5.0], [12.0, 58.0], [3.0, 30.0], [60.0, 33.0]]])  # crop [y, x]


def test_max_combination_peaks_at_each_point_with_value_one():
    h = gaussian_heatmaps(POINTS, 64, sigma=3.0, combine="max")[0]
    assert h.shape == (64, 64)
    for y, x in POINTS[0].long().tolist():
        assert h[y, x] == pytest.approx(1.0)
        patch = h[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        assert h[y, x] == patch.max()  # local maximum at the point
    assert h.max() == pytest.approx(1.0)


def test_sum_combination_is_the_sum_of_unit_gaussians():
    sigma = 2.5
    h = gaussian_heatmaps(POINTS, 64, sigma=sigma, combine="sum")[0]
    # Points are far apart relative to sigma, so each point's value is ~1 and the mass ~4 blobs.
    for y, x in POINTS[0].long().tolist():
        assert h[y, x] == pytest.approx(1.0, abs=1e-3)
    # Blobs at the border lose part of their mass; compare with the analytic truncated mass.
    mass = 0.0
    for y, x in POINTS[0].tolist():
        def axis(c):
            return sum(math.exp(-0.5 * ((i - c) / sigma) ** 2) for i in range(64))
        mass += axis(y) * axis(x)
    assert h.sum().item() == pytest.approx(mass, rel=1e-4)


def test_sub_pixel_points_peak_at_the_nearest_pixel():
    pts = torch.tensor([[[20.3, 40.6]]])
    h = gaussian_heatmaps(pts, 64, sigma=4.0, combine="max")[0]
    assert divmod(int(h.argmax()), 64) == (20, 41)


def test_batch_and_bad_combine():
    h = gaussian_heatmaps(POINTS.repeat(3, 1, 1), 32, sigma=2.0)
    assert h.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="combine"):
        gaussian_heatmaps(POINTS, 32, 2.0, combine="mean")


def test_profile_heatmaps_peak_where_the_image_points_land_in_the_crop():
    pp = Preprocess(target_size=64, padding=6, blob_sigma=2.0, heatmap_combine="max")
    pts = as_points_array([[40, 10], [44, 90], [12, 50], [70, 52]])
    boxes = pp.boxes(pts)
    h = pp.heatmaps(pts, boxes, torch.device("cpu"))[0]
    expected = np.round(image_to_crop(pts, boxes, 64)[0]).astype(int)
    for y, x in expected:
        assert h[y, x] == h[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].max()
        assert h[y, x] > 0.85
