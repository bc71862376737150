"""The root command: help, version, the error boundary, and the installed console script."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app

runner = CliRunner()


def test_help_lists_the_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("predict", "points-from-mask"):
        assert cmd in r.stdout
    r = runner.invoke(app, [])
    assert "predict" in r.output  # no args: help


def test_command_help_teaches_the_conventions():
    r = runner.invoke(app, ["predict", "--help"])
    assert r.exit_code == 0
    assert "X,Y" in r.stdout and "column" in r.stdout and "[y, x]" in r.stdout and "Examples" in r.stdout
    r = runner.invoke(app, ["points-from-mask", "--help"])
    assert r.exit_code == 0 and "points_xy" in r.stdout and "Examples" in r.stdout


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"dextr {dextr_lib.__version__}"


def test_library_errors_are_one_line_and_debug_reraises(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[predict]\nbatch_sise = 2\n")
    (tmp_path / "x.png").write_bytes(b"")
    args = ["predict", str(tmp_path / "x.png"), "-c", str(bad)]
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: ") and "batch_sise" in r.stderr.splitlines()[0]
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["--debug", *args])
    assert isinstance(r.exception, dextr_lib.ConfigError)


def _dextr(*args, cwd):
    script = Path(sys.executable).with_name("dextr")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "dextr_cli"]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_installed_console_script_end_to_end(tmp_path, tiny_model, synthetic_sample):
    import PIL.Image

    image, _, _ = synthetic_sample
    PIL.Image.fromarray(image).save(tmp_path / "photo.png")
    tiny_model.save(tmp_path / "m.pt")
    r = _dextr("predict", "photo.png", "-m", "m.pt", "-p", "27,30", "-p", "57,30", "-p", "42,15",
               "-p", "42,45", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert PIL.Image.open(tmp_path / "photo_dextr.png").size == (80, 64)
    # A user error: one line, exit 1, no traceback; --debug shows it.
    r = _dextr("predict", "photo.png", "-m", "missing.pt", "-p", "1,2", "-p", "3,4", "-p", "5,6",
               "-p", "7,8", "--out", "other.png", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert "missing.pt" in r.stderr.splitlines()[0]


def test_python_dash_m_debug_shows_the_traceback(tmp_path):
    (tmp_path / "x.png").write_bytes(b"junk")
    r = subprocess.run([sys.executable, "-m", "dextr_cli", "--debug", "points-from-mask", "x.png"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "InvalidImageError" in r.stderr


def _missing_model_args(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    return ["predict", str(tmp_path / "x.png"), "-m", str(tmp_path / "missing.pt"),
            "-p", "1,2", "-p", "3,4", "-p", "5,6", "-p", "7,8"]


def test_an_error_is_exactly_one_line(tmp_path):
    r = runner.invoke(app, _missing_model_args(tmp_path))
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Error: model not found") and lines[0].endswith("(--debug: traceback)")


@pytest.mark.parametrize("where", ["root", "command"])
def test_debug_is_accepted_before_and_after_the_command(tmp_path, where):
    args = _missing_model_args(tmp_path)
    args = ["--debug", *args] if where == "root" else [*args, "--debug"]
    r = runner.invoke(app, args)
    assert isinstance(r.exception, dextr_lib.CheckpointError)


@pytest.mark.parametrize("value, shows", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_dextr_debug_environment_variable(tmp_path, monkeypatch, value, shows):
    monkeypatch.setenv("DEXTR_DEBUG", value)
    r = runner.invoke(app, _missing_model_args(tmp_path))
    assert isinstance(r.exception, dextr_lib.CheckpointError) is shows
    assert (r.exit_code == 1 and r.stderr.startswith("Error: ")) is not shows


def test_every_command_lists_debug_in_its_help():
    r = runner.invoke(app, ["--help"])
    commands = [c for c in ("predict", "points-from-mask", "train", "finetune", "eval", "download",
                            "convert") if c in r.stdout]
    assert len(commands) >= 5
    for cmd in commands:
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "--debug" in r.stdout, cmd


def test_an_unquoted_glob_says_quote_the_pattern(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = [f"img{i}_mask.png" for i in range(40)]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    # What the shell makes of `--target-pat *_mask.png`: the first file is the value, the rest extra.
    r = runner.invoke(app, ["eval", "-m", "m.pt", "--dataset", "custom_label", "--image-pat", "x",
                            "--target-pat", *names])
    assert r.exit_code == 2
    assert "quote the pattern" in r.stderr and "39 unexpected extra arguments" in r.stderr
    assert names[-1] not in r.stderr  # not the whole wall of names
    # Extra arguments that are not files keep the plain message.
    r = runner.invoke(app, ["predict", names[0], "no-such-file", "-m", "m.pt"])
    assert r.exit_code == 2 and "no-such-file" in r.stderr and "quote the pattern" not in r.stderr


@pytest.fixture
def _restore_threads():
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def test_threads_from_option_environment_config_or_auto(tmp_path, monkeypatch, _restore_threads):
    torch = _restore_threads
    from dextr_lib.inference.device import TORCH_DEFAULT_THREADS, auto_threads

    r = runner.invoke(app, ["download", "--list", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert torch.get_num_threads() == 1
    cfg = tmp_path / "c.toml"
    cfg.write_text("[cpu]\nthreads = 3\n")
    r = runner.invoke(app, ["download", "--list", "-c", str(cfg)])
    assert r.exit_code == 0 and torch.get_num_threads() == 3
    monkeypatch.setenv("DEXTR_THREADS", "2")  # the environment beats the config ...
    r = runner.invoke(app, ["download", "--list", "-c", str(cfg)])
    assert r.exit_code == 0 and torch.get_num_threads() == 2
    r = runner.invoke(app, ["download", "--list", "-c", str(cfg), "--threads", "1"])  # ... the option both
    assert r.exit_code == 0 and torch.get_num_threads() == 1
    monkeypatch.setenv("DEXTR_THREADS", "many")
    r = runner.invoke(app, ["download", "--list"])
    assert r.exit_code == 1 and "DEXTR_THREADS" in r.stderr
    monkeypatch.delenv("DEXTR_THREADS")
    r = runner.invoke(app, ["download", "--list"])  # nothing set: auto
    assert r.exit_code == 0 and 1 <= torch.get_num_threads() <= TORCH_DEFAULT_THREADS
    monkeypatch.setattr("dextr_lib.utils.cpuload.busy_cpus", lambda: 50.0)  # an over-full machine: one thread
    assert auto_threads() == 1 or "OMP_NUM_THREADS" in os.environ
    monkeypatch.setattr("dextr_lib.utils.cpuload.busy_cpus", lambda: 0.0)  # an idle one: torch's default
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert auto_threads() == min(TORCH_DEFAULT_THREADS, os.cpu_count())
