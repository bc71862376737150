"""``dextr serve`` keeps the annotations file safe and the HTTP boundary tight (issue 24): ids never
reused, uploads keyed by content, symlinked files locked and written at their target, failed saves
that change nothing, file modes kept, chunked bodies over the limit, Host names, tokens kept out
of logs, canonical image ids and readable upload errors."""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import stat

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from dextr_lib.core.geometry import xy_to_yx  # noqa: E402
from dextr_lib.errors import DatasetError  # noqa: E402
from dextr_lib.formats import coco  # noqa: E402
from dextr_lib.serving import close_app  # noqa: E402
from dextr_lib.serving.app import TokenRedactor  # noqa: E402

POINTS = [[27, 30], [57, 30], [42, 15], [42, 45]]


def accept(client, image_id="disk.png", points=POINTS, category="disk"):
    r = client.post("/api/objects", json={"image_id": image_id, "points": points, "category": category})
    assert r.status_code == 201, r.text
    return r.json()


def png(array) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


# -- data loss -----------------------------------------------------------------------------------
def test_a_deleted_objects_id_is_never_given_again_even_after_a_restart(make_client, photos, tmp_path):
    ann = tmp_path / "ann.json"
    c = make_client(photos, ann)
    ids = [accept(c)["id"] for _ in range(3)]
    assert ids == [1, 2, 3]
    assert c.delete("/api/objects/3").status_code == 200
    assert accept(c)["id"] == 4  # not 3: a stale client's DELETE /api/objects/3 finds nothing
    assert c.delete("/api/objects/3").status_code == 404
    assert c.delete("/api/objects/4").status_code == 200
    close_app(c.app)
    c2 = make_client(photos, ann)  # a restart: the file no longer holds 4, but has held it
    assert accept(c2)["id"] == 5
    assert json.loads(ann.read_text())["dextr"] == {"last_annotation_id": 5}


def test_uploads_are_keyed_by_content_and_their_names_made_unique(make_client, synthetic_sample, tmp_path, tiny_model):
    image, _, _ = synthetic_sample
    flipped = np.ascontiguousarray(image[:, ::-1])
    c = make_client(None)
    first = c.post("/api/images", files={"file": ("photo.png", png(image), "image/png")}).json()
    second = c.post("/api/images", files={"file": ("photo.png", png(flipped), "image/png")}).json()
    again = c.post("/api/images", files={"file": ("other.png", png(image), "image/png")}).json()
    assert (first["name"], second["name"]) == ("photo.png", "photo-2.png")
    assert again["image_id"] == first["image_id"]  # the same photo under another name
    accept(c, first["image_id"])
    b = accept(c, second["image_id"])
    data = json.loads((tmp_path / "ann.json").read_text())
    assert sorted(i["file_name"] for i in data["images"]) == ["photo-2.png", "photo.png"]
    # An edit of the second object re-predicts on the second photo, not on the first.
    r = c.put(f"/api/objects/{b['id']}", json={"points": POINTS})
    assert r.status_code == 200 and r.json()["image_id"] == second["image_id"]
    expected = tiny_model.predict([flipped], [xy_to_yx(POINTS)], threshold=0.5)[0]
    other = tiny_model.predict([image], [xy_to_yx(POINTS)], threshold=0.5)[0]
    assert not np.array_equal(expected, other)
    mask = np.asarray(PIL.Image.open(io.BytesIO(c.get(f"/api/objects/{b['id']}/mask.png").content))) == 255
    np.testing.assert_array_equal(mask, expected)
    # A later session: the same photo uploaded again is the same COCO image, not photo-3.png.
    close_app(c.app)
    c2 = make_client(None)
    back = c2.post("/api/images", files={"file": ("renamed.png", png(flipped), "image/png")}).json()
    assert back["name"] == "photo-2.png"
    new = c2.post("/api/images", files={"file": ("photo.png", png(image[::-1].copy()), "image/png")}).json()
    assert new["name"] == "photo-3.png"


def test_a_symlinked_annotations_file_is_locked_and_written_at_its_target(make_client, photos, tmp_path):
    real = tmp_path / "data" / "real.json"
    real.parent.mkdir()
    link = tmp_path / "link.json"
    link.symlink_to(real)
    c = make_client(photos, link)
    with pytest.raises(DatasetError, match="being edited by another dextr serve"):
        make_client(photos, real)  # the same file by its real name: locked
    accept(c)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(json.loads(real.read_text())["annotations"]) == 1
    assert c.get("/api/images").json()["annotations_file"] == str(link)


