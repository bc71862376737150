"""Downloads against misbehaving servers on 127.0.0.1: bad Range answers, trickling and endless
servers, a full disk, bad arguments, and two downloads of one file at once (real processes)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest
from helpers.http_server import serve
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.errors import ChecksumError, DownloadError
from dextr_lib.weights.download import download_file

PAYLOAD = os.urandom(200_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
runner = CliRunner()


@pytest.fixture(scope="module")
def server():
    with serve(PAYLOAD) as s:
        yield s


def test_206_from_byte_zero_is_not_appended_to_the_part(server, tmp_path):
    dst = tmp_path / "m.pth"
    (tmp_path / "m.pth.part").write_bytes(PAYLOAD[:50_000])
    # The server answers "bytes=50000-" with 206 and the whole file from byte 0: appending it
    # would make a 250 KB file with a wrong hash that an unhashed entry would then trust.
    digest = download_file(server.url("badrange"), dst)
    assert server.last_range() == "bytes=50000-"
    assert digest == SHA and dst.read_bytes() == PAYLOAD


def test_a_resumed_download_still_matches(server, tmp_path):
    dst = tmp_path / "m.pth"
    (tmp_path / "m.pth.part").write_bytes(PAYLOAD[:50_000])
    assert download_file(server.url("range"), dst, sha256=SHA) == SHA
    assert server.last_range() == "bytes=50000-"


def test_trickling_server_stalls_out_and_keeps_the_part_for_resume(server, tmp_path):
    dst = tmp_path / "m.pth"
    with pytest.raises(DownloadError, match="stalled") as e:
        download_file(server.url("trickle"), dst, stall_timeout=0.5)
    assert "run the same command again to resume" in str(e.value)
    assert not dst.exists()


def test_overall_deadline(server, tmp_path):
    with pytest.raises(DownloadError, match="deadline"):
        download_file(server.url("trickle"), tmp_path / "m.pth", deadline=0.5, stall_timeout=100)


def test_endless_server_is_cut_off_and_the_part_removed(server, tmp_path):
    dst = tmp_path / "m.pth"
    with pytest.raises(DownloadError, match="more than 1000000 bytes"):
        download_file(server.url("endless"), dst, max_bytes=1_000_000)
    assert not (tmp_path / "m.pth.part").exists() and not dst.exists()


def test_endless_server_is_bounded_by_the_model_size_limit(server, tmp_path, monkeypatch):
    monkeypatch.setenv("DEXTR_MAX_CHECKPOINT_MB", "1")
    with pytest.raises(DownloadError, match="more than 1048576 bytes"):
        download_file(server.url("endless"), tmp_path / "m.pth")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_disk_removes_the_part_and_says_so(server, tmp_path):
    dst = tmp_path / "m.pth"
    part = tmp_path / "m.pth.part"
    part.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    with pytest.raises(DownloadError) as e:
        download_file(server.url("range"), dst)
    assert "no space left on device" in str(e.value) and "removed" in str(e.value)
    assert not part.exists() and not part.is_symlink() and not dst.exists()


@pytest.mark.parametrize("args, needle", [
    (["--url", "just-a-name"], "not a download URL"),
    (["--url", "ftp://example.org/x.pt"], "not a download URL"),
    (["--url", "http://127.0.0.1:9/m.pt", "--sha256", "xyz"], "sha256 must be 64 hex digits"),
])
def test_bad_arguments_are_one_line(tmp_path, args, needle):
    r = runner.invoke(app, ["download", *args, "--cache-dir", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)


def test_dated_file_name_is_not_a_hash_prefix(server, tmp_path):
    # torch.hub reads NAME-<hex>.EXT as a hash prefix; a date is hex too, but only registry
    # entries carry hash prefixes: a --url file without --sha256 is recorded, not refused.
    r = runner.invoke(app, ["download", "--url", server.url("range", "mymodel-20240101.pt"),
                            "--cache-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mymodel-20240101.pt").read_bytes() == PAYLOAD
    assert "not verified" in r.output


def test_sha256_is_checked(server, tmp_path):
    with pytest.raises(ChecksumError):
        download_file(server.url("range"), tmp_path / "m.pth", sha256="0" * 64)


def test_two_downloads_of_one_file_at_once(server, tmp_path):
    """Two real processes fetch the same --url into one cache at once: both succeed, the file is
    whole, and the second reuses the first's download instead of fetching it again."""
    url = server.url("slow", "shared.pth")
    script = textwrap.dedent(f"""
        import sys
        from dextr_cli.app import app
        sys.argv = ["dextr", "download", "--url", {url!r}, "--sha256", {SHA!r},
                    "--cache-dir", {str(tmp_path)!r}]
        app()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert (tmp_path / "shared.pth").read_bytes() == PAYLOAD
    assert sum("Already cached" in out for out, _ in outs) == 1
    assert sum(r["path"] == "/slow/shared.pth" for r in server.requests) == 1
    assert not (tmp_path / "shared.pth.part").exists()
