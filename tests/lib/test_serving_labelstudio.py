"""``dextr serve`` as a Label Studio ML backend: the requests Label Studio's server sends
(``ml/api_connector.py``: health, setup, predict with the smart keypoints' context, webhook),
answered with brush masks equal to the library's."""
from __future__ import annotations

import base64
import http.server
import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from dextr_lib.formats.brush import brush_to_mask  # noqa: E402
from dextr_lib.serving.labelstudio import jwt_claims, split_points  # noqa: E402

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
def sample(synthetic_sample):
    image, _, points_yx = synthetic_sample
    return image, np.asarray(points_yx)


@pytest.fixture
def client(make_client, photos):
    return make_client(photos)  # photos/disk.png is URL's file


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
    assert not tiny_model.takes_negatives  # no negative-click input: said so, not a 500
    assert r.status_code == 400 and "negative" in r.json()["detail"]
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


def test_task_data_that_is_not_an_object_is_a_400_or_an_empty_prediction(client, sample):
    image, pts = sample
    h, w = image.shape[:2]
    body = predict_body([keypoint(y, x, h, w) for y, x in pts])
    body["tasks"] = [{"id": 1, "data": "photo.png"}]
    r = client.post("/labelstudio/predict", json=body)  # interactive: the click is answered
    assert r.status_code == 400 and "data is not an object" in r.json()["detail"]
    body = predict_body(None)
    body["tasks"] = [{"id": 1, "data": [1, 2]}]
    r = client.post("/labelstudio/predict", json=body)  # opening a task never fails
    assert r.status_code == 200 and r.json()["results"][0]["result"] == []


def test_a_corner_click_is_one_extreme_point_as_in_cvat():
    # The top-left click is both the left-most and the top one: four clicks stay four
    # distinct extreme points (the same rule as the CVAT interactor).
    extreme, more, neg = split_points([[1, 1], [9, 5], [5, 2], [4, 9]], [[3, 3]])
    assert sorted(map(tuple, extreme.tolist())) == [(0.5, 0.5), (1.5, 4.5), (4.5, 8.5), (8.5, 3.5)]
    assert more.shape == (0, 2) and neg.tolist() == [[2.5, 2.5]]


def _jwt(claims):
    """An unsigned JWT of Label Studio's shape (dextr never checks signatures: Label Studio does)."""
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


PAT = _jwt({"token_type": "refresh", "exp": 9999999999, "jti": "p", "user_id": "1"})
ACCESS = _jwt({"token_type": "access", "exp": 9999999999, "jti": "a", "user_id": "1"})


