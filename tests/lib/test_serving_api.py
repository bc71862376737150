"""``dextr_lib.serving``: the HTTP API against the library's own results, its bounds and errors,
the annotations file (read back with pycocotools) and the token."""
from __future__ import annotations

import base64
import io
import json
import os
import threading

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from pycocotools import mask as mask_api  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

from dextr_lib.core.geometry import xy_to_yx  # noqa: E402
from dextr_lib.core.images import read_image  # noqa: E402
from dextr_lib.errors import DatasetError  # noqa: E402
from dextr_lib.formats import coco  # noqa: E402
from dextr_lib.serving import close_app, create_app  # noqa: E402

# The synthetic disk's left, right, top and bottom pixels as [x, y].
POINTS = [[27, 30], [57, 30], [42, 15], [42, 45]]
OTHER = [[30, 28], [55, 33], [40, 17], [44, 44]]


@pytest.fixture
def client(make_client, photos):
    return make_client(photos, classes=["disk", "ring"])


def expected_mask(model, image, points_xy, threshold=0.5):
    return model.predict([image], [xy_to_yx(points_xy)], threshold=threshold)[0]


def png_mask(b64: str) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(b64)))) == 255


# -- predictions equal the library's ------------------------------------------------------------
def test_predict_png_rle_polygon_equal_the_library_mask(client, photos, tiny_model):
    image = read_image(photos / "disk.png")
    expected = expected_mask(tiny_model, image, POINTS)
    assert expected.any() and not expected.all()
    out = {}
    for fmt in ("png", "rle", "polygon"):
        r = client.post("/api/predict", json={"image_id": "disk.png", "points": POINTS, "format": fmt})
        assert r.status_code == 200, r.text
        out[fmt] = r.json()
    np.testing.assert_array_equal(png_mask(out["png"]["mask"]), expected)
    rle = out["rle"]["mask"]
    assert rle["size"] == list(expected.shape) and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(mask_api.decode({**rle, "counts": rle["counts"].encode()}), expected)
    assert out["polygon"]["mask"] == coco.mask_to_polygons(expected)
    for r in out.values():
        assert r["area"] == int(expected.sum())
        ys, xs = np.nonzero(expected)
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert (r["width"], r["height"]) == (80, 64) and r["threshold"] == 0.5
        prob = tiny_model.predict([image], [xy_to_yx(POINTS)])[0]
        assert r["score"] == pytest.approx(float(prob[expected].mean()), rel=1e-5)


def test_predict_cropped_png_covers_the_box(client, photos, tiny_model):
    expected = expected_mask(tiny_model, read_image(photos / "disk.png"), POINTS)
    r = client.post("/api/predict", json={"image_id": "disk.png", "points": POINTS, "crop": True}).json()
    x, y, w, h = (int(v) for v in r["bbox"])
    np.testing.assert_array_equal(png_mask(r["mask"]), expected[y:y + h, x:x + w])


def test_predict_with_uploaded_bytes_and_threshold(client, photos, tiny_model):
    data = (photos / "sub" / "flipped.jpg").read_bytes()
    image = read_image(photos / "sub" / "flipped.jpg")
    pts = [[80 - 1 - x, y] for x, y in POINTS]
    for thr in (0.3, 0.7):
        r = client.post("/api/predict", json={"image": base64.b64encode(data).decode(), "points": pts,
                                              "format": "rle", "threshold": thr})
        assert r.status_code == 200, r.text
        got = mask_api.decode({**r.json()["mask"], "counts": r.json()["mask"]["counts"].encode()})
        np.testing.assert_array_equal(got, expected_mask(tiny_model, image, pts, thr))
    up = client.post("/api/images", files={"file": ("mine.jpg", data, "image/jpeg")})
    assert up.status_code == 201, up.text
    assert up.json()["width"] == 80 and up.json()["name"] == "mine.jpg"
    r = client.post("/api/predict", json={"image_id": up.json()["image_id"], "points": pts})
    np.testing.assert_array_equal(png_mask(r.json()["mask"]), expected_mask(tiny_model, image, pts))


def test_decoded_images_are_cached_by_content(client, photos, monkeypatch):
    from dextr_lib.serving import images as images_mod

    calls = []
    real = images_mod.decode_photo
    monkeypatch.setattr(images_mod, "decode_photo", lambda *a, **k: calls.append(1) or real(*a, **k))
    for pts in (POINTS, OTHER, POINTS):
        assert client.post("/api/predict", json={"image_id": "disk.png", "points": pts}).status_code == 200
    data = base64.b64encode((photos / "disk.png").read_bytes()).decode()
    assert client.post("/api/predict", json={"image": data, "points": OTHER}).status_code == 200
    assert len(calls) == 1


