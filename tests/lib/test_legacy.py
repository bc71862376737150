"""Importing legacy checkpoints: dextr 0.1.2 pickles and original DEXTR-PyTorch state dicts."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from helpers.legacy_files import write_dextr012_resunet18, write_malicious_pickle

import dextr_lib
from dextr_lib.errors import CheckpointError
from dextr_lib.inference.preprocessing import get_profile
from dextr_lib.weights.architectures import build_network
from dextr_lib.weights.loading import read_model_file


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
        read_model_file(path)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a dextr checkpoint"):
        read_model_file(tmp_path / "other.pth")


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
