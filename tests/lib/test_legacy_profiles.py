"""The pre-processing fields that reproduce the earlier implementations' conventions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dextr_lib.inference.preprocessing import Preprocess, get_profile

POINTS = np.array([[[20.0, 10.0], [25.0, 50.0], [5.0, 30.0], [40.0, 33.0]]])


def test_corner_origin_uses_points_as_coordinates():
    center = Preprocess(target_size=64, padding=8, blob_sigma=3.0)
    corner = center.replace(point_origin="corner")
    assert np.allclose(corner.boxes(POINTS), center.boxes(POINTS) - 0.5)
    box = corner.boxes(POINTS)
    heat = corner.heatmaps(POINTS, box, torch.device("cpu"))[0].double().numpy()
    # dextr 0.1.2: blob centres at (p - lo) / size * T, evaluated at integer crop indices.
    c = (POINTS[0] - box[0, :2]) / (box[0, 2:] - box[0, :2]) * 64
    yy, xx = np.mgrid[:64, :64]
    expected = sum(np.exp(-0.5 * ((yy - y) ** 2 + (xx - x) ** 2) / 9.0) for y, x in c)
    assert np.allclose(heat, expected, atol=1e-5)
    assert not np.allclose(center.heatmaps(POINTS, center.boxes(POINTS), torch.device("cpu"))[0].numpy(),
                           expected, atol=1e-3)


def test_heatmap_snap_truncates_centres():
    pp = Preprocess(target_size=64, padding=8, point_origin="corner", heatmap_combine="max", blob_sigma=2.0)
    box = pp.boxes(POINTS)
    soft = pp.heatmaps(POINTS, box, torch.device("cpu"))[0]
    snapped = pp.replace(heatmap_snap=True).heatmaps(POINTS, box, torch.device("cpu"))[0]
    assert snapped.max() == pytest.approx(1.0)  # every blob lands on a pixel exactly
    assert not torch.allclose(soft, snapped)


def test_crop_box_truncate_only_moves_the_image_crop():
    image = torch.rand(3, 48, 64)
    pp = Preprocess(target_size=32, padding=4, point_origin="corner", mean=(0,) * 4, std=(1,) * 4)
    x, boxes = pp.make_inputs(image, POINTS)
    xt, boxes_t = pp.replace(crop_box_truncate=True).make_inputs(image, POINTS)
    assert np.array_equal(boxes, boxes_t)  # paste-back keeps the exact box
    assert torch.equal(x[:, 3], xt[:, 3])  # and so does the heatmap
    assert torch.allclose(xt[:, :3], pp.crop(image, np.trunc(boxes)))


def test_pil_edge_mode_clamps_inside_and_zeroes_outside():
    image = torch.ones(1, 10, 10)
    box = np.array([[-5.0, -5.0, 15.5, 15.5]])  # sample points fall between pixel centres
    zeros = Preprocess(target_size=20, padding=2).crop(image, box)[0, 0]
    pil = Preprocess(target_size=20, padding=2, edge_mode="pil").crop(image, box)[0, 0]
    centres = -5 + (torch.arange(20) + 0.5) * 20.5 / 20
    inside = (centres >= 0) & (centres < 10)
    assert torch.equal(pil, (inside[:, None] & inside[None, :]).float())  # clamp, no blending
    assert ((zeros > 0) & (zeros < 1)).any()  # grid_sample's zeros padding blends the edge


def test_uint8_resample_gives_8bit_levels():
    image = torch.rand(3, 48, 64)
    pp = Preprocess(target_size=32, padding=4, uint8_resample=True, mean=(0,) * 4, std=(1,) * 4)
    x, boxes = pp.make_inputs(image, POINTS)
    levels = x[:, :3] * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    probs = torch.rand(1, 32, 32)
    full = pp.paste(probs, boxes, (48, 64), POINTS)[0] * 255
    assert torch.allclose(full, full.round(), atol=1e-3)


def test_profiles_and_validation():
    d = get_profile("dextr012")
    assert (d.point_origin, d.crop_box_truncate, d.uint8_resample, d.edge_mode) == ("corner", True, True, "pil")
    o = get_profile("original")
    assert (o.padding_mode, o.padding, o.heatmap_combine, o.threshold, o.clip_to_box) == ("image", 50.0, "max", 0.8, True)
    assert o.blob_sigma * 2 * np.sqrt(2 * np.log(2)) == pytest.approx(10.0)  # FWHM 10
    assert Preprocess.from_dict(o.to_dict()) == o
    assert get_profile("dextr").point_origin == "center" and not get_profile("dextr").uint8_resample
    for bad in (dict(point_origin="middle"), dict(edge_mode="wrap"), dict(paste_interpolation="nearest")):
        with pytest.raises(ValueError):
            Preprocess(**bad)


def test_pil_edge_mode_in_paste_zeroes_pixels_centred_outside_the_box():
    probs = torch.ones(1, 16, 16)
    box = np.array([[2.6, 3.7, 8.2, 9.4]])  # window rows 2..8, cols 3..9
    clamp = Preprocess(target_size=16, padding=2).paste(probs, box, (12, 12))[0]
    pil = Preprocess(target_size=16, padding=2, edge_mode="pil").paste(probs, box, (12, 12))[0]
    assert clamp[2:9, 3:10].min() == 1  # border pixels partly covered by the box read its edge
    centres_in = lambda lo, hi, n: [(i + 0.5 >= lo) and (i + 0.5 < hi) for i in range(n)]
    expected = torch.tensor(centres_in(2.6, 8.2, 12))[:, None] & torch.tensor(centres_in(3.7, 9.4, 12))[None, :]
    assert torch.equal(pil, expected.float())
