"""Crafted model files give one CheckpointError/LimitError naming the file, never another
exception, and never a large allocation: bad metadata, absurd pre-processing, tiny pickles that
allocate gigabytes, oversized files, and dextr 0.1.2 graphs with cycles, deep chains and
wrong types."""
from __future__ import annotations

import math
import sys

import pytest
import torch
from helpers.legacy_files import fake_dextr_package, write_dextr012_resunet18
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app
from dextr_lib.errors import CheckpointError, LimitError
from dextr_lib.weights import checkpoint as ckpt_io
from dextr_lib.weights.loading import read_model_file as read_any_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def good_ckpt(tiny_model):
    return tiny_model.checkpoint() if hasattr(tiny_model, "checkpoint") else ckpt_io.make_checkpoint(
        tiny_model.arch, tiny_model.preprocess.to_dict(), tiny_model.net.state_dict(), {})


def _variant(ckpt, **changes):
    out = dict(ckpt)
    pre = dict(out["preprocess"])
    for k, v in changes.items():
        if k in pre:
            pre[k] = v
        else:
            out[k] = v
    out["preprocess"] = pre
    return out


@pytest.mark.parametrize("changes, error, needle", [
    ({"meta": [1, 2]}, CheckpointError, "'meta' must be a dict"),
    ({"target_size": math.inf}, CheckpointError, "target_size has an invalid value inf"),
    ({"target_size": 100000}, LimitError, "DEXTR_MAX_TARGET_SIZE"),
    ({"padding": math.nan}, CheckpointError, "padding has an invalid value nan"),
    ({"blob_sigma": "4"}, CheckpointError, "blob_sigma has an invalid value '4'"),
    ({"mean": [0.5, "x", 0.5, 0.5]}, CheckpointError, "mean has an invalid value"),
    ({"clip_to_box": 1}, CheckpointError, "clip_to_box"),
])
def test_bad_metadata_is_one_error(tmp_path, good_ckpt, changes, error, needle):
    path = tmp_path / "m.pt"
    torch.save(_variant(good_ckpt, **changes), path)
    with pytest.raises(error, match="m.pt") as e:
        dextr_lib.load_model(path, map_location="cpu")
    assert needle in str(e.value)


def test_integer_state_dict_key(tmp_path, good_ckpt):
    path = tmp_path / "m.pt"
    sd = dict(good_ckpt["state_dict"])
    sd[7] = torch.zeros(1)
    torch.save(dict(good_ckpt, state_dict=sd), path)
    with pytest.raises(CheckpointError, match="parameter names to tensors, got 7"):
        dextr_lib.load_model(path, map_location="cpu")


def test_cli_reports_bad_checkpoints_in_one_line(tmp_path, good_ckpt, synthetic_sample):
    import PIL.Image

    photo = tmp_path / "p.png"
    PIL.Image.fromarray(synthetic_sample[0]).save(photo)
    path = tmp_path / "m.pt"
    torch.save(_variant(good_ckpt, target_size=math.inf), path)
    r = runner.invoke(app, ["predict", str(photo), "-m", str(path), "-p", "27,30", "-p", "57,30",
                            "-p", "42,15", "-p", "42,45", "--out", str(tmp_path / "o.png")])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "m.pt" in r.output and "target_size" in r.output


# A protocol-2 pickle of bytearray(3_000_000_000): 35 bytes that ask for 3 GB.
BOMB = b"\x80\x02c__builtin__\nbytearray\n\x8a\x05\x00^\xd0\xb2\x00\x85R."


@pytest.mark.parametrize("reader", [ckpt_io.read_checkpoint, read_any_checkpoint])
def test_tiny_pickle_that_allocates_gigabytes_is_refused_unread(tmp_path, reader):
    path = tmp_path / "bomb.pt"
    path.write_bytes(BOMB)
    with pytest.raises(CheckpointError, match="bytearray"):
        reader(path)


def test_bytearray_bomb_inside_a_zip_checkpoint(tmp_path):
    import zipfile

    good = tmp_path / "good.pt"
    torch.save({"x": torch.zeros(3)}, good)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(bomb, "w") as out:
        for info in z.infolist():
            data = z.read(info)
            out.writestr(info, BOMB if info.filename.endswith("data.pkl") else data)
    with pytest.raises(CheckpointError, match="bytearray"):
        dextr_lib.load_model(bomb, map_location="cpu")


def test_model_file_size_limit(tmp_path, monkeypatch, good_ckpt):
    path = tmp_path / "m.pt"
    torch.save(good_ckpt, path)  # a few MB
    monkeypatch.setenv("DEXTR_MAX_CHECKPOINT_MB", "1")
    with pytest.raises(LimitError, match="DEXTR_MAX_CHECKPOINT_MB"):
        dextr_lib.load_model(path, map_location="cpu")
    monkeypatch.delenv("DEXTR_MAX_CHECKPOINT_MB")
    dextr_lib.load_model(path, map_location="cpu")


def _crafted_dextr012(path, mutate, recursion=None):
    """A dextr 0.1.2-style pickle whose live objects were changed by ``mutate(model)``."""
    with fake_dextr_package():
        from dextr.model import DextrModel

        write_dextr012_resunet18(path)
        model = torch.load(path, weights_only=False)
        assert isinstance(model, DextrModel)
        mutate(model)
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(recursion or old)
        try:
            torch.save(model, path)
        finally:
            sys.setrecursionlimit(old)


def _cycle(model):
    model.net.base_model.layer1[0].loop = model.net  # a module that contains its ancestor


def _deep(model):
    chain = torch.nn.Module()
    for _ in range(3000):
        outer = torch.nn.Module()
        outer.inner = chain
        chain = outer
    model.net.deep = chain


def _wrong_parameter(model):
    model.net.base_model.conv1.__dict__["_parameters"]["weight"] = "not a tensor"


def _wrong_modules(model):
    model.net.base_model.__dict__["_modules"] = [1, 2, 3]


def _bad_size(model):
    model.target_size_yx = (float("inf"), float("inf"))


def _nan_padding(model):
    model.padding = float("nan")


@pytest.mark.parametrize("mutate, needle", [
    (_cycle, "cycle"), (_deep, "deep"), (_wrong_parameter, "not a tensor"),
    (_wrong_modules, "base_model"), (_bad_size, "target_size"), (_nan_padding, "padding"),
])
def test_crafted_dextr012_graphs(tmp_path, mutate, needle):
    path = tmp_path / "legacy.pth"
    _crafted_dextr012(path, mutate, recursion=100000 if mutate is _deep else None)
    with pytest.raises(CheckpointError, match="legacy.pth") as e:
        read_any_checkpoint(path)
    assert needle in str(e.value)
