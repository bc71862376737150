"""A quoted glob in a positional file argument is expanded as the shell would (pattern options
already take quoted globs), and a pattern that matches nothing says so."""
from __future__ import annotations

import json

import numpy as np
import PIL.Image
from typer.testing import CliRunner

from dextr_cli.app import app

runner = CliRunner()


def test_points_from_mask_expands_a_quoted_glob(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels").mkdir()
    for i in range(2):
        lab = np.zeros((20, 30), np.uint8)
        lab[5:15, 5 + i:20] = 1
        PIL.Image.fromarray(lab).save(tmp_path / "labels" / f"p{i}_mask.png")
    r = runner.invoke(app, ["points-from-mask", "labels/*_mask.png"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [o["source"].endswith(f"p{i}_mask.png") for i, e in enumerate(data["images"]) for o in e["objects"]] == [True, True]
    r = runner.invoke(app, ["points-from-mask", "labels/*_nothing.png"])
    assert r.exit_code == 2 and "the pattern 'labels/*_nothing.png' matches no file" in " ".join(r.output.split())


def test_single_file_arguments_take_a_glob_of_one_file(tmp_path, photo, model_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["-m", str(model_file), "-p", "27,30", "-p", "57,30", "-p", "42,15", "-p", "42,45", "--out", "m.png"]
    r = runner.invoke(app, ["predict", "phot?.png", *args])
    assert r.exit_code == 0, r.output
    PIL.Image.open(photo).save(tmp_path / "photo2.png")
    r = runner.invoke(app, ["predict", "photo*.png", *args, "--force"])
    assert r.exit_code == 2 and "matches 2 files; give one" in " ".join(r.output.split())
