"""Importing legacy checkpoints: dextr 0.1.2 pickles and original DEXTR-PyTorch state dicts."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dextr_lib
from dextr_lib.architectures import build_network
from dextr_lib.errors import CheckpointError
from dextr_lib.legacy import read_any_checkpoint
from dextr_lib.preprocessing import get_profile
from helpers.legacy_files import write_dextr012_resunet18, write_malicious_pickle


@pytest.fixture(scope="module")
def dextr012_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("legacy") / "dextr_model.pth"
    net = write_dextr012_resunet18(path, target_size=64, padding=5, blob_sigma=4.0)
    return path, net


def test_dextr012_pickle_imports_identical_weights(dextr012_file):
    path, ref_net = dextr012_file
    model = dextr_lib.load_model(path, map_location="cpu")
    assert "dextr" not in sys.modules  # the package is neither needed nor imported
    assert model.arch == "resunet18"
    assert model.load_note == f"converted from dextr 0.1.2 model file {path.name}"
    pp = model.preprocess
    assert (pp.name, pp.target_size, pp.padding, pp.blob_sigma) == ("dextr012", 64, 5.0, 4.0)
    ours = model.net.state_dict()
    theirs = {k: v for k, v in ref_net.state_dict().items() if not k.startswith("base_model.fc.")}
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.net(x), ref_net(x)["out"], atol=1e-5)


def test_malicious_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    path = tmp_path / "evil.pth"
    write_malicious_pickle(path)
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    with pytest.raises(CheckpointError, match=r"refusing to load (posix|os|nt)\.system"):
        dextr_lib.load_model(path)
    assert calls == []


def test_non_checkpoint_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        read_any_checkpoint(path)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a dextr checkpoint"):
        read_any_checkpoint(tmp_path / "other.pth")


@pytest.fixture(scope="module")
def psp_state_dict():
    """An original DEXTR-PyTorch style state dict: DataParallel prefix, no BN counters."""
    torch.manual_seed(0)
    net = build_network("psp101")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return {"module." + k: v.clone() for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def test_original_state_dict_round_trips_through_convert(psp_state_dict, tmp_path):
    from typer.testing import CliRunner

    from dextr_cli.app import app

    src, dst = tmp_path / "dextr_pascal-sbd.pth", tmp_path / "converted.pt"
    torch.save(psp_state_dict, src)
    result = CliRunner().invoke(app, ["convert", str(src), str(dst)])
    assert result.exit_code == 0, result.output
    assert "converted from DEXTR-PyTorch" in result.output
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt["format"] == "dextr" and ckpt["arch"] == "psp101"
    assert ckpt["preprocess"] == get_profile("original").to_dict()
    for k, v in psp_state_dict.items():
        assert torch.equal(ckpt["state_dict"][k[len("module."):]], v)
    assert dextr_lib.load_model(dst, map_location="cpu").load_note is None
    again = CliRunner().invoke(app, ["convert", str(src), str(dst)])
    assert again.exit_code != 0 and "--force" in again.output


def _original_demo(net, image, points_xy, size, pad=50):
    """The original DEXTR demo pipeline, re-implemented with numpy and torch.

    Differences from the original: cv2's INTER_CUBIC is torch's bicubic (same kernel, a=-0.75,
    half-pixel centres) and cv2 rounds the resized crop to uint8 where this keeps floats.
    """
    h, w = image.shape[:2]
    x_min, y_min = points_xy.min(axis=0) - pad
    x_max, y_max = points_xy.max(axis=0) + pad
    ch, cw = y_max - y_min + 1, x_max - x_min + 1
    crop = np.zeros((ch, cw, 3), np.uint8)
    vy0, vx0, vy1, vx1 = max(y_min, 0), max(x_min, 0), min(y_max, h - 1), min(x_max, w - 1)
    crop[vy0 - y_min:vy1 - y_min + 1, vx0 - x_min:vx1 - x_min + 1] = image[vy0:vy1 + 1, vx0:vx1 + 1]
    rgb = F.interpolate(torch.from_numpy(crop).permute(2, 0, 1)[None].double(), size=(size, size),
                        mode="bicubic", align_corners=False)
    pts = (size * (points_xy - [x_min, y_min]) * [1 / cw, 1 / ch]).astype(int)
    yy, xx = np.mgrid[:size, :size].astype(float)
    heat = np.zeros((size, size))
    for x0, y0 in pts:
        heat = np.maximum(heat, np.exp(-4 * np.log(2) * ((xx - x0) ** 2 + (yy - y0) ** 2) / 10.0 ** 2))
    heat = 255 * (heat - heat.min()) / max(heat.max() - heat.min(), 1e-8)
    inputs = torch.cat([rgb, torch.from_numpy(heat)[None, None]], dim=1).float()
    with torch.no_grad():
        pred = torch.sigmoid(net(inputs)).double()
    pred = F.interpolate(pred, size=(ch, cw), mode="bicubic", align_corners=False)[0, 0].numpy()
    result = np.zeros((h, w))
    result[vy0:vy1 + 1, vx0:vx1 + 1] = pred[vy0 - y_min:vy1 - y_min + 1, vx0 - x_min:vx1 - x_min + 1]
    keep = np.zeros((h, w), bool)
    keep[max(y_min + pad, 0):y_max - pad + 1, max(x_min + pad, 0):x_max - pad + 1] = True
    return result * keep


def test_original_profile_matches_demo_pipeline(psp_state_dict):
    rng = np.random.default_rng(0)
    h, w = 150, 190
    yy, xx = np.mgrid[:h, :w]
    image = rng.integers(0, 90, size=(h, w, 3)).astype(np.uint8)
    objects = [((yy - 70) ** 2 / 40 ** 2 + (xx - 95) ** 2 / 60 ** 2) <= 1,  # inside
               ((yy - 20) ** 2 + (xx - 175) ** 2) <= 30 ** 2]                 # touches 2 borders
    for m, colour in zip(objects, ([230, 180, 40], [40, 200, 220])):
        image[m] = colour
    model = dextr_lib.load_model(_save(psp_state_dict), map_location="cpu")
    size = 64  # the original is 512; a smaller crop keeps the test fast, the rules are the same
    model.preprocess = model.preprocess.replace(target_size=size)
    for m in objects:
        pts_yx = dextr_lib.extreme_points_from_mask(m)
        _calibrate(model, image, pts_yx)
        ours = model.predict_image(image, [pts_yx])[0]
        ref = _original_demo(model.net, image, pts_yx[:, ::-1], size)
        box = ref != 0
        assert np.ptp(ref[box]) > 0.3  # probabilities that vary, not a constant map
        assert np.all(ours[~box] == 0)  # zero outside the points' box, as the demo
        assert np.abs(ours - ref)[box].max() < 0.01
        a, b = ours >= 0.8, ref >= 0.8
        assert (a & b).sum() / (a | b).sum() >= 0.99


def _save(state_dict):
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "dextr_pascal.pth")
    torch.save(state_dict, path)
    return path


def _calibrate(model, image, pts_yx):
    """Rescale the random classifier so this object's logits have zero mean and std 3 over the
    crop, like a trained network's: random weights otherwise give a nearly constant map."""
    from dextr_lib.preprocessing import image_to_tensor

    x, _ = model.preprocess.make_inputs(image_to_tensor(image), pts_yx[None])
    final = model.net.layer5.final
    with torch.no_grad():
        logits = model.net.eval()(x)
        k = 3.0 / logits.std()
        final.weight.mul_(k)
        final.bias.copy_((final.bias - logits.mean()) * k)
