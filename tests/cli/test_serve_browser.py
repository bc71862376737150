"""The annotation page in a real browser: ``dextr serve`` runs as a user starts it, headless
Chromium (the system's, driven by Playwright) clicks four points on a real photo, waits for the
overlay, accepts, and the annotations file holds the library's mask.

Skips where Playwright or a Chromium is missing, or without ``../shared/data``.
Set ``DEXTR_SCREENSHOT=path.png`` to keep the page's screenshot.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from pycocotools.coco import COCO  # noqa: E402

from dextr_lib.core.images import read_image  # noqa: E402
from dextr_lib.formats.coco import extreme_points_from_coco  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# The bear in bear.jpg (854x480): left, right, top and bottom, as [x, y].
BEAR = [(97, 268), (462, 400), (232, 215), (447, 430)]
TOKEN = "s3cret-browser-token"


def chromium() -> str:
    for path in (os.environ.get("DEXTR_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if path and Path(path).is_file():
            return path
    pytest.skip("no Chromium found (install the Debian 'chromium' package or set DEXTR_CHROMIUM)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path, tiny_model, shared_data):
    model = tmp_path / "tiny.pt"
    tiny_model.save(model)
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(shared_data / "photos" / "bear.jpg", photos / "bear.jpg")
    port = free_port()
    ann = tmp_path / "ann.json"
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dextr_cli", "serve", "-m", str(model), "--images", str(photos),
         "--annotations", str(ann), "--port", str(port), "--device", "cpu", "--classes", "bear,dog"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env={**os.environ, "DEXTR_TOKEN": TOKEN},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"dextr serve did not start:\n{log.read()}")
            time.sleep(0.3)
        yield url, ann, photos / "bear.jpg"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    # uvicorn's access log, written while the page worked, never shows the token (the start-up
    # lines print it for the user to open).
    access = [line for line in (tmp_path / "server.log").read_text().splitlines() if "HTTP/1.1" in line]
    assert access and not [line for line in access if TOKEN in line]


def test_four_clicks_accept_and_the_file_holds_the_library_mask(server, tiny_model, tmp_path):
    url, ann_file, photo = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            errors, requests = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            # As dextr serve prints it: the token in the fragment, which browsers never send.
            page.goto(f"{url}#token={TOKEN}")
            page.wait_for_function("window.dextr && dextr.state.current && dextr.state.current.img",
                                   timeout=60_000)
            assert page.inner_text("#image-name") == "bear.jpg"
            for x, y in BEAR:
                px, py = page.evaluate(f"dextr.pageXY({x}, {y})")
                page.mouse.click(px, py)
            page.wait_for_selector("canvas[data-mask=ready]", timeout=60_000)
            assert "mask in" in page.inner_text("#latency")
            page.fill("#class", "bear")
            page.keyboard.press("Enter")
            page.wait_for_selector("canvas[data-objects='1']", timeout=60_000)
            page.wait_for_function("document.querySelector('#nobjects').textContent === '1'")
            assert "Saved object 1 (bear)" in page.inner_text("#message")
            assert page.inner_text("#done") == "1"
            shot = Path(os.environ.get("DEXTR_SCREENSHOT") or tmp_path / "serve.png")
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            # Esc clears, Enter without points says so: errors are shown on the page.
            px, py = page.evaluate("dextr.pageXY(100, 100)")
            page.mouse.click(px, py)
            page.keyboard.press("Escape")
            assert page.evaluate("dextr.state.points.length") == 0
            page.keyboard.press("Enter")
            assert "Set four points first" in page.inner_text("#message")
            assert not errors
            # The token travels in a header only: no request the page made (the photo and the
            # API calls included) carries it in its URL, where access logs would keep it.
            assert any("/api/" in u for u in requests) and any("bear.jpg" in u for u in requests)
            assert not [u for u in requests if "token=" in u or TOKEN in u]
            assert "token" not in page.url  # and it left the address bar
        finally:
            browser.close()

    data = json.loads(ann_file.read_text())
    assert [c["name"] for c in data["categories"]] == ["bear", "dog"]
    gt = COCO(str(ann_file))
    (ann,) = gt.loadAnns(gt.getAnnIds())
    assert gt.loadImgs([ann["image_id"]])[0]["file_name"] == "bear.jpg"
    assert ann["iscrowd"] == 0 and gt.loadCats([ann["category_id"]])[0]["name"] == "bear"
    # The page clicked near BEAR (screen pixels round); the file keeps the points it sent.
    pts_yx = extreme_points_from_coco(ann["extreme_points"])
    np.testing.assert_allclose(pts_yx[:, ::-1], BEAR, atol=2)
    expected = tiny_model.predict([read_image(photo)], [pts_yx], threshold=0.5)[0]
    np.testing.assert_array_equal(gt.annToMask(ann).astype(bool), expected)
    assert ann["area"] == int(expected.sum()) > 0