@pytest.fixture
def label_studio(client):
    """A stand-in Label Studio serving ``/data/upload/1/disk.png``: ``accept`` says which
    ``Authorization`` headers it takes, ``seen`` records every request (method, path, header)."""
    png = (client.app.state.dextr.images.root / "disk.png").read_bytes()
    stub = SimpleNamespace(seen=[], accept={"Token legacy"})

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, status, body=b""):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            stub.seen.append(("GET", self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") not in stub.accept:
                self._answer(401)
            elif self.path != "/data/upload/1/disk.png":
                self._answer(404)
            else:
                self._answer(200, png)

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.seen.append(("POST", self.path, body.get("refresh")))
            if self.path == "/api/token/refresh/" and body.get("refresh") == PAT:
                self._answer(200, json.dumps({"access": ACCESS}).encode())
            else:
                self._answer(401)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def _set_up(client, host, token):
    r = client.post("/labelstudio/setup", json={"project": "1.1700000000", "schema": CONFIG,
                                                "hostname": host, "access_token": token})
    assert r.status_code == 200, r.text


def test_images_are_fetched_once_from_the_host_that_set_up_the_project(
        client, sample, tiny_model, label_studio, monkeypatch):
    """A relative URL goes to setup's hostname with its token, once for every click on one
    task; Label Studio's 404 is reported."""
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    image, pts = sample
    h, w = image.shape[:2]
    _set_up(client, label_studio.host, "legacy")
    clicks = [keypoint(y, x, h, w) for y, x in pts]
    body = predict_body(clicks, {"image": "/data/upload/1/disk.png"})
    first, again = (client.post("/labelstudio/predict", json=body) for _ in range(2))
    assert first.status_code == again.status_code == 200, first.text
    assert label_studio.seen == [("GET", "/data/upload/1/disk.png", "Token legacy")]
    expected = tiny_model.predict([image], [pts], threshold=tiny_model.preprocess.threshold)[0]
    for r in (first, again):
        np.testing.assert_array_equal(decoded(r.json()["results"][0]["result"][0]), expected)
    r = client.post("/labelstudio/predict", json=predict_body(
        clicks, {"image": f"{label_studio.host}/data/upload/1/gone.png"}))
    assert r.status_code == 400 and "404" in r.json()["detail"]


@pytest.mark.parametrize("setup_token, env_token", [(PAT, None), ("legacy", PAT)])
def test_a_personal_access_token_is_exchanged_for_a_bearer_access_token(
        client, sample, tiny_model, label_studio, monkeypatch, setup_token, env_token):
    """Label Studio >= 1.20 with legacy tokens off: a personal access token (from setup, or
    $LABEL_STUDIO_API_KEY when setup's legacy token is refused) is refreshed once into an
    access token sent as Bearer."""
    if env_token:
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", env_token)
    else:
        monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    label_studio.accept = {f"Bearer {ACCESS}"}
    image, pts = sample
    h, w = image.shape[:2]
    _set_up(client, label_studio.host, setup_token)
    clicks = [keypoint(y, x, h, w) for y, x in pts]
    r = client.post("/labelstudio/predict",
                    json=predict_body(clicks, {"image": "/data/upload/1/disk.png"}))
    assert r.status_code == 200, r.text
    expected = tiny_model.predict([image], [pts], threshold=tiny_model.preprocess.threshold)[0]
    np.testing.assert_array_equal(decoded(r.json()["results"][0]["result"][0]), expected)
    refused = [("GET", "/data/upload/1/disk.png", "Token legacy")] if env_token else []
    assert label_studio.seen == refused + [("POST", "/api/token/refresh/", PAT),
                                           ("GET", "/data/upload/1/disk.png", f"Bearer {ACCESS}")]
    # Another image: the access token is reused, not refreshed again.
    r = client.post("/labelstudio/predict",
                    json=predict_body(clicks, {"image": "/data/upload/1/other.png"}))
    assert r.status_code == 400 and "404" in r.json()["detail"]
    assert sum(m == "POST" for m, _, _ in label_studio.seen) == 1


def test_every_token_refused_says_what_to_do(client, sample, label_studio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", _jwt({"token_type": "refresh", "jti": "revoked"}))
    image, pts = sample
    h, w = image.shape[:2]
    _set_up(client, label_studio.host, "stale")
    r = client.post("/labelstudio/predict", json=predict_body(
        [keypoint(y, x, h, w) for y, x in pts], {"image": "/data/upload/1/disk.png"}))
    assert r.status_code == 400
    assert "legacy tokens" in r.json()["detail"] and "LABEL_STUDIO_API_KEY" in r.json()["detail"]


def test_jwt_claims_tells_legacy_tokens_from_jwts():
    assert jwt_claims(PAT)["token_type"] == "refresh"
    for legacy in ("dextr0test0token0000000000000000000000ab", "a.b.c", "", "x.e30.y"):
        assert jwt_claims(legacy) is None


def test_a_server_token_is_accepted_as_basic_auth_password(tmp_path, make_client, photos):
    """Label Studio authenticates to ML backends only with Basic auth (user and password in the
    Model settings): the password carries `dextr serve --token`."""
    c = make_client(photos, tmp_path / "ann2.json", token="s3cret")

    def basic(user_pass):
        return {"Authorization": "Basic " + base64.b64encode(user_pass.encode()).decode()}

    assert c.get("/labelstudio/health", headers=basic("anyone:s3cret")).status_code == 200
    assert c.post("/labelstudio/webhook", json={"action": "X"},
                  headers=basic("dextr:s3cret")).status_code == 200
    for bad in (basic("dextr:wrong"), basic("s3cret:"), {"Authorization": "Basic %%%"}, {}):
        r = c.get("/labelstudio/health", headers=bad)
        assert r.status_code == 401 and "Basic auth password" in r.json()["detail"]
