"""Shared fixtures. Tests that need ../shared/data skip cleanly where it is absent."""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from tests.helpers.models import new_tiny_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DEXTR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _restore_rng():
    """Tests may seed freely; global RNG state is restored afterwards."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    random.setstate(py_state)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test reads the developer's config or model cache, or touches the network.

    The homes are removed after the test (downloads land there), so a whole run's disk use stays
    near one test's rather than adding up over hundreds of them.
    """
    homes = [tmp_path_factory.mktemp("dextr_home"), tmp_path_factory.mktemp("torch_home")]
    monkeypatch.delenv("DEXTR_CONFIG", raising=False)
    monkeypatch.delenv("DEXTR_MIRROR", raising=False)
    monkeypatch.setenv("DEXTR_HOME", str(homes[0]))
    monkeypatch.setenv("TORCH_HOME", str(homes[1]))
    monkeypatch.setenv("COLUMNS", "200")
    yield
    for home in homes:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; the test is skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model():
    """A small, randomly initialised resunet18 at target size 64 (seeded, eval mode)."""
    return new_tiny_model()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, tiny_model):
    """``tiny_model`` saved as a checkpoint file, for the commands that take ``--model``."""
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    tiny_model.save(path)
    return path


@pytest.fixture
def photo(tmp_path, synthetic_sample):
    """``synthetic_sample``'s image as a PNG file."""
    path = tmp_path / "photo.png"
    PIL.Image.fromarray(synthetic_sample[0]).save(path)
    return path


@pytest.fixture
def synthetic_sample():
    """A 64x80 RGB image with a bright disk; returns ``(image, mask, points)``, points ``[y, x]``."""
    h, w = 64, 80
    yy, xx = np.mgrid[:h, :w]
    mask = (yy - 30) ** 2 + (xx - 42) ** 2 <= 15 ** 2
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    image[mask] = [220, 200, 40]
    from dextr_lib.core.geometry import extreme_points_from_mask

    return image, mask, extreme_points_from_mask(mask)
