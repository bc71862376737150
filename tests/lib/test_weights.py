"""The model registry's schema and the cache directory rules."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import dextr_lib
from dextr_lib import weights
from dextr_lib.architectures import list_architectures
from dextr_lib.errors import CheckpointError, UnknownNameError
from dextr_lib.preprocessing import PROFILES


@pytest.mark.parametrize("name", weights.list_pretrained())
def test_registry_entry_schema(name):
    e = weights.get_pretrained(name)
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


def test_expected_entries():
    assert set(weights.list_pretrained()) >= {"pascalvoc-resunet101", "pascal-sbd", "pascal", "coco"}
    voc = weights.get_pretrained("pascalvoc-resunet101")
    assert voc.hash_prefix == "a2d81727" and voc.arch == "resunet101" and voc.profile == "dextr012"
    assert voc.filename == "dextr_pascalvoc_resunet101-a2d81727.pth"
    for name, acc in (("pascal-sbd", "91.5"), ("pascal", "90.5"), ("coco", "87.8")):
        e = weights.get_pretrained(name)
        assert e.arch == "psp101" and e.profile == "original" and e.accuracy.startswith(acc)
        assert e.filename == f"dextr_{name}.pth"


def test_unknown_name_lists_choices():
    with pytest.raises(UnknownNameError, match="pascalvoc-resunet101"):
        weights.get_pretrained("pascal-voc")


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DEXTR_HOME", str(tmp_path / "home"))
    assert weights.models_dir() == tmp_path / "home" / "models"
    assert weights.models_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("DEXTR_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if weights.sys.platform.startswith("linux"):
        assert weights.models_dir() == tmp_path / "xdg" / "dextr" / "models"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert weights.models_dir() == Path.home() / ".cache" / "dextr" / "models"


def test_mirror_url_keeps_file_name(monkeypatch):
    e = weights.get_pretrained("coco")
    monkeypatch.setenv("DEXTR_MIRROR", "https://mirror.example/dextr")
    assert weights.mirror_urls(e)[0] == "https://mirror.example/dextr/dextr_coco.pth"
    assert weights.mirror_urls(e, "https://other/x/")[0] == "https://other/x/dextr_coco.pth"
    assert weights.mirror_urls(e)[1:] == list(e.urls)


def test_load_model_rejects_unknown_spec():
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a registered model"):
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
    entry = weights.get_pretrained("pascalvoc-resunet101")
    write_dextr012_resunet18(cache / entry.filename, target_size=64, padding=5, blob_sigma=4.0)
    monkeypatch.setattr("dextr_lib.download.download_first", _refuse_download)
    m = dextr_lib.DextrModel.pascalvoc_resunet101(map_location="cpu", cache_dir=cache)
    assert m.meta["pretrained"] == "pascalvoc-resunet101"
    assert m.preprocess.name == "dextr012" and m.preprocess.target_size == 64
    assert "dextr 0.1.2" in m.load_note


def _refuse_download(*args, **kwargs):
    raise AssertionError("tried to download a cached model")
