"""One rule for dextr's per-user folders: $DEXTR_HOME, else the platform's user cache."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import platformdirs
import pytest
from PIL import Image

from dextr_lib.data import build_dataset
from dextr_lib.data.base import default_cache_dir
from dextr_lib.utils import paths
from dextr_lib.weights import zoo


def test_dextr_home_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("DEXTR_HOME", str(tmp_path / "home"))
    assert paths.user_dir("models") == tmp_path / "home" / "models"
    assert zoo.models_dir() == tmp_path / "home" / "models"
    assert default_cache_dir() == tmp_path / "home" / "datasets"


def test_without_dextr_home_the_platform_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("DEXTR_HOME")
    root = Path(platformdirs.user_cache_dir("dextr", appauthor=False))
    assert zoo.models_dir() == root / "models"
    assert default_cache_dir() == root / "datasets"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG is the Linux rule")
def test_linux_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("DEXTR_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.models_dir() == tmp_path / "xdg" / "dextr" / "models"
    assert default_cache_dir() == tmp_path / "xdg" / "dextr" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert zoo.models_dir() == Path.home() / ".cache" / "dextr" / "models"


def test_dataset_index_is_cached_under_dextr_home(monkeypatch, tmp_path):
    """build_dataset's default cache is the same folder rule as the model cache."""
    monkeypatch.setenv("DEXTR_HOME", str(tmp_path / "home"))
    (tmp_path / "d").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "d" / "a.jpg")
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 2:5] = 1
    Image.fromarray(label).save(tmp_path / "d" / "a_label.png")
    build_dataset("custom_label", str(tmp_path / "d" / "*.jpg"), str(tmp_path / "d" / "*.png"))
    assert list((tmp_path / "home" / "datasets").glob("custom_label-*.json"))
