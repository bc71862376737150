"""CVAT compatibility of ``dextr serve``: the function record as CVAT's lambda manager parses it,
and the interactor call with the body CVAT builds, answered in the form CVAT's UI reads."""
from __future__ import annotations

import base64
import json

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from dextr_lib.inference.engine import resolve_threshold  # noqa: E402
from dextr_lib.serving import close_app, create_app  # noqa: E402

# The synthetic disk's extreme pixels [x, y], as CVAT's canvas gives clicks on their centres.
PIXELS = [[27, 30], [57, 30], [42, 15], [42, 45]]
CANVAS = [[x + 0.5, y + 0.5] for x, y in PIXELS]
# CVAT's lambda gateway adds these headers to every nuclio dashboard request.
NUCLIO_HEADERS = {"x-nuclio-project-name": "cvat", "x-nuclio-function-namespace": "nuclio",
                  "x-nuclio-invoke-via": "domain-name"}


@pytest.fixture
def client(tmp_path, tiny_model):
    app = create_app(tiny_model, None, tmp_path / "ann.json")
    yield TestClient(app, base_url="http://localhost")
    close_app(app)


@pytest.fixture
def frame(tmp_path, synthetic_sample):
    """The frame as CVAT's frame provider sends it: the encoded image file's bytes."""
    image, _, _ = synthetic_sample
    path = tmp_path / "frame.png"
    PIL.Image.fromarray(image).save(path)
    return image, path.read_bytes()


def cvat_payload(frame_bytes, pos_points, threshold=None, neg_points=()):
    """``LambdaFunction.invoke``'s payload for an interactor (``startswith_box`` false)."""
    data = {"frame": 0, "pos_points": pos_points, "neg_points": list(neg_points), "threshold": threshold}
    data = {k: v for k, v in data.items() if v is not None}
    payload = {}
    if data.get("threshold"):
        payload.update({"threshold": data["threshold"]})
    payload.update({
        "image": base64.b64encode(frame_bytes).decode("utf-8"),
        "pos_points": data["pos_points"],
        "neg_points": data["neg_points"],
        "obj_bbox": None,
    })
    return payload


def cvat_ui_mask(response, height, width):
    """What CVAT's UI makes of an interactor answer: ``mask`` over ``bounds`` (or the frame)."""
    mask = np.asarray(response["mask"])
    left, top, right, bottom = response.get("bounds", [0, 0, width - 1, height - 1])
    assert mask.shape == (bottom - top + 1, right - left + 1)
    full = np.zeros((height, width), dtype=bool)
    full[top:bottom + 1, left:right + 1] = mask > 0
    return full


def test_function_listing_parses_as_cvat_reads_it(client):
    r = client.get("/api/functions", headers=NUCLIO_HEADERS)
    assert r.status_code == 200
    functions = r.json()
    assert list(functions) == ["dextr"]
    data = functions["dextr"]
    # The fields LambdaFunction.__init__ reads, parsed the way it parses them.
    meta = data["metadata"]["annotations"]
    assert data["metadata"]["name"] == "dextr"
    assert meta["type"] == "interactor"
    assert json.loads(meta.get("spec") or "[]") == []
    assert int(meta.get("min_pos_points", 1)) == 4
    assert int(meta.get("min_neg_points", -1)) == -1
    assert bool(meta.get("startswith_box", False)) is False
    assert int(meta.get("version", "1")) >= 2
    assert data["status"]["state"] == "ready"
    assert isinstance(data["spec"]["description"], str) and meta["help_message"]
    assert data["status"].get("httpPort") == 80  # TestClient's port: where `direct` would post
    one = client.get("/api/functions/dextr", headers=NUCLIO_HEADERS)
    assert one.json() == data
    assert client.get("/api/functions/other").status_code == 404


@pytest.mark.parametrize("route", ["dashboard", "direct"])
def test_interactor_call_returns_the_library_mask(client, frame, tiny_model, route):
    image, data = frame
    expected = tiny_model.predict([image], [np.array(PIXELS, float)[:, ::-1]], threshold=0.5)[0]
    assert expected.any()
    body = cvat_payload(data, CANVAS)
    if route == "dashboard":
        headers = {**NUCLIO_HEADERS, "x-nuclio-function-name": "dextr", "x-nuclio-path": "/"}
        r = client.post("/api/function_invocations", json=body, headers=headers)
    else:
        r = client.post("/", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    np.testing.assert_array_equal(cvat_ui_mask(out, 64, 80), expected)
    assert set(np.unique(out["mask"])) <= {0, 255}
    # The outline polygon lies on the mask's border.
    poly = np.asarray(out["points"])
    assert poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 3
    ys, xs = np.nonzero(expected)
    assert poly[:, 0].min() >= xs.min() - 0.5 and poly[:, 0].max() <= xs.max() + 1.5
    assert poly[:, 1].min() >= ys.min() - 0.5 and poly[:, 1].max() <= ys.max() + 1.5


def test_more_than_four_clicks_are_extreme_points_and_corrections(client, frame, tiny_model):
    image, data = frame
    inner = [[40.5, 30.5], [45.5, 25.5]]
    six = client.post("/", json=cvat_payload(data, inner[:1] + CANVAS + inner[1:])).json()
    pts = np.array(PIXELS, float)[:, ::-1]
    positive = np.array(inner)[:, ::-1] - 0.5
    expected = tiny_model.predict([image], [pts], positive=[positive],
                                  threshold=resolve_threshold(None, tiny_model.preprocess))[0]
    assert expected.any()
    np.testing.assert_array_equal(cvat_ui_mask(six, 64, 80), expected)
    # CVAT's min_neg_points is -1 for this model; a client sending negatives anyway is told why.
    r = client.post("/", json=cvat_payload(data, CANVAS, neg_points=[[30.5, 20.5]]))
    assert r.status_code == 400 and "negative" in r.json()["detail"]


def test_threshold_is_read(client, frame, tiny_model):
    image, data = frame
    pts = np.array(PIXELS, float)[:, ::-1]
    for thr in (0.2, 0.8):
        got = client.post("/", json=cvat_payload(data, CANVAS, threshold=thr)).json()
        expected = tiny_model.predict([image], [pts], threshold=thr)[0]
        if expected.any():
            np.testing.assert_array_equal(cvat_ui_mask(got, 64, 80), expected)
        else:
            assert got["points"] == []


@pytest.mark.parametrize("points, status, words", [
    (CANVAS[:3], 400, "at least 4 points"),
    ([], 400, "at least 4 points"),
    ([[1, 2, 3]] * 4, 422, "pos_points"),
])
def test_bad_interactor_calls_get_a_message(client, frame, points, status, words):
    r = client.post("/api/function_invocations", json=cvat_payload(frame[1], points),
                    headers={"x-nuclio-function-name": "dextr"})
    assert r.status_code == status and words in r.json()["detail"]


def test_unknown_function_name_is_404(client, frame):
    r = client.post("/api/function_invocations", json=cvat_payload(frame[1], CANVAS),
                    headers={"x-nuclio-function-name": "openvino-dextr"})
    assert r.status_code == 404 and "dextr" in r.json()["detail"]
