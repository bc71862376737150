"""The model zoo: the registry's schema, the cache folder, resolving names and files."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import dextr_lib
from dextr_lib.errors import CheckpointError, UnknownNameError
from dextr_lib.inference.preprocessing import PROFILES
from dextr_lib.weights import zoo
from dextr_lib.weights.architectures import list_architectures


@pytest.mark.parametrize("name", zoo.list_pretrained())
def test_registry_entry_schema(name):
    e = zoo.get_pretrained(name)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", e.name)
    assert e.urls and all(u.startswith("https://") for u in e.urls)
    assert len({Path(u).name for u in e.urls}) == 1, "mirrors must serve the same file name"
    assert e.arch in list_architectures()
    assert e.profile in PROFILES
    assert e.file_format in ("dextr012", "original", "dextr")
    if e.sha256 is not None:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256)
    if e.hash_prefix is not None:
        assert re.fullmatch(r"[0-9a-f]{8,64}", e.hash_prefix)
        assert f"-{e.hash_prefix}." in e.filename  # torch.hub's naming convention
    assert e.source and e.licence and e.accuracy
    assert e.size is None or e.size > 0


def test_unknown_name_lists_choices():
    with pytest.raises(UnknownNameError, match="pascalvoc-resunet101"):
        zoo.get_pretrained("pascal-voc")


def test_models_dir_explicit_else_user_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DEXTR_HOME", str(tmp_path / "home"))
    assert zoo.models_dir() == tmp_path / "home" / "models"
    assert zoo.models_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_mirror_url_keeps_file_name(monkeypatch):
    e = zoo.get_pretrained("coco")
    monkeypatch.setenv("DEXTR_MIRROR", "https://mirror.example/dextr")
    assert zoo.mirror_urls(e)[0] == "https://mirror.example/dextr/dextr_coco.pth"
    assert zoo.mirror_urls(e, "https://other/x/")[0] == "https://other/x/dextr_coco.pth"
    assert zoo.mirror_urls(e)[1:] == list(e.urls)


def test_load_model_rejects_unknown_spec():
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a pretrained model"):
        dextr_lib.load_model("no-such-model")


def test_load_model_reads_our_checkpoint_without_note(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m.pt")
    m = dextr_lib.load_model(tmp_path / "m.pt", map_location="cpu")
    assert m.load_note is None and m.arch == "resunet18"
    assert m.preprocess == tiny_model.preprocess


def test_from_pretrained_uses_cached_registry_file(tmp_path, monkeypatch):
    """A file already in the cache is used as it is (no network)."""
    from helpers.legacy_files import write_dextr012_resunet18

    cache = tmp_path / "cache"
    cache.mkdir()
    entry = zoo.get_pretrained("pascalvoc-resunet101")
    write_dextr012_resunet18(cache / entry.filename, target_size=64, padding=5, blob_sigma=4.0)
    monkeypatch.setattr("dextr_lib.weights.download.download_first", _refuse_download)
    m = dextr_lib.DextrModel.pascalvoc_resunet101(map_location="cpu", cache_dir=cache)
    assert m.meta["pretrained"] == "pascalvoc-resunet101"
    assert m.preprocess.name == "dextr012" and m.preprocess.target_size == 64
    assert "dextr 0.1.2" in m.load_note


def _refuse_download(*args, **kwargs):
    raise AssertionError("tried to download a cached model")


@pytest.mark.parametrize("arch", sorted({zoo.get_pretrained(n).arch for n in zoo.list_pretrained()}))
def test_estimated_sizes_are_the_architectures_weights(arch):
    """``approx_size`` (what ``download --list`` shows before a download) is what the arch's
    float32 weights take, to within 1%."""
    model = dextr_lib.create_model(arch, target_size=64)
    weights_bytes = sum(t.numel() * t.element_size() for t in model.net.state_dict().values())
    for name in zoo.list_pretrained():
        entry = zoo.get_pretrained(name)
        if entry.arch == arch and entry.size is None:
            assert entry.approx_size == pytest.approx(weights_bytes, rel=0.01), name
