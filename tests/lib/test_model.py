"""DextrModel API contracts: shapes, dtypes, input forms, modes and typed errors."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

import dextr_lib
from dextr_lib import DextrModel, InvalidImageError, InvalidPointsError, MismatchError, UnknownNameError
from dextr_lib.model import DextrModel as DextrModelFromModule


def test_public_names():
    assert DextrModelFromModule is DextrModel
    assert dextr_lib.list_models is dextr_lib.list_architectures  # the earlier name, kept
    assert {"resunet18", "resunet34", "resunet50", "resunet101", "deeplab3", "denseunet161"} <= set(
        dextr_lib.list_models())
    assert dextr_lib.list_models("resunet1*") == ["resunet101", "resunet18"]


def test_create_model_settings_and_unknown_arch():
    m = dextr_lib.create_model("resunet18", target_size=96, padding=7, blob_sigma=5.0)
    assert (m.arch, m.target_size_yx, m.padding, m.blob_sigma) == ("resunet18", (96, 96), 7, 5.0)
    assert not m.net.training and m.device == torch.device("cpu")
    with pytest.raises(UnknownNameError) as e:
        dextr_lib.create_model("resnet18")
    for name in dextr_lib.list_models():
        assert name in str(e.value)


def test_predict_shapes_and_dtypes(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    other = np.zeros((50, 30, 3), np.uint8)
    other_pts = np.array([[25, 2], [26, 27], [3, 15], [47, 14]])
    probs = tiny_model.predict([image, other], [pts, other_pts])
    assert [p.shape for p in probs] == [(64, 80), (50, 30)]
    assert all(p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 for p in probs)
    masks = tiny_model.predict([image, other], [pts, other_pts], threshold=0.5)
    assert all(m.dtype == bool for m in masks)
    np.testing.assert_array_equal(masks[0], probs[0] >= 0.5)


def test_list_and_array_points_and_predict_image_agree(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    pts2 = pts + np.array([2, -3])
    a = tiny_model.predict([image, image], [pts, pts2])
    b = tiny_model.predict([image, image], np.stack([pts, pts2]).astype(float))
    c = tiny_model.predict_image(image, [pts, pts2])
    d = tiny_model.predict_image(image, pts)  # one (4, 2) object
    e = tiny_model.predict_image(image, [pts, pts2], batch_size=1)
    for x, y, z, w in zip(a, b, c, e):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
        np.testing.assert_allclose(x, w, atol=1e-5)
    np.testing.assert_allclose(d[0], a[0], atol=1e-5)  # other batch composition: float noise


def test_image_forms_give_the_same_masks(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    gray = image[..., 1]
    gray_rgb = np.repeat(gray[..., None], 3, axis=2)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 7, np.uint8)], axis=2)
    ref = tiny_model.predict([image], [pts])[0]
    ref_gray = tiny_model.predict([gray_rgb], [pts])[0]
    same_as_ref = {
        "PIL": PIL.Image.fromarray(image), "RGBA": rgba, "PIL RGBA": PIL.Image.fromarray(rgba),
        "float": image.astype(np.float32) / 255, "float64": image / 255.0,
    }
    for name, img in same_as_ref.items():
        np.testing.assert_array_equal(tiny_model.predict([img], [pts])[0], ref, err_msg=name)
    for name, img in {"gray": gray, "gray (H,W,1)": gray[..., None], "PIL L": PIL.Image.fromarray(gray)}.items():
        np.testing.assert_array_equal(tiny_model.predict([img], [pts])[0], ref_gray, err_msg=name)


def test_predict_restores_mode_and_ignores_batchnorm_state(synthetic_sample):
    image, _, pts = synthetic_sample
    torch.manual_seed(1)
    model = dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)
    ref = model.predict([image], [pts])[0]
    bn = model.net.base_model.bn1
    stats = (bn.running_mean.clone(), bn.running_var.clone())
    model.train()
    got = model.predict([image], [pts])[0]
    assert model.net.training  # mode restored
    np.testing.assert_array_equal(got, ref)  # eval-mode result even when called in train mode
    torch.testing.assert_close(bn.running_mean, stats[0], rtol=0, atol=0)  # BN stats untouched
    torch.testing.assert_close(bn.running_var, stats[1], rtol=0, atol=0)
    # Running a training-mode forward changes BN stats, but predict stays in eval mode.
    model.net(torch.randn(2, 4, 64, 64) * 5)
    model.eval()
    assert not np.array_equal(model.predict([image], [pts])[0], ref)  # stats did matter...
    assert not model.net.training


def test_predict_has_no_grad(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    with torch.enable_grad():
        out = tiny_model.predict([image], [pts])
    assert isinstance(out[0], np.ndarray)


def test_points_may_lie_outside_the_image(tiny_model, synthetic_sample):
    image, _, _ = synthetic_sample
    pts = np.array([[30, -5], [30, 90], [-4, 40], [70, 40]])
    assert tiny_model.predict([image], [pts])[0].shape == (64, 80)


def test_typed_errors(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    with pytest.raises(MismatchError, match="2 images but 1"):
        tiny_model.predict([image, image], [pts])
    with pytest.raises(InvalidPointsError, match=r"\(3, 2\)"):
        tiny_model.predict([image], [pts[:3]])
    with pytest.raises(InvalidPointsError, match="NaN"):
        tiny_model.predict([image], [np.where(pts == pts[0, 0], np.nan, pts)])
    with pytest.raises(InvalidPointsError, match="zero size"):
        tiny_model.predict([image], [np.array([[5, 5]] * 4)])
    with pytest.raises(InvalidImageError, match="list"):
        tiny_model.predict(image, [pts])
    with pytest.raises(InvalidImageError, match="torch.Tensor"):
        tiny_model.predict([torch.zeros(3, 64, 80)], [pts])
    with pytest.raises(InvalidImageError, match=r"\[0, 1\]"):
        tiny_model.predict([image.astype(np.float32)], [pts])
    with pytest.raises(InvalidImageError, match="shape"):
        tiny_model.predict([np.zeros((4, 5, 2), np.uint8)], [pts])
    with pytest.raises(ValueError, match="threshold"):
        tiny_model.predict([image], [pts], threshold=1.5)
    assert issubclass(InvalidPointsError, dextr_lib.DextrError)


def test_device_argument(tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    np.testing.assert_array_equal(
        tiny_model.predict([image], [pts], device="cpu")[0], tiny_model.predict([image], [pts])[0])
    with pytest.raises(dextr_lib.DextrError, match="device"):
        tiny_model.predict([image], [pts], device="tpu")


def test_precision_bf16_is_close_to_fp32_and_bad_precisions_raise(tiny_model, synthetic_sample):
    from dextr_lib.inference.device import DeviceError

    image, _, pts = synthetic_sample
    exact = tiny_model.predict([image], [pts])[0]
    fast = tiny_model.predict([image], [pts], precision="bf16")[0]
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    assert np.abs(fast - exact).mean() < 0.02 and not np.array_equal(fast, exact)
    with pytest.raises(UnknownNameError, match="unknown precision 'half'.*fp32, bf16, fp16"):
        tiny_model.predict([image], [pts], precision="half")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="needs a GPU"):
            tiny_model.predict_image(image, [pts], precision="fp16")
