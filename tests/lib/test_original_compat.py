"""The ``original`` profile and ``psp101`` against original DEXTR-PyTorch (issue 15).

The comparison with the original code needs a checkout of https://github.com/scaelles/DEXTR-PyTorch
(commit pinned in ``tests/helpers/compare_original.py``) named by ``$DEXTR_ORIGINAL_SRC``, and
``cv2`` (``opencv-python-headless``, in the ``dev`` extra); without them those tests skip::

    git clone https://github.com/scaelles/DEXTR-PyTorch /tmp/DEXTR-PyTorch
    git -C /tmp/DEXTR-PyTorch checkout 352ccc76067156ebcf7267b07e0a5e43d32e83d5
    DEXTR_ORIGINAL_SRC=/tmp/DEXTR-PyTorch pytest -m slow tests/lib/test_original_compat.py
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dextr_lib.inference.preprocessing import (
    Preprocess, _opencv_crop_resize, _opencv_paste, get_profile, image_to_tensor,
)
from dextr_lib.weights.architectures import build_network

SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "compare_original.py"
ORIGINAL_SRC = os.environ.get("DEXTR_ORIGINAL_SRC")


def _original_src() -> Path:
    if not ORIGINAL_SRC or not (Path(ORIGINAL_SRC) / "networks" / "deeplab_resnet.py").is_file():
        pytest.skip("set DEXTR_ORIGINAL_SRC to a DEXTR-PyTorch checkout to compare with the original")
    return Path(ORIGINAL_SRC)


# -- OpenCV's resize, reproduced in torch -------------------------------------------------------
def test_crop_resize_and_paste_match_cv2():
    """The crop (zero padding past the image, 8-bit bicubic, edge repeated) and the paste-back
    (float bicubic) against cv2.resize itself, on boxes inside, across and past the image."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    differing = total = 0
    for trial in range(12):
        h, w = (int(v) for v in rng.integers(20, 160, size=2))
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        if trial % 2:
            img = cv2.GaussianBlur(img, (0, 0), 2)
        y0, x0 = int(rng.integers(-40, h // 2)), int(rng.integers(-40, w // 2))
        y1, x1 = y0 + int(rng.integers(4, 300)), x0 + int(rng.integers(4, 300))
        size = int(rng.choice([48, 64, 96]))
        crop = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        vy0, vx0, vy1, vx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        if vy1 > vy0 and vx1 > vx0:
            crop[vy0 - y0:vy1 - y0, vx0 - x0:vx1 - x0] = img[vy0:vy1, vx0:vx1]
        ref = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC).astype(int)
        ours = _opencv_crop_resize(image_to_tensor(img), np.array([y0, x0, y1, x1]), size)
        ours = (ours * 255).round().int().permute(1, 2, 0).numpy()
        diff = np.abs(ours - ref)
        assert diff.max() <= 1  # float rounding can tip a level sitting on .5
        differing, total = differing + int((diff > 0).sum()), total + diff.size

        prob = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2)
        back = cv2.resize(prob, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
        expected = np.zeros((h, w), np.float32)
        if vy1 > vy0 and vx1 > vx0:
            expected[vy0:vy1, vx0:vx1] = back[vy0 - y0:vy1 - y0, vx0 - x0:vx1 - x0]
        full = torch.zeros(h, w)
        _opencv_paste(torch.from_numpy(prob), np.array([y0, x0, y1, x1]), full)
        np.testing.assert_allclose(full.numpy(), np.clip(expected, 0, 1), atol=1e-5)
    assert differing / total < 1e-4


def test_crop_resize_rules_without_cv2():
    image = torch.zeros(3, 10, 12)
    image[:, 2:8, 3:9] = 200 / 255.0
    # Same size: a copy; past the image: zeros; values stay on 8-bit levels.
    same = _opencv_crop_resize(image, np.array([0, 0, 10, 12]), 10)
    assert same.shape == (3, 10, 10)
    box = np.array([-5, -6, 15, 18])
    out = _opencv_crop_resize(image, box, 40)
    levels = out * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.min() >= 0 and levels.max() <= 255
    assert out[:, :8, :].abs().max() == 0 and out[:, :, :8].abs().max() == 0  # the zero padding
    assert out[:, 20, 20].min() == pytest.approx(200 / 255)
    # The crop's own edge pixels repeat: a box inside a constant image stays constant.
    flat = torch.full((3, 30, 30), 77 / 255.0)
    assert torch.allclose(_opencv_crop_resize(flat, np.array([5, 5, 12, 14]), 33), torch.full((3, 33, 33), 77 / 255.0))


# -- the original profile -----------------------------------------------------------------------
def test_original_profile_follows_the_demo():
    """demo.py truncates clicks to ints, crops min-50..max+50 inclusive, puts the Gaussians at
    int(512 * (p - lo) / crop size) and zeroes everything outside the clicks' box."""
    pp = get_profile("original", target_size=64)
    rgb = np.random.default_rng(0).integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    img = image_to_tensor(rgb)
    pts = np.array([[[40.7, 10.2], [45.9, 99.8], [20.5, 60.1], [70.99, 55.3]]])  # [y, x]
    whole = np.trunc(pts)
    x, boxes = pp.make_inputs(img, pts)
    x_whole, boxes_whole = pp.make_inputs(img, whole)
    assert torch.equal(x, x_whole) and np.array_equal(boxes, boxes_whole)
    np.testing.assert_array_equal(boxes[0], [20 - 50, 10 - 50, 70 + 51, 99 + 51])
    size = boxes[0, 2:] - boxes[0, :2]
    peaks = (64 * (whole[0] - boxes[0, :2]) * (1.0 / size)).astype(int)
    heat = x[0, 3] / 255
    for y, xx in peaks:
        assert heat[y, xx] == pytest.approx(1.0, abs=1e-5)
    levels = x[0, :3]
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # raw 0-255 input on 8-bit levels
    probs = torch.rand(1, 64, 64) * 0.5 + 0.25
    full = pp.paste(probs, boxes, rgb.shape[:2], pts)[0]
    assert torch.equal(full, pp.paste(probs, boxes_whole, rgb.shape[:2], whole)[0])
    inside = torch.zeros(90, 120, dtype=torch.bool)
    inside[20:71, 10:100] = True  # the clicks' box, both ends included, as crop2fullmask's
    assert (full[~inside] == 0).all() and (full[inside] > 0).all()


def test_stored_original_profile_gets_settings_added_later():
    """Checkpoints converted before integer_points/resampler existed follow the fixed profile."""
    stored = get_profile("original").to_dict()
    del stored["integer_points"], stored["resampler"]
    assert Preprocess.from_dict(stored) == get_profile("original")
    custom = dict(get_profile("dextr").to_dict(), target_size=64)
    del custom["resampler"]
    assert Preprocess.from_dict(custom) == get_profile("dextr", target_size=64)
    with pytest.raises(ValueError, match="whole"):
        get_profile("dextr", resampler="opencv")


# -- against the original code ------------------------------------------------------------------
@pytest.fixture
def original_network_module(monkeypatch):
    src = _original_src()
    monkeypatch.syspath_prepend(str(src))
    before = set(sys.modules)
    import networks.deeplab_resnet as resnet

    yield resnet
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("networks", "mypath"):
            del sys.modules[name]


def test_psp101_logits_match_the_original_network(original_network_module):
    """The original network's state dict loads into psp101 and gives the same logits."""
    torch.manual_seed(0)
    ref = original_network_module.resnet101(1, nInputChannels=4, classifier="psp").eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
        ref.layer5.final.weight.mul_(2000.0)  # logits of a few units instead of ~1e-3
    state = {"module." + k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    ours = build_network("psp101")
    from dextr_lib.weights.legacy import convert_original

    ours.load_state_dict(convert_original(state)["state_dict"])
    x = torch.rand(2, 4, 96, 96) * 255
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(ref(x), size=(96, 96), mode="bilinear", align_corners=True)
        got = ours.eval()(x)
    assert expected.std() > 0.5
    assert (got - expected).abs().max() <= 1e-3


@pytest.mark.slow
def test_imported_model_matches_the_original_code(shared_data, tmp_path):
    """Runs tests/helpers/compare_original.py: the original demo.py against dextr_lib on real
    photos (borders, grayscale, float clicks, small objects): logits <= 1e-3 on identical inputs,
    IoU@0.5 >= 0.99 and mean |dp| <= 0.005 per object, masks that vary with the image."""
    src = _original_src()
    pytest.importorskip("cv2")
    env = dict(os.environ, DEXTR_SHARED_DATA=str(shared_data))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--original-src", str(src), "--json", str(tmp_path / "rows.json"),
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, env=env, timeout=7200,
    )
    print(result.stdout)  # per-object numbers, shown with pytest -rP
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "all checks pass" in result.stdout
