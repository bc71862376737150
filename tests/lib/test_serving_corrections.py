"""Corrections in ``dextr serve``: clicks after the four extreme points through /api/predict,
the accepted object's clicks and hand-edited mask in the annotations file, the model's ability
in /api/model, and CVAT's extra positive points and ``neg_points``."""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from pycocotools.coco import COCO  # noqa: E402

from dextr_lib.core.geometry import xy_to_yx  # noqa: E402
from dextr_lib.inference.engine import resolve_threshold  # noqa: E402
from tests.helpers.models import negatives_cut_model  # noqa: E402

# The synthetic disk's left, right, top and bottom pixels, and clicks inside it, as [x, y].
POINTS = [[27, 30], [57, 30], [42, 15], [42, 45]]
POSITIVE = [[38, 34]]
NEGATIVE = [[42, 30]]


@pytest.fixture(scope="module")
def cut_model():
    return negatives_cut_model()


@pytest.fixture
def serve(make_client, photos, tmp_path):
    """``serve(model)``: a client of a new app on ``photos`` (``disk.png``), the first one's
    annotations in ``ann.json``."""
    apps = []

    def make(model):
        apps.append(model)
        return make_client(photos, tmp_path / f"ann{len(apps) - 1 or ''}.json", model=model, classes=["disk"])

    return make


