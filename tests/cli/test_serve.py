"""``dextr serve``: options and the [serve] config table reach the app; the URL, the warning for
other hosts, and clear errors. uvicorn is replaced by a recorder (the browser test runs it)."""
from __future__ import annotations

import socket

import PIL.Image
import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from dextr_cli.app import app  # noqa: E402

runner = CliRunner()


@pytest.fixture
def model_file(tmp_path, tiny_model):
    path = tmp_path / "tiny.pt"
    tiny_model.save(path)
    return path


@pytest.fixture
def photos(tmp_path, synthetic_sample):
    folder = tmp_path / "photos"
    folder.mkdir()
    PIL.Image.fromarray(synthetic_sample[0]).save(folder / "a.png")
    return folder


@pytest.fixture
def runs(monkeypatch):
    """Record uvicorn.run's arguments (and the app's state while it 'runs')."""
    calls = []

    def fake_run(the_app, **kw):
        state = the_app.state.dextr
        calls.append({"app": the_app, "state": state, "locked": state.annotations._file_lock.is_locked, **kw})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    return calls


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_starts_uvicorn_on_localhost_with_the_options(tmp_path, model_file, photos, runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = free_port()
    r = runner.invoke(app, ["serve", "-m", str(model_file), "--images", str(photos), "--port", str(port),
                            "--classes", "person, dog,", "--device", "cpu", "--threshold", "0.4"])
    assert r.exit_code == 0, r.output
    (call,) = runs
    assert (call["host"], call["port"]) == ("127.0.0.1", port)
    state = call["state"]
    assert state.annotations.path.name == "annotations.json" and call["locked"]
    assert state.annotations.classes == ["person", "dog"]
    assert state.predictor.threshold == 0.4 and state.images.list_ids() == ["a.png"]
    assert f"http://localhost:{port}/" in r.stdout and "new file" in r.stdout
    assert "Warning" not in r.output
    assert not state.annotations._file_lock.is_locked  # released when the server stops


def test_other_hosts_warn_without_a_token_and_print_the_token_url(tmp_path, model_file, runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = free_port()
    base = ["serve", "-m", str(model_file), "--host", "0.0.0.0", "--port", str(port), "--device", "cpu"]
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    assert "without --token" in r.stderr and runs[-1]["state"].token is None
    r = runner.invoke(app, base + ["--token", "abc123"])
    assert r.exit_code == 0, r.output
    assert "without --token" not in r.stderr
    assert f":{port}/?token=abc123" in r.stdout and runs[-1]["state"].token == "abc123"


def test_serve_table_of_the_config(tmp_path, model_file, photos, runs, monkeypatch):
    port = free_port()
    cfg = tmp_path / "conf" / "dextr.toml"
    cfg.parent.mkdir()
    cfg.write_text(f'[serve]\nmodel = "{model_file}"\nport = {port}\nimages = "../photos"\n'
                   f'annotations = "out/coco.json"\nclasses = ["cat"]\nprecision = "fp32"\n'
                   f'device = "cpu"\nmax_upload_mb = 2\n')
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["serve", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    state = runs[-1]["state"]
    assert runs[-1]["port"] == port
    assert state.annotations.path == cfg.parent.resolve() / "out" / "coco.json"
    assert state.images.root == photos.resolve() and state.annotations.classes == ["cat"]
    assert state.max_upload_mb == 2


def test_errors(tmp_path, model_file, runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["serve"])
    assert r.exit_code == 2 and "no model given" in r.output
    r = runner.invoke(app, ["serve", "-m", str(model_file), "--images", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = runner.invoke(app, ["serve", "-m", str(model_file), "--port", str(busy)])
    assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{busy}" in r.stderr
    (tmp_path / "bad.json").write_text("{")
    r = runner.invoke(app, ["serve", "-m", str(model_file), "-a", str(tmp_path / "bad.json"),
                            "--port", str(free_port()), "--device", "cpu"])
    assert r.exit_code == 1 and "bad.json" in r.stderr
    assert not runs
