"""Fixtures of the ``dextr serve`` tests: a photo folder and an app factory. fastapi is the
``serve`` extra, so it is imported where a test asks for a client (the test skips without it)."""
from __future__ import annotations

import PIL.Image
import pytest


@pytest.fixture
def photos(tmp_path, synthetic_sample):
    """A photo folder: ``disk.png`` (the synthetic disk), ``sub/flipped.jpg`` (mirrored) and
    ``notes.txt`` (not a photo)."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    image, _, _ = synthetic_sample
    PIL.Image.fromarray(image).save(folder / "disk.png")
    PIL.Image.fromarray(image[:, ::-1]).save(folder / "sub" / "flipped.jpg", quality=95)
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture
def make_client(tmp_path, tiny_model):
    """``make(images, annotations=tmp_path/ann.json, base_url=..., model=tiny_model, **create_app
    options)`` -> a TestClient of a new app; every app is closed (its lock released) at
    teardown."""
    pytest.importorskip("httpx")
    TestClient = pytest.importorskip("fastapi.testclient").TestClient
    from dextr_lib.serving import close_app, create_app

    apps = []

    def make(images=None, annotations=None, base_url="http://localhost", model=None, **kw):
        app = create_app(model or tiny_model, images, annotations or tmp_path / "ann.json", **kw)
        apps.append(app)
        return TestClient(app, base_url=base_url)

    yield make
    for app in apps:
        close_app(app)
