"""examples/demo.py (`make demo`): the published model when reachable, else one line and the
untrained network. The "published" model here is a small stand-in checkpoint served over HTTP on
127.0.0.1 through the mirror setting ($DEXTR_MIRROR), registered as a zoo entry for the test."""
from __future__ import annotations

import hashlib
import importlib.util
import socket
from pathlib import Path

import pytest

import dextr_lib
from dextr_lib.weights import zoo
from tests.helpers.http_server import serve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("dextr_demo", REPO / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def standin(tmp_path, tiny_model):
    """Bytes of a small trained-format checkpoint: what the mirror serves."""
    path = tmp_path / "standin.pt"
    tiny_model.save(path)
    return path.read_bytes()


def _register(monkeypatch, name, sha256, urls):
    entry = zoo.PretrainedModel(name=name, urls=tuple(urls), arch="resunet18", profile="dextr",
                                    file_format="dextr", sha256=sha256)
    monkeypatch.setitem(zoo._MODELS, name, entry)
    return entry


def _closed_port_url(name):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"  # nothing listens there: like being offline


def test_the_demo_default_is_a_published_model(demo):
    assert demo.PUBLISHED_MODEL in dextr_lib.list_pretrained()


def test_online_downloads_verifies_caches_and_predicts(demo, standin, tmp_path, monkeypatch, capsys):
    name = "demo-standin"
    entry = _register(monkeypatch, name, hashlib.sha256(standin).hexdigest(),
                      [_closed_port_url("demo-standin.pt")])
    with serve(standin) as server:
        monkeypatch.setenv("DEXTR_MIRROR", server.base + "/range")
        assert demo.main(["--published", name, "--out-dir", str(tmp_path / "out")]) == 0
        out = capsys.readouterr()
        assert f"Model: the published {name} (resunet18, target 64" in out.out
        assert "Offline" not in out.err and "untrained" not in out.out
        assert [r["path"] for r in server.requests] == ["/range/demo-standin.pt"]
        assert zoo.cached_path(entry).read_bytes() == standin
        assert (tmp_path / "out" / "mask.png").is_file() and (tmp_path / "out" / "overlay.png").is_file()
        # A second run uses the cache: no request at all.
        assert demo.main(["--published", name, "--out-dir", str(tmp_path / "out2")]) == 0
        assert len(server.requests) == 1
        assert "Model: the published" in capsys.readouterr().out


def test_a_download_failing_its_hash_is_not_used(demo, standin, tmp_path, monkeypatch, capsys):
    entry = _register(monkeypatch, "demo-bad", "0" * 64, [_closed_port_url("demo-bad.pt")])
    with serve(standin) as server:
        monkeypatch.setenv("DEXTR_MIRROR", server.base + "/range")
        assert demo.main(["--published", "demo-bad", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    err_lines = [ln for ln in out.err.strip().splitlines() if not ln.startswith("Downloading ")]
    assert len(err_lines) == 1 and "hash check" in err_lines[0] and "untrained network" in err_lines[0]
    assert "Model: a NEW resunet18 with random weights" in out.out
    assert not zoo.cached_path(entry).exists()


def test_offline_says_so_in_one_line_and_falls_back(demo, tmp_path, monkeypatch, capsys):
    _register(monkeypatch, "demo-offline", "0" * 64, [_closed_port_url("demo-offline.pt")])
    assert demo.main(["--published", "demo-offline", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    err_lines = out.err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("Offline: cannot download the published "
                                                           "model demo-offline")
    assert "Model: a NEW resunet18 with random weights (untrained)" in out.out
    assert "untrained: not meaningful" in out.out
    assert (tmp_path / "mask.png").is_file() and (tmp_path / "overlay.png").is_file()


def test_offline_flag_tries_no_download(demo, standin, tmp_path, monkeypatch, capsys):
    _register(monkeypatch, "demo-standin", hashlib.sha256(standin).hexdigest(), ["http://x.invalid/a.pt"])
    with serve(standin) as server:
        monkeypatch.setenv("DEXTR_MIRROR", server.base + "/range")
        assert demo.main(["--offline", "--published", "demo-standin", "--out-dir", str(tmp_path)]) == 0
        assert server.requests == []
    out = capsys.readouterr()
    assert out.err == "" and "random weights" in out.out