# -- images ---------------------------------------------------------------------------------------
def test_lists_and_serves_only_the_folder_photos(client, photos, tmp_path):
    outside = tmp_path / "secret.png"
    PIL.Image.new("RGB", (4, 4)).save(outside)
    os.symlink(outside, photos / "link.png")
    os.symlink(tmp_path, photos / "linkdir")
    r = client.get("/api/images").json()
    assert [i["id"] for i in r["images"]] == ["disk.png", "sub/flipped.jpg"]
    assert r["classes"] == ["disk", "ring"] and r["can_upload"] is False
    f = client.get("/api/files/sub/flipped.jpg")
    assert f.status_code == 200 and f.headers["content-type"] == "image/jpeg"
    assert f.content == (photos / "sub" / "flipped.jpg").read_bytes()
    d = client.get("/api/images/disk.png").json()
    assert (d["width"], d["height"], d["objects"]) == (80, 64, [])


@pytest.mark.parametrize("image_id", [
    "../secret.png", "sub/../../secret.png", "/etc/passwd", "link.png", "linkdir/secret.png",
    "notes.txt", ".hidden.png", "sub\\..\\..\\secret.png", "missing.png",
])
def test_traversal_and_unknown_ids_are_refused(client, photos, tmp_path, image_id):
    PIL.Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", photos / "link.png")
    os.symlink(tmp_path, photos / "linkdir")
    r = client.post("/api/predict", json={"image_id": image_id, "points": POINTS})
    assert r.status_code == 404 and "no image" in r.json()["detail"]
    quoted = "/".join(__import__("urllib.parse").parse.quote(p, safe="") for p in image_id.split("/"))
    r = client.get("/api/files/" + quoted)
    assert r.status_code == 404, (image_id, r.status_code)


def test_encoded_dot_dot_in_the_url_is_refused(client):
    for url in ("/api/files/%2e%2e/secret.png", "/api/files/..%2Fsecret.png", "/api/images/%2e%2e%2fx.png"):
        r = client.get(url)
        assert r.status_code == 404, url


