"""Pre-processing: crops, normalisation, paste-back and the profile dataclass."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.morphology import dilation, disk, erosion

from dextr_lib.core.geometry import as_points_array
from dextr_lib.errors import UnknownNameError
from dextr_lib.inference.preprocessing import (
    HEATMAP_MEAN, HEATMAP_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocess, _crop_grid, _crop_theta, get_profile,
    image_to_tensor,
)


def _ramp(h, w):
    """(2, H, W) image whose channels hold each pixel's row and column index."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([yy, xx])


@pytest.mark.parametrize("target, padding", [(64, 4), (128, 10), (48, 2)])
def test_crop_puts_the_points_padding_px_from_the_edges(target, padding):
    pp = Preprocess(target_size=target, padding=padding)
    pts = as_points_array([[50, 30], [55, 90], [20, 60], [80, 62]])  # [y, x], well inside
    boxes = pp.boxes(pts)
    crop = pp.crop(_ramp(120, 140), boxes)[0]  # bilinear is exact on a linear ramp
    # Continuous crop coordinate `padding` lies between crop pixels padding-1 and padding.
    def at(channel, axis, c):  # value at continuous coordinate c along axis, mid other axis
        i = c - 0.5
        lo, frac = int(np.floor(i)), i - np.floor(i)
        line = crop[channel, :, target // 2] if axis == 0 else crop[channel, target // 2, :]
        return float((1 - frac) * line[lo] + frac * line[min(lo + 1, target - 1)])
    assert at(0, 0, padding) == pytest.approx(20, abs=1e-6)  # top point's row
    assert at(0, 0, target - padding) == pytest.approx(80, abs=1e-6)  # bottom
    assert at(1, 1, padding) == pytest.approx(30, abs=1e-6)  # left point's column
    assert at(1, 1, target - padding) == pytest.approx(90, abs=1e-6)  # right


def test_crop_outside_the_image_reads_zeros():
    pp = Preprocess(target_size=32, padding=4)
    img = torch.ones(3, 20, 20)
    pts = as_points_array([[10, -30], [10, -10], [5, -20], [15, -20]])  # entirely left of the image
    assert pp.crop(img, pp.boxes(pts)).abs().max() == 0
    pts = as_points_array([[10, 0], [10, 19], [0, 10], [19, 10]])
    crop = pp.crop(img, pp.boxes(pts))
    assert crop[0, :, 0, 0].max() < 0.5 < crop[0, :, 16, 16].min()  # padding ring is partly outside


@pytest.mark.parametrize("target, padding", [(64, 4), (128, 10), (96, 20)])
def test_paste_back_of_a_crop_returns_the_object_within_one_pixel(synthetic_sample, target, padding):
    _, mask, pts = synthetic_sample
    pp = Preprocess(target_size=target, padding=padding)
    p = as_points_array(pts)
    boxes = pp.boxes(p)
    crop = pp.crop(torch.from_numpy(mask).float()[None], boxes)  # (1, 1, T, T)
    back = pp.paste(crop[:, 0], boxes, mask.shape)[0].numpy() >= 0.5
    assert back.shape == mask.shape
    assert not (back & ~dilation(mask, disk(1))).any()
    assert not (erosion(mask, disk(1)) & ~back).any()


def test_paste_is_zero_outside_the_box_and_clip_to_box_clips_to_the_points():
    pp = Preprocess(target_size=32, padding=8)
    p = as_points_array([[10, 10], [10, 20], [5, 15], [15, 15]])
    boxes = pp.boxes(p)
    full = pp.paste(torch.ones(1, 32, 32), boxes, (40, 40))[0]
    ys, xs = torch.nonzero(full, as_tuple=True)
    y0, x0, y1, x1 = boxes[0]
    assert ys.min() >= np.floor(y0) and ys.max() < np.ceil(y1)
    assert xs.min() >= np.floor(x0) and xs.max() < np.ceil(x1)
    clipped = pp.replace(clip_to_box=True).paste(torch.ones(1, 32, 32), boxes, (40, 40), p)[0]
    ys, xs = torch.nonzero(clipped, as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (5, 15, 10, 20)


def test_make_inputs_shapes_dtype_and_normalisation():
    pp = Preprocess(target_size=64, padding=4, blob_sigma=3)
    rgb = np.full((30, 40, 3), 255, np.uint8)
    img = image_to_tensor(rgb)
    assert img.shape == (3, 30, 40) and img.dtype == torch.float32 and img.max() == 1
    p = as_points_array([[[10, 2], [12, 38], [1, 20], [28, 22]], [[5, 5], [6, 15], [2, 10], [9, 10]]])
    x, boxes = pp.make_inputs(img, p)
    assert x.shape == (2, 4, 64, 64) and x.dtype == torch.float32 and boxes.shape == (2, 4)
    centre = x[0, :, 32, 32]
    expect_rgb = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(centre[:3], expect_rgb.float())
    heat_max = x[:, 3].amax(dim=(1, 2)) * HEATMAP_STD + HEATMAP_MEAN
    assert torch.all(heat_max > 0.9)


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(1, 2000), st.integers(1, 2000)),
    box=st.tuples(*[st.floats(-500, 2500, allow_nan=False)] * 2, *[st.floats(0.5, 3000)] * 2),
    target=st.sampled_from([1, 7, 64, 100, 255, 256, 512]),
)
def test_crop_grid_is_affine_grid_bit_for_bit(size, box, target):
    """The crop's sampling grid, built from a row and a column of coordinates, is exactly what
    F.affine_grid gives for the same box (so crops, and the masks, are unchanged)."""
    y0, x0, sy, sx = box
    boxes = np.array([[y0, x0, y0 + sy, x0 + sx], [x0, y0, x0 + sx, y0 + sy]])
    theta = _crop_theta(boxes, *size).float()
    expected = F.affine_grid(theta, [2, 3, target, target], align_corners=False)
    assert torch.equal(_crop_grid(theta, target), expected)