def test_a_failed_save_changes_nothing_and_answers_503(make_client, photos, tmp_path, monkeypatch):
    ann = tmp_path / "ann.json"
    c = make_client(photos, ann)
    kept = accept(c)
    before = ann.read_bytes()

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(coco, "atomic_write_text", full_disk)
    r = c.post("/api/objects", json={"image_id": "disk.png", "points": POINTS, "category": "new"})
    assert r.status_code == 503
    assert r.json()["detail"] == (f"cannot save the annotations file {ann}: no space left on device; "
                                  "nothing was changed (fix that and try again)")
    assert c.put(f"/api/objects/{kept['id']}", json={"category": "renamed"}).status_code == 503
    assert c.delete(f"/api/objects/{kept['id']}").status_code == 503
    listing = c.get("/api/images").json()
    assert listing["total_objects"] == 1 and listing["classes"] == ["disk"]
    assert c.get("/api/images/disk.png").json()["objects"][0]["category"] == "disk"
    monkeypatch.undo()
    accept(c, category="disk")  # the next save holds only what was accepted
    data = json.loads(ann.read_text())
    assert [a["category_id"] for a in data["annotations"]] == [1, 1]
    assert [c_["name"] for c_ in data["categories"]] == ["disk"]
    assert ann.read_bytes() != before


def test_saving_keeps_the_files_mode_and_never_reads_the_umask(make_client, photos, tmp_path, monkeypatch):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    ann.chmod(0o600)

    def no_umask(mask):
        raise AssertionError("os.umask changes the process's umask for every thread")

    monkeypatch.setattr(os, "umask", no_umask)
    c = make_client(photos, ann)
    accept(c)
    assert stat.S_IMODE(ann.stat().st_mode) == 0o600
    assert len(json.loads(ann.read_text())["annotations"]) == 1


# -- the boundary --------------------------------------------------------------------------------
def test_a_chunked_body_over_the_limit_gets_413(make_client, photos):
    c = make_client(photos, max_upload_mb=0.01)

    def chunks():
        for _ in range(40):
            yield b"x" * 1024

    r = c.post("/api/images", content=chunks(),
               headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert r.json()["detail"] == ("the request is larger than this server accepts (0.01 MB, "
                                  "--max-upload-mb)")


@pytest.mark.parametrize("host, allowed, status", [
    ("localhost:8000", (), 200), ("127.0.0.1:8000", (), 200), ("[::1]:8000", (), 200),
    ("evil.example", (), 400), ("evil.example:8000", (), 400),
    ("annotate.lan:8000", ("annotate.lan",), 200), ("evil.example", ("*",), 200),
])
def test_only_loopback_host_names_are_answered_unless_allowed(make_client, photos, host, allowed, status):
    c = make_client(photos, allowed_hosts=allowed)
    r = c.get("/api/images", headers={"Host": host})
    assert r.status_code == status, r.text
    if status == 400:
        assert "DNS rebinding" in r.json()["detail"] and "--allowed-hosts" in r.json()["detail"]


def test_the_access_log_never_shows_a_token():
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/files/a.jpg?crop=1&token=s3cret", "1.1", 200),
                               None)
    assert TokenRedactor().filter(record)
    assert "s3cret" not in record.getMessage() and "token=***" in record.getMessage()


def test_image_ids_are_canonical(make_client, photos, tmp_path):
    c = make_client(photos)
    for spelling in ("./disk.png", "disk.png"):
        accept(c, spelling)
    accept(c, "sub//flipped.jpg")
    assert c.get("/api/images/./disk.png").json()["id"] == "disk.png"
    assert c.get("/api/files/sub//flipped.jpg").status_code == 200
    data = json.loads((tmp_path / "ann.json").read_text())
    assert sorted(i["file_name"] for i in data["images"]) == ["disk.png", "sub/flipped.jpg"]
    assert c.get("/api/images").json()["images"][0]["objects"] == 2


@pytest.mark.parametrize("data, words", [
    (b"", "the file is empty (0 bytes)"),
    (b"hello, not a photo", "it is not in an image format this server reads"),
    (png(np.zeros((40, 40, 3), np.uint8))[:60], "the file is damaged or cut short"),
])
def test_an_upload_error_says_what_is_wrong_with_the_file(make_client, data, words):
    c = make_client(None)
    r = c.post("/api/images", files={"file": ("x.png", data, "image/png")})
    assert r.status_code == 400 and words in r.json()["detail"]
    assert "object at 0x" not in r.json()["detail"]


def test_a_quantised_model_shows_as_int8(make_client, tiny_model, monkeypatch):
    monkeypatch.setitem(tiny_model.meta, "quantization", {"mode": "dynamic"})
    c = make_client(None)
    assert c.get("/api/model").json()["precision"] == "int8"
