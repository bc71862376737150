"""``dextr serve``: options and the [serve] config table reach the app; the URL, the warning for
other hosts, and clear errors. uvicorn is replaced by a recorder (the browser test runs it)."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
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
    assert f":{port}/#token=abc123" in r.stdout and runs[-1]["state"].token == "abc123"


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


SERVE_DOC = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


def doc_section(title: str) -> str:
    text = SERVE_DOC.read_text()
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end]


def shell_commands(section: str, prefix: str):
    """The commands starting with ``prefix`` in the section's bash blocks, continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split("  #")[0].strip()
            if cmd.startswith(prefix):
                commands.append(cmd)
    return commands


def test_docs_serve_command_runs(tmp_path, model_file, runs, monkeypatch):
    from dextr_cli.commands import serve as serve_cmd

    (cmd,) = shell_commands(doc_section("# Annotating in the browser"), "dextr serve")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "x.jpg")
    monkeypatch.setattr(serve_cmd, "_check_port_free", lambda host, port: None)
    args = shlex.split(cmd)[1:]
    args[args.index("model.pt")] = str(model_file)
    r = runner.invoke(app, args + ["--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "http://localhost:8000/" in r.stdout
    assert runs[-1]["state"].annotations.classes == ["person", "dog"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_docs_curl_examples_run_against_a_live_server(tmp_path, tiny_model):
    from dextr_lib.serving import close_app, create_app

    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(tmp_path / "photos" / "photo.jpg")
    the_app = create_app(tiny_model, tmp_path / "photos", tmp_path / "ann.json")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(the_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        commands = shell_commands(doc_section("## HTTP API"), "curl")
        assert len(commands) == 3
        outputs = []
        for cmd in commands:
            cmd = cmd.replace("localhost:8000", f"127.0.0.1:{port}").replace("curl -s", "curl -sf")
            done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (cmd, done.stdout, done.stderr)
            outputs.append(json.loads(done.stdout))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        close_app(the_app)
    assert outputs[0]["images"][0]["id"] == "photo.jpg"
    assert outputs[1]["format"] == "rle" and outputs[1]["mask"]["size"] == [480, 640]
    assert outputs[2]["category"] == "dog" and outputs[2]["id"] == 1