def png_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    PIL.Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def png_header(width: int, height: int) -> bytes:
    """A PNG that states a size and holds no pixels (PIL refuses to open one past its limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def library_mask(model, image, positive=(), negative=()):
    clicks = {"positive": [xy_to_yx(positive).reshape(-1, 2)], "negative": [xy_to_yx(negative).reshape(-1, 2)]}
    threshold = resolve_threshold(None, model.preprocess)  # the server's default
    return model.predict([image], [xy_to_yx(POINTS)], threshold=threshold, **clicks)[0]


def predicted(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(r.json()["mask"])))) > 127


def test_model_info_says_whether_negatives_are_taken(serve, tiny_model, cut_model):
    assert serve(tiny_model).get("/api/model").json()["takes_negatives"] is False
    assert serve(cut_model).get("/api/model").json()["takes_negatives"] is True


def test_positive_click_is_the_library_mask_and_negative_needs_the_channel(serve, tiny_model, synthetic_sample):
    client = serve(tiny_model)
    r = client.post("/api/predict", json={"image_id": "disk.png", "points": POINTS, "positive": POSITIVE})
    np.testing.assert_array_equal(predicted(r), library_mask(tiny_model, synthetic_sample[0], POSITIVE))
    assert r.json()["positive"] == POSITIVE and r.json()["negative"] == []
    again = client.post("/api/predict", json={"image_id": "disk.png", "points": POINTS, "positive": POSITIVE})
    assert again.json()["mask"] == r.json()["mask"] and again.json()["timing"]["model_ms"] == 0  # kept
    r = client.post("/api/predict", json={"image_id": "disk.png", "points": POINTS, "negative": NEGATIVE})
    assert r.status_code == 400
    assert "negative" in r.json()["detail"] and "finetune" in r.json()["detail"]
    # A correction far outside the extreme points' crop: the library's clear refusal.
    r = client.post("/api/predict", json={"image_id": "disk.png", "points": POINTS, "positive": [[79, 63]]})
    assert r.status_code == 400 and "crop" in r.json()["detail"]


def test_negative_click_removes_the_pixels_around_it(serve, cut_model, synthetic_sample):
    client = serve(cut_model)
    before = predicted(client.post("/api/predict", json={"image_id": "disk.png", "points": POINTS}))
    after = predicted(client.post("/api/predict", json={"image_id": "disk.png", "points": POINTS,
                                                       "negative": NEGATIVE}))
    np.testing.assert_array_equal(after, library_mask(cut_model, synthetic_sample[0], negative=NEGATIVE))
    x, y = NEGATIVE[0]
    assert before[y, x] and not after[y, x]
    assert after.sum() < before.sum() and not (after & ~before).any()


def test_accepted_object_stores_its_clicks_and_the_edited_mask(serve, cut_model, synthetic_sample, tmp_path):
    client = serve(cut_model)
    image = synthetic_sample[0]
    r = client.post("/api/objects", json={"image_id": "disk.png", "points": POINTS, "positive": POSITIVE,
                                          "negative": NEGATIVE, "category": "disk"})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["positive"] == POSITIVE and out["negative"] == NEGATIVE and out["score"] is not None
    ann = json.loads((tmp_path / "ann.json").read_text())["annotations"][0]
    assert ann["positive_points"] == POSITIVE and ann["negative_points"] == NEGATIVE
    assert len(ann["extreme_points"]) == 4
    coco = COCO(str(tmp_path / "ann.json"))
    np.testing.assert_array_equal(coco.annToMask(coco.anns[out["id"]]) > 0,
                                  library_mask(cut_model, image, POSITIVE, NEGATIVE))
    # Brush edits: the page sends the final mask; that is what the file keeps, without a score.
    edited = library_mask(cut_model, image, POSITIVE, NEGATIVE)
    edited[0:5, 0:8] = True
    edited[30, :] = False
    r = client.put(f"/api/objects/{out['id']}", json={"points": POINTS, "positive": POSITIVE,
                                                      "mask": png_b64(edited)})
    assert r.status_code == 200, r.text
    assert r.json()["score"] is None and r.json()["negative"] == [] and r.json()["area"] == edited.sum()
    coco = COCO(str(tmp_path / "ann.json"))
    np.testing.assert_array_equal(coco.annToMask(coco.anns[out["id"]]) > 0, edited)
    assert "negative_points" not in coco.anns[out["id"]]
    got = client.get(f"/api/objects/{out['id']}/mask.png")
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(io.BytesIO(got.content))) > 127, edited)


@pytest.mark.parametrize("mask, words", [
    (png_b64(np.ones((10, 10), bool)), "10x10, the photo 80x64"),
    (base64.b64encode(b"not a png").decode(), "not a base64 PNG"),
    (base64.b64encode(png_header(100_000, 100_000)).decode(), "larger than the photo"),  # no 500
])
def test_a_wrong_edited_mask_is_refused(serve, tiny_model, mask, words, tmp_path):
    r = serve(tiny_model).post("/api/objects", json={"image_id": "disk.png", "points": POINTS,
                                                     "mask": mask, "category": "disk"})
    assert r.status_code == 400 and words in r.json()["detail"]
    assert not (tmp_path / "ann.json").exists()


def test_new_clicks_alone_re_edit_on_the_stored_points(serve, tiny_model, synthetic_sample):
    client = serve(tiny_model)
    oid = client.post("/api/objects", json={"image_id": "disk.png", "points": POINTS, "category": "disk"}).json()["id"]
    r = client.put(f"/api/objects/{oid}", json={"positive": POSITIVE})
    assert r.status_code == 200 and r.json()["positive"] == POSITIVE and r.json()["points"] is not None
    mask = client.get(f"/api/objects/{oid}/mask.png").content
    expected = library_mask(tiny_model, synthetic_sample[0], POSITIVE)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(io.BytesIO(mask))) > 127, expected)
    r = client.put(f"/api/objects/{oid}", json={"category": "ring"})  # a class alone keeps the clicks
    assert r.status_code == 200 and r.json()["positive"] == POSITIVE


def test_cvat_six_positive_points_and_negatives(serve, cut_model, synthetic_sample, tmp_path):
    client = serve(cut_model)
    meta = client.get("/api/functions/dextr").json()["metadata"]["annotations"]
    assert meta["min_neg_points"] == "0" and "negative" in meta["help_message"]
    image = synthetic_sample[0]
    buf = io.BytesIO()
    PIL.Image.fromarray(image).save(buf, format="PNG")
    inner = [[38, 34], [46, 24]]
    canvas = lambda pts: [[x + 0.5, y + 0.5] for x, y in pts]  # noqa: E731  CVAT's pixel centres
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "obj_bbox": None,
            "pos_points": canvas(inner[:1] + POINTS + inner[1:]), "neg_points": canvas(NEGATIVE)}
    r = client.post("/", json=body)
    assert r.status_code == 200, r.text
    got = np.zeros(image.shape[:2], bool)
    x0, y0, x1, y1 = r.json()["bounds"]
    got[y0:y1 + 1, x0:x1 + 1] = np.asarray(r.json()["mask"]) > 0
    expected = library_mask(cut_model, image, inner, NEGATIVE)
    np.testing.assert_array_equal(got, expected)
    x, y = NEGATIVE[0]
    assert not got[y, x] and library_mask(cut_model, image, inner)[y, x]
