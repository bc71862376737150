"""Downloads against a real HTTP server on 127.0.0.1 (no internet)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import pytest
from helpers.http_server import serve

from dextr_lib.errors import ChecksumError, DownloadError
from dextr_lib.weights import zoo
from dextr_lib.weights.download import download_file

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(scope="module")
def server():
    with serve(PAYLOAD) as s:
        yield s


def test_full_download_verifies_and_renames(server, tmp_path):
    dst = tmp_path / "sub" / "model.pth"
    seen = []
    digest = download_file(server.url("range"), dst, sha256=SHA, on_progress=lambda d, t: seen.append((d, t)))
    assert digest == SHA
    assert dst.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "model.pth.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert server.last_range() is None


def test_resume_partial_file_with_range(server, tmp_path):
    dst = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD[:100_000])
    seen = []
    download_file(server.url("range"), dst, sha256=SHA, on_progress=lambda d, t: seen.append(d))
    assert server.last_range() == "bytes=100000-"
    assert seen[0] == 100_000  # only the rest was transferred
    assert dst.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dst = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(b"\0" * 50_000)  # would corrupt a naive append
    download_file(server.url("norange"), dst, sha256=SHA)
    assert server.last_range() == "bytes=50000-"
    assert dst.read_bytes() == PAYLOAD


def test_hash_mismatch_deletes_and_suggests_force(server, tmp_path):
    dst = tmp_path / "model.pth"
    with pytest.raises(ChecksumError, match="dextr download --force"):
        download_file(server.url("range"), dst, sha256="0" * 64)
    assert not dst.exists() and not (tmp_path / "model.pth.part").exists()


def test_hash_prefix_is_checked_like_torch_hub(server, tmp_path):
    download_file(server.url("range"), tmp_path / "a.pth", hash_prefix=SHA[:8])
    bad = SHA[:7] + ("0" if SHA[7] != "0" else "1")
    with pytest.raises(ChecksumError):
        download_file(server.url("range"), tmp_path / "b.pth", hash_prefix=bad)
    assert not (tmp_path / "b.pth").exists()


def test_404_names_url_and_manual_placement(server, tmp_path):
    dst = tmp_path / "model.pth"
    url = server.base + "/missing/model.pth"
    with pytest.raises(DownloadError) as e:
        download_file(url, dst)
    msg = str(e.value)
    assert "404" in msg and url in msg and str(dst) in msg
    assert not dst.exists()


def test_dropped_connection_keeps_part_then_resumes(server, tmp_path):
    dst = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="interrupted"):
        download_file(server.url("drop"), dst, sha256=SHA)
    part = tmp_path / "model.pth.part"
    assert not dst.exists()
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]
    download_file(server.url("range"), dst, sha256=SHA)
    assert server.last_range() == f"bytes={len(PAYLOAD) // 2}-"
    assert dst.read_bytes() == PAYLOAD


def test_unreachable_host_is_a_download_error(tmp_path):
    with pytest.raises(DownloadError, match="place it at"):
        download_file("http://127.0.0.1:9/model.pth", tmp_path / "m.pth", timeout=5)


def _entry(monkeypatch, name="test-model", **changes):
    base = zoo.get_pretrained("pascalvoc-resunet101")
    entry = dataclasses.replace(base, name=name, **changes)
    monkeypatch.setitem(zoo._MODELS, name, entry)
    return entry


def test_fetch_uses_mirror_keeps_file_name_and_records_sha(server, tmp_path, monkeypatch):
    entry = _entry(monkeypatch, urls=("http://127.0.0.1:9/nowhere/dextr_x-%s.pth" % SHA[:8],),
                   hash_prefix=SHA[:8])
    monkeypatch.setenv("DEXTR_MIRROR", server.base + "/range/")
    path = zoo.fetch_pretrained(entry.name, cache_dir=tmp_path)
    assert path == tmp_path / entry.filename and path.read_bytes() == PAYLOAD
    assert server.requests[-1]["path"] == "/range/" + entry.filename
    assert json.loads((tmp_path / (entry.filename + ".json")).read_text())["sha256"] == SHA
    # Cached: no new request.
    n = len(server.requests)
    zoo.fetch_pretrained(entry.name, cache_dir=tmp_path)
    assert len(server.requests) == n


def test_unhashed_entry_is_pinned_on_first_download(server, tmp_path, monkeypatch):
    entry = _entry(monkeypatch, urls=(server.url("range", "orig.pth"),), hash_prefix=None)
    zoo.fetch_pretrained(entry.name, cache_dir=tmp_path)
    assert zoo.recorded_sha256(tmp_path / "orig.pth") == SHA
    # A later download (the cached file lost) must give the same bytes: tamper with the record.
    meta = tmp_path / "orig.pth.json"
    meta.write_text(json.dumps({"sha256": "f" * 64}))
    (tmp_path / "orig.pth").unlink()
    with pytest.raises(ChecksumError):
        zoo.fetch_pretrained(entry.name, cache_dir=tmp_path)
    # --force forgets a pinned hash (with a warning) and pins the new download's.
    warnings = []
    zoo.fetch_pretrained(entry.name, cache_dir=tmp_path, force=True, on_warning=warnings.append)
    assert len(warnings) == 1 and "forgetting the SHA-256 pinned" in warnings[0]
    assert zoo.recorded_sha256(tmp_path / "orig.pth") == SHA


def test_unhashed_entry_never_pins_a_resumed_download(server, tmp_path, monkeypatch):
    entry = _entry(monkeypatch, urls=(server.url("range", "orig2.pth"),), hash_prefix=None)
    # A stale .part (another file's bytes) must not be resumed into the file whose hash is pinned.
    (tmp_path / "orig2.pth.part").write_bytes(b"x" * 1000)
    zoo.fetch_pretrained(entry.name, cache_dir=tmp_path)
    assert server.last_range() is None
    assert (tmp_path / "orig2.pth").read_bytes() == PAYLOAD
    assert zoo.recorded_sha256(tmp_path / "orig2.pth") == SHA


def test_mirror_falls_back_to_published_url(server, tmp_path, monkeypatch):
    entry = _entry(monkeypatch, urls=(server.url("range", "dextr_y.pth"),), hash_prefix=None)
    path = zoo.fetch_pretrained(entry.name, cache_dir=tmp_path, mirror=server.base + "/missing/")
    assert path.read_bytes() == PAYLOAD
    assert [r["path"] for r in server.requests[-2:]] == ["/missing/dextr_y.pth", "/range/dextr_y.pth"]
