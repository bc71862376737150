"""Correction clicks after the four extreme points: positive ones join the extreme points'
heatmap, negative ones a fifth input channel that a 4-channel network gains zero-initialised."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dextr_lib.core.geometry import image_to_crop
from dextr_lib.errors import CheckpointError, CorrectionError, InvalidPointsError, MismatchError
from dextr_lib.inference.heatmaps import gaussian_heatmaps
from dextr_lib.inference.preprocessing import as_corrections, get_profile
from dextr_lib.model import DextrModel, create_model
from dextr_lib.weights.architectures import build_network, list_architectures
from dextr_lib.weights.surgery import add_negative_channel, input_channels, input_conv

POINTS = np.array([[[30, 27], [30, 57], [15, 42], [45, 42]]], dtype=float)  # left, right, top, bottom


def _random_points(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """``n`` objects' extreme points in an ``h`` x ``w`` image: a random box's side midpoints."""
    y0, x0 = rng.integers(0, [h // 2, w // 2], size=(n, 2)).T
    y1, x1 = y0 + rng.integers(4, h // 2, size=n), x0 + rng.integers(4, w // 2, size=n)
    ym, xm = (y0 + y1) // 2, (x0 + x1) // 2
    return np.stack([np.stack([ym, x0], 1), np.stack([ym, x1], 1), np.stack([y0, xm], 1),
                     np.stack([y1, xm], 1)], 1).astype(float)


@pytest.mark.parametrize("profile", ["dextr", "dextr012", "original"])
def test_positive_corrections_join_the_extreme_points_heatmap_as_the_profile_combines(profile):
    pp = get_profile(profile, target_size=64, padding=10)
    boxes = pp.boxes(POINTS)
    click = np.array([[30.0, 40.0]])
    none = pp.heatmaps(POINTS, boxes, torch.device("cpu"))
    assert torch.equal(pp.heatmaps(POINTS, boxes, torch.device("cpu"), [np.zeros((0, 2))]), none)
    with_click = pp.heatmaps(POINTS, boxes, torch.device("cpu"), [click])
    all_five = pp.heatmaps(np.concatenate([POINTS, click[None]], axis=1), boxes, torch.device("cpu"))
    torch.testing.assert_close(with_click, all_five)
    assert not torch.allclose(with_click, none)


def test_gaussian_heatmaps_of_the_corrections_alone_match_the_difference_for_sum():
    pp = get_profile("dextr", target_size=64)
    boxes = pp.boxes(POINTS)
    click = np.array([[30.0, 40.0], [20.0, 35.0]])
    diff = pp.heatmaps(POINTS, boxes, torch.device("cpu"), [click]) - pp.heatmaps(POINTS, boxes, torch.device("cpu"))
    in_crop = torch.as_tensor(image_to_crop(click[None], boxes, 64), dtype=torch.float32)
    torch.testing.assert_close(diff, gaussian_heatmaps(in_crop, 64, pp.blob_sigma, "sum"), atol=1e-5, rtol=0)


def test_empty_corrections_give_bit_identical_masks(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    plain = tiny_model.predict([image], [pts])[0]
    for empty in ([np.zeros((0, 2))], [[]]):
        assert np.array_equal(tiny_model.predict([image], [pts], positive=empty)[0], plain)
    clicked = tiny_model.predict([image], [pts], positive=[[[30, 42]]])[0]
    assert not np.array_equal(clicked, plain)


def test_predict_image_and_iter_take_corrections_per_object(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    click = [[30, 42]]
    one = tiny_model.predict([image], [pts], positive=[click])[0]
    both = tiny_model.predict_image(image, [pts, pts], positive=[[], click])
    assert np.array_equal(both[1], one)
    assert np.array_equal(both[0], tiny_model.predict([image], [pts])[0])
    it = list(tiny_model.predict_iter([(image, [pts]), (image, [pts], [click], None)]))
    assert np.array_equal(it[1], one) and np.array_equal(it[0], both[0])
    # several images in one predict call: corrections follow their objects through the grouping
    other = image.copy()
    got = tiny_model.predict([image, other, image], [pts] * 3, positive=[click, [], []])
    assert np.array_equal(got[0], one) and np.array_equal(got[2], both[0])


def test_a_negative_click_on_a_model_without_the_channel_says_how_to_get_one(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    assert not tiny_model.takes_negatives
    with pytest.raises(CorrectionError, match=r"dextr finetune .*--corrections"):
        tiny_model.predict([image], [pts], negative=[[[30, 42]]])
    # an empty negative list is no negative click
    assert tiny_model.predict([image], [pts], negative=[[]])[0].shape == image.shape[:2]


def test_a_correction_outside_the_crop_says_to_move_an_extreme_point(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    far = [[2, 2]]  # the disk's crop spans about y 13..48, x 25..60
    with pytest.raises(CorrectionError, match="move an extreme point") as e:
        tiny_model.predict([image], [pts], positive=[far])
    assert "y=2, x=2" in str(e.value)


def test_malformed_corrections_are_refused(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    with pytest.raises(MismatchError, match="one"):
        tiny_model.predict_image(image, [pts, pts], positive=[[[30, 42]]])
    with pytest.raises(InvalidPointsError, match=r"\(k, 2\)"):
        tiny_model.predict([image], [pts], positive=[[30, 42, 1]])
    with pytest.raises(InvalidPointsError, match="NaN"):
        tiny_model.predict([image], [pts], positive=[[[np.nan, 4]]])
    with pytest.raises(InvalidPointsError):
        as_corrections("30,42", 1)
    assert as_corrections(np.array([[1.0, 2.0]]), 1)[0].shape == (1, 2)  # one object's array
    assert as_corrections(None, 3) is None


def _tiny_arch_model(arch: str) -> DextrModel:
    torch.manual_seed(0)
    return create_model(arch, target_size=32, padding=4)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=() if a == "resunet18" else pytest.mark.slow)
                                  for a in list_architectures()])
def test_a_new_negative_channel_leaves_every_architectures_masks_bit_identical(arch):
    model = _tiny_arch_model(arch)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(48, 56, 3), dtype=np.uint8)
    pts = _random_points(rng, 3, 48, 56)
    before = model.predict([image] * 3, pts)
    assert input_channels(model.net) == 4
    model.add_negative_channel()
    assert model.takes_negatives and model.preprocess.in_channels == 5
    assert input_channels(model.net) == 5
    after = model.predict([image] * 3, pts)
    inside = [pts[i].mean(axis=0, keepdims=True).round() for i in range(3)]
    with_negatives = model.predict([image] * 3, pts, negative=inside)
    for b, a, n in zip(before, after, with_negatives):
        assert b.dtype == np.float32
        assert np.array_equal(a, b) and np.array_equal(n, b)


def test_the_channel_is_found_generically_and_added_once():
    net = build_network("resunet18")
    name, conv = input_conv(net)
    assert name == "base_model.conv1" and conv.in_channels == 4
    weight = conv.weight.detach().clone()
    add_negative_channel(net)
    new = input_conv(net)[1]
    assert torch.equal(new.weight[:, :4], weight) and not new.weight[:, 4].any()
    with pytest.raises(CheckpointError, match="5 channels"):
        add_negative_channel(net)


def test_the_setting_travels_in_the_checkpoint_and_negatives_then_change_the_mask(tmp_path, synthetic_sample):
    image, _, pts = synthetic_sample
    model = create_model("resunet18", target_size=64, negative_clicks=True)
    with torch.no_grad():  # stands in for fine-tuning: the negative channel now matters
        input_conv(model.net)[1].weight[:, 4].normal_()
    model.save(tmp_path / "neg.pt")
    ckpt = torch.load(tmp_path / "neg.pt", weights_only=True)
    assert ckpt["preprocess"]["negative_clicks"] is True
    loaded = DextrModel.load(tmp_path / "neg.pt", "cpu")
    assert loaded.takes_negatives and input_channels(loaded.net) == 5
    plain = loaded.predict([image], [pts])[0]
    assert np.array_equal(plain, model.predict([image], [pts])[0])
    assert not np.array_equal(loaded.predict([image], [pts], negative=[[[30, 42]]])[0], plain)


def test_an_old_checkpoint_without_the_setting_takes_no_negatives(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["preprocess"].pop("negative_clicks")
    assert not DextrModel.from_checkpoint(ckpt, "cpu").takes_negatives


def test_an_onnx_export_of_a_negative_click_model_takes_five_channels(tmp_path, synthetic_sample):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    from dextr_lib.workflows.export import export_onnx

    image, _, pts = synthetic_sample
    torch.manual_seed(0)
    model = create_model("resunet18", target_size=64, negative_clicks=True)
    with torch.no_grad():  # stands in for fine-tuning: the negative channel now matters
        input_conv(model.net)[1].weight[:, 4].normal_()
    export_onnx(model, tmp_path / "neg.onnx", check=[(image, pts)])
    graph = onnx.load(tmp_path / "neg.onnx")
    assert graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 5
    exported = DextrModel.from_pretrained(tmp_path / "neg.onnx", runtime="onnxruntime")
    assert exported.takes_negatives
    negative = [[[30, 42]]]
    want = model.predict([image], [pts], negative=negative)[0]
    got = exported.predict([image], [pts], negative=negative)[0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert not np.allclose(got, exported.predict([image], [pts])[0], atol=1e-3)