# -- bad requests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, words", [
    ({"image_id": "disk.png"}, 422, "points: Field required"),
    ({"image_id": "disk.png", "points": POINTS[:3]}, 422, "exactly 4 points"),
    ({"image_id": "disk.png", "points": POINTS + [[1, 1]]}, 422, "got 5"),
    ({"image_id": "disk.png", "points": [[1, 2, 3]] + POINTS[1:]}, 422, "points.0"),
    ({"image_id": "disk.png", "points": [[1, 1]] * 4}, 400, "zero size"),
    ({"image_id": "disk.png", "points": POINTS, "format": "jpeg"}, 422, "format"),
    ({"image_id": "disk.png", "points": POINTS, "threshold": 2}, 422, "threshold"),
    ({"points": POINTS}, 422, "either image_id"),  # the schema states it (oneOf)
    ({"image": "not base64!", "points": POINTS}, 400, "base64"),
    ({"image": base64.b64encode(b"hello").decode(), "points": POINTS}, 400, "cannot read"),
    ({"image_id": "disk.png", "points": [[500, 30]] + POINTS[1:]}, 400, "outside the 80x64 image"),
])
def test_bad_predict_requests_get_4xx_with_a_message(client, body, status, words):
    r = client.post("/api/predict", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_nan_points_are_refused(client):
    body = '{"image_id": "disk.png", "points": [[NaN, 30], [57, 30], [42, 15], [42, 45]]}'
    r = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite number" in r.json()["detail"]
    r = client.post("/api/predict", content="{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


def test_upload_size_and_pixel_bounds(make_client, photos):
    from dextr_lib.utils import limits

    c = make_client(photos, max_upload_mb=0.01)
    big = base64.b64encode(os.urandom(20_000)).decode()
    r = c.post("/api/predict", json={"image": big, "points": POINTS})
    assert r.status_code == 413 and "0.01 MB" in r.json()["detail"]
    r = c.post("/api/images", files={"file": ("x.png", os.urandom(20_000), "image/png")})
    assert r.status_code == 413
    limits.set_limits(max_pixels=1000)
    try:
        r = c.post("/api/predict", json={"image_id": "disk.png", "points": POINTS})  # 80x64 = 5120 px
    finally:
        limits.reset_limits()
    assert r.status_code == 400 and "5120 pixels" in r.json()["detail"]
    assert "max_pixels=1000" in r.json()["detail"]


def test_model_info_and_health(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/api/model").json()
    assert info["arch"] == "resunet18" and info["target_size"] == 64 and info["precision"] == "fp32"
    assert client.get("/").status_code == 200 and "dextr" in client.get("/").text
    assert client.get("/static/app.js").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_token_is_checked_on_every_api_call(make_client, photos):
    c = make_client(photos, token="s3cret")
    assert c.get("/health").status_code == 200
    for method, url in (("get", "/api/images"), ("get", "/api/model"), ("get", "/api/functions"),
                        ("post", "/api/predict"), ("get", "/api/files/disk.png")):
        r = getattr(c, method)(url)
        assert r.status_code == 401, url
        assert "token" in r.json()["detail"]
    assert c.get("/api/images", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/images", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/api/files/disk.png?token=s3cret").status_code == 200
    assert c.get("/api/functions", headers={"x-nuclio-function-namespace": "s3cret"}).status_code == 200


# -- the annotations file -------------------------------------------------------------------------
def test_accepted_objects_round_trip_through_pycocotools(client, photos, tmp_path, tiny_model):
    image = read_image(photos / "disk.png")
    a = client.post("/api/objects", json={"image_id": "disk.png", "points": POINTS, "category": "disk"})
    b = client.post("/api/objects", json={"image_id": "disk.png", "points": OTHER, "category": " cat "})
    f = client.post("/api/objects", json={"image_id": "sub/flipped.jpg", "points": POINTS,
                                          "category": "disk"})
    assert a.status_code == b.status_code == f.status_code == 201, (a.text, b.text, f.text)
    assert b.json()["category"] == "cat"
    # Written at once: the file is complete after each accept.
    gt = COCO(str(tmp_path / "ann.json"))
    assert len(gt.getAnnIds()) == 3
    assert {c["name"] for c in gt.loadCats(gt.getCatIds())} == {"disk", "ring", "cat"}
    img = gt.loadImgs(gt.getImgIds())[0]
    assert (img["file_name"], img["height"], img["width"]) == ("disk.png", 64, 80)
    for ann, pts in zip(gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]])), (POINTS, OTHER)):
        expected = expected_mask(tiny_model, image, pts)
        np.testing.assert_array_equal(gt.annToMask(ann).astype(bool), expected)
        assert ann["iscrowd"] == 0 and ann["area"] == int(expected.sum())
        assert ann["bbox"] == [float(v) for v in mask_api.toBbox(mask_api.encode(
            np.asfortranarray(expected.astype(np.uint8))))]
        # ExtremeNet's order: top, left, bottom, right, each [x, y].
        left, right, top, bottom = pts
        assert ann["extreme_points"] == [top, left, bottom, right]
    detail = client.get("/api/images/disk.png").json()
    assert [o["category"] for o in detail["objects"]] == ["disk", "cat"]
    assert detail["objects"][0]["points"] == [[float(v) for v in p] for p in POINTS]
    m = client.get(f"/api/objects/{a.json()['id']}/mask.png")
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(io.BytesIO(m.content))) == 255,
                                  expected_mask(tiny_model, image, POINTS))
    listing = client.get("/api/images").json()
    assert [i["objects"] for i in listing["images"]] == [2, 1] and listing["total_objects"] == 3
    assert client.get("/api/annotations").json() == json.loads((tmp_path / "ann.json").read_text())


def test_edit_and_delete_objects(client, photos, tmp_path, tiny_model):
    image = read_image(photos / "disk.png")
    oid = client.post("/api/objects", json={"image_id": "disk.png", "points": POINTS,
                                            "category": "disk"}).json()["id"]
    r = client.put(f"/api/objects/{oid}", json={"category": "ring"})
    assert r.status_code == 200 and r.json()["category"] == "ring"
    r = client.put(f"/api/objects/{oid}", json={"points": OTHER})
    assert r.status_code == 200 and r.json()["category"] == "ring"
    gt = COCO(str(tmp_path / "ann.json"))
    ann = gt.loadAnns([oid])[0]
    np.testing.assert_array_equal(gt.annToMask(ann).astype(bool), expected_mask(tiny_model, image, OTHER))
    assert gt.loadCats([ann["category_id"]])[0]["name"] == "ring"
    assert client.delete(f"/api/objects/{oid}").status_code == 200
    assert json.loads((tmp_path / "ann.json").read_text())["annotations"] == []
    for method in ("put", "delete"):
        r = client.request(method.upper(), f"/api/objects/{oid}", json={"category": "x"} if method == "put" else None)
        assert r.status_code == 404 and "no object" in r.json()["detail"]
    r = client.post("/api/objects", json={"image_id": "disk.png", "points": POINTS, "category": "  "})
    assert r.status_code == 422 and "class name" in r.json()["detail"]


