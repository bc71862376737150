"""``dextr convert``: legacy files to dextr checkpoints."""
from __future__ import annotations

import torch
from helpers.legacy_files import write_dextr012_resunet18, write_malicious_pickle
from typer.testing import CliRunner

from dextr_cli.app import app

runner = CliRunner()


def test_convert_dextr012_pickle(tmp_path):
    src, dst = tmp_path / "old.pth", tmp_path / "new.pt"
    net = write_dextr012_resunet18(src, target_size=64, padding=5, blob_sigma=4.0)
    result = runner.invoke(app, ["convert", str(src), str(dst)])
    assert result.exit_code == 0, result.output
    assert "converted from dextr 0.1.2" in result.output
    ckpt = torch.load(dst, weights_only=True)  # our format: plain data only
    assert ckpt["arch"] == "resunet18" and ckpt["preprocess"]["name"] == "dextr012"
    assert (ckpt["preprocess"]["target_size"], ckpt["preprocess"]["padding"]) == (64, 5.0)
    for k, v in net.state_dict().items():
        if not k.startswith("base_model.fc."):
            assert torch.equal(ckpt["state_dict"][k], v), k


def test_convert_refuses_malicious_pickle_in_one_line(tmp_path):
    src, dst = tmp_path / "evil.pth", tmp_path / "new.pt"
    write_malicious_pickle(src)
    result = runner.invoke(app, ["convert", str(src), str(dst)])
    assert result.exit_code == 1
    assert "Error:" in result.output and "refusing to load" in result.output
    assert "Traceback" not in result.output and not dst.exists()
