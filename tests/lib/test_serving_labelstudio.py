"""``dextr serve`` as a Label Studio ML backend: the requests Label Studio's server sends
(``ml/api_connector.py``: health, setup, predict with the smart keypoints' context, webhook),
answered with brush masks equal to the library's."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from dextr_lib.formats.brush import brush_to_mask  # noqa: E402
from dextr_lib.serving import close_app, create_app  # noqa: E402
from dextr_lib.serving.labelstudio import split_points  # noqa: E402

CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="disk" background="#FF0000"/><Label value="other" background="#0000FF"/>
  </BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="disk" smart="true" background="#000000" showInline="true"/>
    <Label value="other" smart="true" background="#000000" showInline="true"/>
  </KeyPointLabels>
</View>"""
URL = "/data/local-files/?d=photos/disk.png"  # served from the app's --images folder


@pytest.fixture
def sample(tmp_path, synthetic_sample):
    image, _, points_yx = synthetic_sample
    (tmp_path / "photos").mkdir()
    PIL.Image.fromarray(image).save(tmp_path / "photos" / "disk.png")
    return image, np.asarray(points_yx)


@pytest.fixture
def client(tmp_path, tiny_model, sample):
    app = create_app(tiny_model, tmp_path / "photos", tmp_path / "ann.json")
    yield TestClient(app, base_url="http://localhost")  # the server answers loopback names
    close_app(app)


def keypoint(y, x, h, w, *, positive=True, label="disk"):
    """A smart keypoint as Label Studio's editor sends it: the click's position (the centre of
    pixel ``[y, x]``) in percent of the image."""
    return {"id": f"k{x}{y}", "type": "keypointlabels", "from_name": "kp", "to_name": "image",
            "original_width": w, "original_height": h, "image_rotation": 0,
            "is_positive": positive, "origin": "manual",
            "value": {"x": (x + 0.5) * 100 / w, "y": (y + 0.5) * 100 / h, "width": 0.5,
                      "keypointlabels": [label]}}


def predict_body(context_points, data=None):
    """``MLApi.make_predictions``'s body for one task (``context`` None: no interaction)."""
    context = None if context_points is None else {"result": context_points}
    return {"tasks": [{"id": 1, "data": data or {"image": URL}}], "model_version": None,
            "project": "1.1700000000", "label_config": CONFIG,
            "params": {"login": None, "password": None, "context": context}}


def decoded(region):
    assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
    return brush_to_mask(region["value"]["rle"], region["original_height"],
                         region["original_width"])


def test_health_setup_webhook(client):
    assert client.get("/labelstudio/health").json()["status"] == "UP"
    r = client.post("/labelstudio/setup", json={
        "project": "1.1700000000", "schema": CONFIG, "hostname": "http://localhost:8080",
        "access_token": "abc", "extra_params": None})
    assert r.status_code == 200 and r.json()["model_version"].startswith("dextr-")
    for action in ("ANNOTATION_CREATED", "START_TRAINING", "SOMETHING_NEW"):
        r = client.post("/labelstudio/webhook", json={"action": action, "project": {"id": 1}})
        assert r.status_code == 200


def test_routes_and_errors_are_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/labelstudio/health", "/labelstudio/setup", "/labelstudio/predict",
                  "/labelstudio/webhook"):
        assert route in paths
    assert {"400", "422"} <= set(paths["/labelstudio/predict"]["post"]["responses"])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fewer_than_four_points_give_a_null_result(client, sample, n):
    image, pts = sample
    h, w = image.shape[:2]
    r = client.post("/labelstudio/predict",
                    json=predict_body([keypoint(y, x, h, w) for y, x in pts[:n]]))
    assert r.status_code == 200
    assert r.json()["results"] == [None]


def test_four_points_give_the_library_mask(client, sample, tiny_model):
    image, pts = sample
    h, w = image.shape[:2]
    r = client.post("/labelstudio/predict",
                    json=predict_body([keypoint(y, x, h, w, label="other") for y, x in pts]))
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["results"]
    (region,) = prediction["result"]
    assert (region["from_name"], region["to_name"]) == ("tag", "image")
    assert region["value"]["brushlabels"] == ["other"]
    assert (region["original_width"], region["original_height"]) == (w, h)
    assert 0.0 <= region["score"] <= 1.0 and prediction["score"] == region["score"]
    expected = tiny_model.predict([image], [pts], threshold=tiny_model.preprocess.threshold)[0]
    np.testing.assert_array_equal(decoded(region), expected)


def test_six_points_use_the_outermost_four_and_the_rest_as_corrections(client, sample,
                                                                        tiny_model):
    image, pts = sample
    h, w = image.shape[:2]
    inner = np.array([[30, 40], [28, 45]])
    clicks = [keypoint(y, x, h, w) for y, x in [*pts[:2], *inner, *pts[2:]]]
    r = client.post("/labelstudio/predict", json=predict_body(clicks))
    assert r.status_code == 200, r.text
    extreme, more, _ = split_points(
        [[c["value"]["x"] * w / 100, c["value"]["y"] * h / 100] for c in clicks], [])
    assert sorted(map(tuple, more.tolist())) == sorted(map(tuple, inner.astype(float).tolist()))
    expected = tiny_model.predict([image], [extreme], positive=[more],
                                  threshold=tiny_model.preprocess.threshold)[0]
    np.testing.assert_array_equal(decoded(r.json()["results"][0]["result"][0]), expected)