def test_restart_continues_the_file_and_a_second_server_is_refused(make_client, photos, tmp_path, tiny_model):
    ann = tmp_path / "ann.json"
    c1 = make_client(photos, ann)
    c1.post("/api/objects", json={"image_id": "disk.png", "points": POINTS, "category": "disk"})
    with pytest.raises(DatasetError, match="another dextr serve"):
        create_app(tiny_model, photos, ann)
    close_app(c1.app)
    c2 = make_client(photos, ann)
    assert c2.get("/api/images").json()["images"][0]["objects"] == 1
    r = c2.post("/api/objects", json={"image_id": "disk.png", "points": OTHER, "category": "disk"})
    assert r.json()["id"] == 2
    assert len(json.loads(ann.read_text())["annotations"]) == 2


def test_concurrent_clients_never_corrupt_the_file(client, tmp_path):
    errors = []

    def work(i):
        try:
            pts = POINTS if i % 2 else OTHER
            r = client.post("/api/predict", json={"image_id": "disk.png", "points": pts})
            assert r.status_code == 200
            r = client.post("/api/objects", json={"image_id": "disk.png", "points": pts,
                                                  "category": f"c{i % 3}"})
            assert r.status_code == 201, r.text
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = json.loads((tmp_path / "ann.json").read_text())
    assert sorted(a["id"] for a in data["annotations"]) == list(range(1, 9))


def test_uploads_without_a_folder(make_client, photos, tmp_path):
    c = make_client(None, tmp_path / "up.json")
    assert c.get("/api/images").json()["can_upload"] is True
    up = c.post("/api/images", files={"file": ("../../evil name.png", (photos / "disk.png").read_bytes())})
    iid = up.json()["image_id"]
    assert iid.endswith("/evil name.png") and up.json()["name"] == "evil name.png"
    obj = c.post("/api/objects", json={"image_id": iid, "points": POINTS, "category": "disk"})
    assert obj.status_code == 201
    assert c.get("/api/images").json()["images"] == [{"id": iid, "name": "evil name.png", "objects": 1}]
    assert c.get("/api/files/" + iid).content == (photos / "disk.png").read_bytes()
    assert json.loads((tmp_path / "up.json").read_text())["images"][0]["file_name"] == "evil name.png"
    r = c.post("/api/predict", json={"image_id": "disk.png", "points": POINTS})
    assert r.status_code == 404 and "no image folder" in r.json()["detail"]
    # Re-editing finds the uploaded photo by its name.
    assert c.put(f"/api/objects/{obj.json()['id']}", json={"points": OTHER}).status_code == 200


def test_a_bad_annotations_file_is_a_clear_error(tiny_model, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    for _ in range(2):  # the failed start released its lock: the same error again, not "locked"
        with pytest.raises(DatasetError, match="bad.json: expected a COCO instances object"):
            create_app(tiny_model, None, bad)


@pytest.mark.parametrize("bf16_cpu, expected", [(True, "bf16"), (False, "fp32")])
def test_model_info_reports_the_resolved_precision(tmp_path, monkeypatch, bf16_cpu, expected):
    """``precision="auto"`` is resolved for this machine once, at start-up, and reported as such."""
    import dextr_lib
    from dextr_lib.inference import device as device_mod

    monkeypatch.setattr(device_mod, "cpu_capabilities", lambda: {
        "avx2": True, "avx512": bf16_cpu, "avx512_bf16": bf16_cpu, "amx_bf16": False, "vnni": bf16_cpu,
        "source": "test"})
    model = dextr_lib.create_model("resunet18", target_size=64)  # its own runners, not the shared model's
    app = create_app(model, None, tmp_path / "ann.json", precision="auto")
    try:
        assert TestClient(app, base_url="http://localhost").get("/api/model").json()["precision"] == expected
    finally:
        close_app(app)
