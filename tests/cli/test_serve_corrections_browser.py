"""Corrections on the annotation page in a real browser (headless system Chromium, Playwright):
four points, a negative correction that cuts the mask where it was clicked, a right-click and
its undo, brush and eraser strokes, and the accepted object's file entry.

The server runs in-process on a deterministic model whose negative-click channel removes the
pixels around each negative click (``tests.helpers.models.negatives_cut_model``): the test
proves the page's whole path (the click is sent as a negative, the mask shown is the server's
answer and the library's, the stored mask is the edited one), not that a trained model learns
to use negatives. Skips where Playwright or a Chromium is missing.
Set ``DEXTR_SCREENSHOT=path.png`` to keep the page's screenshot.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from pycocotools.coco import COCO  # noqa: E402

from dextr_lib.core.geometry import xy_to_yx  # noqa: E402
from dextr_lib.inference.engine import resolve_threshold  # noqa: E402
from dextr_lib.serving import close_app, create_app  # noqa: E402
from tests.cli.test_serve_browser import CHROMIUM_ARGS, chromium, free_port  # noqa: E402
from tests.helpers.models import negatives_cut_model  # noqa: E402

H, W = 160, 200
# The disk's left, right, top and bottom pixels [x, y]; a negative click at its centre.
POINTS = [(50, 80), (150, 80), (100, 30), (100, 130)]
NEGATIVE = (100, 80)


def disk_photo() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    image = np.random.default_rng(1).integers(0, 60, size=(H, W, 3), dtype=np.uint8)
    image[(yy - 80) ** 2 + (xx - 100) ** 2 <= 50 ** 2] = [220, 200, 40]
    return image


@pytest.fixture
def serve(tmp_path):
    """``serve(model)`` -> (url, annotations file): ``dextr serve``'s app in a uvicorn thread."""
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.fromarray(disk_photo()).save(folder / "disk.png")
    running = []

    def start(model):
        ann = tmp_path / f"ann{len(running)}.json"
        app = create_app(model, folder, ann, classes=["disk"])
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread, app))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}/", ann

    yield start
    for server, thread, app in running:
        server.should_exit = True
        thread.join(timeout=10)
        close_app(app)


@contextlib.contextmanager
def page_at(url):
    """The page in headless Chromium, its image loaded; no script error may happen on it."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("window.dextr && dextr.state.current && dextr.state.current.img",
                                   timeout=60_000)
            yield page
            assert not errors
        finally:
            browser.close()


def at(page, x, y):
    return page.evaluate(f"dextr.pageXY({x}, {y})")


def page_mask(page) -> np.ndarray:
    return np.array(page.evaluate("Array.from(dextr.state.pred.mask)"), bool).reshape(H, W)


def four_points(page):
    for x, y in POINTS:
        page.mouse.click(*at(page, x, y))
    page.wait_for_selector("canvas[data-mask=ready]", timeout=60_000)


def predict_call(page, action):
    """Run ``action``; return the /api/predict request body and answer it caused, once the
    page shows the answer."""
    with page.expect_response(lambda r: r.url.endswith("/api/predict")) as info:
        action()
    response = info.value
    page.wait_for_selector("canvas[data-mask=ready]", timeout=60_000)
    return json.loads(response.request.post_data), response.json()


def stroke(page, key, start, end) -> np.ndarray:
    """Pick a tool by its key and drag it from ``start`` to ``end`` (image pixels); the mask after."""
    page.keyboard.press(key)
    page.mouse.move(*at(page, *start))
    page.mouse.down()
    page.mouse.move(*at(page, *end), steps=8)
    page.mouse.up()
    return page_mask(page)


def answer_mask(answer) -> np.ndarray:
    full = np.zeros((H, W), bool)
    x, y, w, h = (int(v) for v in answer["bbox"])
    crop = np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(answer["mask"])))) > 127
    full[y:y + h, x:x + w] = crop
    return full


def test_negative_correction_brush_and_eraser_reach_the_file(serve, tmp_path):
    model = negatives_cut_model()
    url, ann_file = serve(model)
    with page_at(url) as page:
        page.wait_for_function("document.querySelector('#ability').textContent.includes('negative')")
        assert "positive and negative" in page.inner_text("#ability")
        four_points(page)
        before = page_mask(page)
        nx, ny = NEGATIVE
        assert before[ny, nx]

        def shift_click():
            page.keyboard.down("Shift")
            page.mouse.click(*at(page, nx, ny))
            page.keyboard.up("Shift")

        sent, answer = predict_call(page, shift_click)
        # (the mouse moves in whole screen pixels: the click lands within half an image pixel)
        assert np.abs(np.subtract(sent["negative"], [NEGATIVE])).max() <= 0.5 and sent["positive"] == []
        after = page_mask(page)
        np.testing.assert_array_equal(after, answer_mask(answer))  # the page shows the answer
        expected = model.predict([disk_photo()], [xy_to_yx(sent["points"])], negative=[xy_to_yx(sent["negative"])],
                                 threshold=resolve_threshold(None, model.preprocess))[0]
        np.testing.assert_array_equal(after, expected)  # ... which is the library's mask
        assert not after[ny, nx] and after.sum() < before.sum() and not (after & ~before).any()
        # A right-click is a negative correction too (no context menu); Backspace takes it back.
        first = sent["negative"]
        sent, _ = predict_call(page, lambda: page.mouse.click(*at(page, 75, 80), button="right"))
        assert sent["negative"][0] == first[0] and np.abs(np.subtract(sent["negative"][1], (75, 80))).max() <= 0.5
        sent, _ = predict_call(page, lambda: page.keyboard.press("Backspace"))
        assert sent["negative"] == first
        np.testing.assert_array_equal(page_mask(page), after)
        # Brush (B) adds a stroke in the empty corner, eraser (R) cuts a band through the object.
        brushed = stroke(page, "b", (10, 10), (30, 10))
        assert brushed[10, 10:31].all() and brushed.sum() > after.sum() and not after[10, 10:31].any()
        edited = stroke(page, "r", (60, 100), (140, 100))
        assert not edited[100, 60:141].any() and after[100, 60:141].any()
        assert page.get_attribute("canvas", "data-edits") == "2"
        shot = Path(os.environ.get("DEXTR_SCREENSHOT") or tmp_path / "serve.png")
        page.screenshot(path=str(shot))
        page.fill("#class", "disk")
        page.keyboard.press("Enter")
        page.wait_for_selector("canvas[data-objects='1']", timeout=60_000)
        coco = COCO(str(ann_file))
        (ann,) = coco.anns.values()
        np.testing.assert_array_equal(coco.annToMask(ann) > 0, edited)  # the edited mask is stored
        assert ann["negative_points"] == first and "positive_points" not in ann


def test_a_model_without_negatives_says_so_and_takes_the_click_back(serve, tiny_model):
    url, _ = serve(tiny_model)
    with page_at(url) as page:
        page.wait_for_function("document.querySelector('#ability').textContent !== ''")
        assert "positive only" in page.inner_text("#ability")
        four_points(page)
        page.mouse.click(*at(page, *NEGATIVE), button="right")
        page.wait_for_function("document.querySelector('#message').textContent.includes('taken back')")
        assert "negative" in page.inner_text("#message")
        assert page.evaluate("dextr.state.clicks.length") == 0
        assert page.get_attribute("canvas", "data-mask") == "ready"