def test_negative_points(client, sample, tiny_model):
    image, pts = sample
    h, w = image.shape[:2]
    clicks = [keypoint(y, x, h, w) for y, x in pts] + [keypoint(5, 5, h, w, positive=False)]
    r = client.post("/labelstudio/predict", json=predict_body(clicks))
    if tiny_model.takes_negatives:
        assert r.status_code == 200
    else:  # the model has no negative-click input: said so, not a 500
        assert r.status_code == 400
        assert "negative" in r.json()["detail"]
    # A negative click does not count towards the four.
    r = client.post("/labelstudio/predict", json=predict_body(clicks[1:]))
    assert r.status_code == 200 and r.json()["results"] == [None]


def test_no_context_masks_tasks_with_keypoints_and_leaves_others_empty(client, sample,
                                                                      tiny_model):
    image, pts = sample
    h, w = image.shape[:2]
    body = predict_body(None)
    body["tasks"] = [
        {"id": 1, "data": {"image": URL}},
        {"id": 2, "data": {"image": URL, "points": [keypoint(y, x, h, w) for y, x in pts]}},
        {"id": 3, "data": {"image": "/data/upload/9/missing.png",
                           "points": [keypoint(y, x, h, w) for y, x in pts]}},
    ]
    r = client.post("/labelstudio/predict", json=body)
    assert r.status_code == 200, r.text
    first, second, third = r.json()["results"]
    assert first["result"] == [] and third["result"] == []
    expected = tiny_model.predict([image], [pts], threshold=tiny_model.preprocess.threshold)[0]
    np.testing.assert_array_equal(decoded(second["result"][0]), expected)
    assert client.post("/labelstudio/predict", json={"tasks": []}).json()["results"] == []


@pytest.mark.parametrize("value, status", [({"x": 150.0, "y": 10.0}, 422), ({"x": -1, "y": 10.0}, 422),
                                           ({"x": "left", "y": 10.0}, 422), ({"y": 10.0}, 400)])
def test_bad_percentages_are_refused(client, sample, value, status):
    image, pts = sample
    h, w = image.shape[:2]
    clicks = [keypoint(y, x, h, w) for y, x in pts]
    clicks[0]["value"].update(value)
    if "x" not in value:
        del clicks[0]["value"]["x"]
    r = client.post("/labelstudio/predict", json=predict_body(clicks))
    assert r.status_code == status
    assert ("less than or equal" in r.json()["detail"] or "greater than" in r.json()["detail"]
            or "number" in r.json()["detail"] or "percent" in r.json()["detail"])


@pytest.mark.parametrize("url, words", [
    ("/data/upload/3/missing.png", "no Label Studio host"),
    ("http://elsewhere.example/x.png", "not on the Label Studio host"),
    ("file:///etc/passwd", "expected a Label Studio URL"),
    ("/data/local-files/?d=photos/none.png", "no Label Studio host"),
])
def test_missing_or_foreign_images_get_a_clear_400(client, sample, url, words, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    image, pts = sample
    h, w = image.shape[:2]
    r = client.post("/labelstudio/predict",
                    json=predict_body([keypoint(y, x, h, w) for y, x in pts], {"image": url}))
    assert r.status_code == 400
    assert words in r.json()["detail"]


def test_images_are_fetched_from_the_host_that_set_up_the_project(client, sample, tiny_model):
    """A relative URL goes to setup's hostname with its token; Label Studio's 404 is reported."""
    import http.server
    import threading

    image, pts = sample
    h, w = image.shape[:2]
    png = (client.app.state.dextr.images.root / "disk.png").read_bytes()
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            if self.path != "/data/upload/1/disk.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        client.post("/labelstudio/setup", json={"project": "1.1700000000", "schema": CONFIG,
                                                "hostname": host, "access_token": "tok"})
        clicks = [keypoint(y, x, h, w) for y, x in pts]
        r = client.post("/labelstudio/predict",
                        json=predict_body(clicks, {"image": "/data/upload/1/disk.png"}))
        assert r.status_code == 200, r.text
        assert seen == [("/data/upload/1/disk.png", "Token tok")]
        expected = tiny_model.predict([image], [pts], threshold=tiny_model.preprocess.threshold)[0]
        np.testing.assert_array_equal(decoded(r.json()["results"][0]["result"][0]), expected)
        r = client.post("/labelstudio/predict",
                        json=predict_body(clicks, {"image": f"{host}/data/upload/1/gone.png"}))
        assert r.status_code == 400 and "404" in r.json()["detail"]
    finally:
        server.shutdown()
        server.server_close()
