"""Checkpoints: round trip, weights_only loading, atomic writes and unreadable files."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import dextr_lib
from dextr_lib import CheckpointError, DextrModel
from dextr_lib.weights.architectures import register_architecture
from dextr_lib.weights.architectures._registry import _BUILDERS
from dextr_lib.weights.checkpoint import FORMAT_VERSION, atomic_torch_save, read_checkpoint


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    tiny_model.save(path)
    return path


def test_round_trip_gives_identical_predictions(saved, tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    loaded = DextrModel.load(saved, map_location="cpu")
    assert loaded.preprocess == tiny_model.preprocess and loaded.arch == tiny_model.arch
    assert not loaded.net.training
    for a, b in zip(loaded.predict([image, image], [pts, pts + 2]),
                    tiny_model.predict([image, image], [pts, pts + 2])):
        np.testing.assert_array_equal(a, b)
    via_resolver = dextr_lib.load_model(saved, map_location="cpu")
    np.testing.assert_array_equal(via_resolver.predict([image], [pts])[0],
                                  tiny_model.predict([image], [pts])[0])


def test_loading_fills_the_network_without_initialising_it_first(saved, tiny_model, monkeypatch):
    """Weights the file holds are not randomly initialised first (time and memory spent for
    nothing); a network with a tensor the file cannot fill is built and initialised as usual."""
    initialised = []
    real = torch.nn.init.kaiming_normal_, torch.nn.init.kaiming_uniform_

    def spy(init):
        def wrapped(tensor, *args, **kwargs):
            initialised.append(tensor.device.type)
            return init(tensor, *args, **kwargs)
        return wrapped

    with monkeypatch.context() as m:
        m.setattr(torch.nn.init, "kaiming_normal_", spy(real[0]))
        m.setattr(torch.nn.init, "kaiming_uniform_", spy(real[1]))
        loaded = DextrModel.load(saved, map_location="cpu")
    assert initialised and set(initialised) == {"meta"}  # shapes only: no memory, no random numbers
    for name, value in tiny_model.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[name], value), name

    class WithConstant(torch.nn.Module):  # a non-persistent buffer: in no checkpoint
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 1, 1)
            self.register_buffer("scale", torch.full((1,), 3.0), persistent=False)

        def forward(self, x):
            return self.conv(x) * self.scale

    register_architecture("with-constant-test")(lambda **kw: WithConstant())
    try:
        ckpt = dict(tiny_model.checkpoint_dict(), arch="with-constant-test",
                    state_dict=WithConstant().state_dict())
        loaded = DextrModel.from_checkpoint(ckpt, map_location="cpu")
        assert loaded.net.scale.device.type == "cpu" and loaded.net.scale.item() == 3.0
    finally:
        _BUILDERS.pop("with-constant-test")


def test_file_is_a_plain_dict_loadable_with_weights_only(saved, tiny_model):
    ckpt = torch.load(saved, weights_only=True, map_location="cpu")
    assert ckpt["format"] == "dextr" and ckpt["format_version"] == FORMAT_VERSION
    assert ckpt["library_version"] == dextr_lib.__version__
    assert ckpt["arch"] == "resunet18"
    assert ckpt["preprocess"]["target_size"] == 64 and ckpt["preprocess"]["blob_sigma"] == 4.0
    assert ckpt["preprocess"]["mean"][3] == pytest.approx(0.008)
    assert set(ckpt["state_dict"]) == set(tiny_model.net.state_dict())


def test_atomic_save_leaves_no_temp_files(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "a.pt")
    tiny_model.save(tmp_path / "a.pt")  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    atomic_torch_save({"old": torch.ones(2)}, path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"new": torch.zeros(2)}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "content, needle",
    [
        pytest.param(b"not a checkpoint at all", "cannot read checkpoint", id="garbage"),
        pytest.param(pickle.dumps({"x": _Evil()}, protocol=2), "weights_only", id="arbitrary-pickle"),
    ],
)
def test_unreadable_files_raise_checkpoint_error(tmp_path, content, needle):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle):
        read_checkpoint(p)
    with pytest.raises(CheckpointError):
        DextrModel.load(p)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        DextrModel.load(tmp_path / "nope.pt")


def test_structurally_wrong_checkpoints(tmp_path, tiny_model):
    cases = {
        "notdextr": ({"state_dict": {}}, "not a dextr checkpoint"),
        "future": ({**tiny_model.checkpoint_dict(), "format_version": FORMAT_VERSION + 1}, "upgrade"),
        "noarch": ({k: v for k, v in tiny_model.checkpoint_dict().items() if k != "arch"}, "'arch'"),
        "wrongarch": ({**tiny_model.checkpoint_dict(), "arch": "resunet34"}, "do not fit"),
        "badpre": ({**tiny_model.checkpoint_dict(), "preprocess": {"target_size": 3}}, "pre-processing"),
        "unknownarch": ({**tiny_model.checkpoint_dict(), "arch": "nope"}, "nope"),
    }
    for name, (ckpt, needle) in cases.items():
        p = tmp_path / f"{name}.pt"
        torch.save(ckpt, p)
        with pytest.raises(dextr_lib.DextrError, match=needle):
            DextrModel.load(p)


def test_extra_keys_are_kept(tmp_path, tiny_model):
    p = tmp_path / "t.pt"
    atomic_torch_save(tiny_model.checkpoint_dict(training={"epoch": 3}), p)
    assert read_checkpoint(p)["training"] == {"epoch": 3}
    DextrModel.load(p)  # loads despite the extra key


def test_saved_file_has_the_permissions_of_a_plain_write(tmp_path, tiny_model):
    import os
    import stat

    old = os.umask(0o022)
    try:
        tiny_model.save(tmp_path / "m.pt")
    finally:
        os.umask(old)
    # A private temp file (0600) renamed into place would hide models from teammates.
    assert stat.S_IMODE(os.stat(tmp_path / "m.pt").st_mode) == 0o644