def test_normalize_is_the_stacked_input_minus_mean_over_std():
    pp = Preprocess(target_size=32)
    rgb, heat = torch.rand(3, 3, 32, 32), torch.rand(3, 32, 32)
    stacked = torch.cat([rgb, heat[:, None]], dim=1)
    mean = torch.tensor(pp.mean).view(1, 4, 1, 1)
    std = torch.tensor(pp.std).view(1, 4, 1, 1)
    assert torch.equal(pp.normalize(rgb, heat), (stacked - mean) / std)


def test_profile_round_trip_and_validation():
    pp = Preprocess(target_size=96, padding=5, blob_sigma=4.0, threshold=0.3)
    assert Preprocess.from_dict(pp.to_dict()) == pp
    with pytest.raises(ValueError, match="unknown pre-processing"):
        Preprocess.from_dict({**pp.to_dict(), "bogus": 1})
    for bad in (dict(target_size=8), dict(padding=40, target_size=64), dict(blob_sigma=0),
                dict(heatmap_combine="mean"), dict(threshold=2.0), dict(padding_mode="x")):
        with pytest.raises(ValueError):
            Preprocess(**bad)


def test_get_profile():
    assert get_profile("dextr", target_size=64).target_size == 64
    assert get_profile("dextr").target_size == 512
    with pytest.raises(UnknownNameError, match="dextr"):
        get_profile("nope")


def test_pixel_padding_mode_grows_by_image_pixels():
    pp = Preprocess(target_size=64, padding=5, padding_mode="image")
    p = as_points_array([[10, 10], [10, 30], [3, 20], [17, 20]])
    np.testing.assert_array_equal(pp.boxes(p), [[3 - 5, 10 - 5, 17 + 5 + 1, 30 + 5 + 1]])
