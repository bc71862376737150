"""Hostile or odd input reaches the user as one line and exit code 1, never a traceback or a
hang: Rich markup in names, named pipes, decompression bombs, label bombs, absurd points,
malformed objects.json, and OS errors at the CLI boundary."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from dextr_cli.app import app

runner = CliRunner()
POINTS = ["--points", "27,30", "--points", "57,30", "--points", "42,15", "--points", "42,45"]


def _one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    err = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1, r.output
    for n in needles:
        assert n in r.output, (n, r.output)
    return err[0]


def test_markup_in_names_is_printed_literally(tmp_path, photo, model_file):
    src = tmp_path / "[old]photo.png"
    photo.rename(src)
    out = tmp_path / "[/x]mask.png"
    r = runner.invoke(app, ["predict", str(src), "-m", str(model_file), *POINTS, "--out", str(out),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "[/x]mask.png" in r.stdout and out.is_file()
    r = runner.invoke(app, ["predict", str(src), "-m", str(tmp_path / "gone[old][/x].pt"), *POINTS])
    _one_line_error(r, "gone[old][/x].pt")


def test_a_named_pipe_as_image_is_refused_not_read(tmp_path, model_file):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    # A real process: reading the pipe would block forever.
    r = subprocess.run([sys.executable, "-m", "dextr_cli", "predict", str(fifo), "-m", str(model_file),
                        *POINTS, "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "not a regular file" in r.stderr and "Traceback" not in r.stderr


def test_decompression_bomb_is_one_line_and_max_pixels_overrides(tmp_path, photo, model_file):
    bomb = tmp_path / "bomb.png"
    PIL.Image.new("1", (30000, 30000)).save(bomb)  # ~100 KB on disk, 900 megapixels
    r = runner.invoke(app, ["predict", str(bomb), "-m", str(model_file), *POINTS])
    _one_line_error(r, "bomb.png", "--max-pixels")
    # Our own limit applies below Pillow's: a 64x80 photo is over a 1000-pixel limit ...
    r = runner.invoke(app, ["--max-pixels", "1000", "predict", str(photo), "-m", str(model_file), *POINTS,
                            "--out", str(tmp_path / "m.png"), "--device", "cpu"])
    _one_line_error(r, "64 = 5120 pixels", "max_pixels=1000")
    # ... and the limit is per invocation: the next one is back to the default.
    r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), *POINTS,
                            "--out", str(tmp_path / "m.png"), "--device", "cpu"])
    assert r.exit_code == 0, r.output


def test_label_image_with_too_many_labels(tmp_path):
    labels = np.zeros((64, 64), np.uint16)
    labels.flat[:4000] = np.arange(1, 4001)  # 4000 one-pixel objects in a tiny 16-bit PNG
    path = tmp_path / "L.png"
    PIL.Image.fromarray(labels).save(path)
    r = runner.invoke(app, ["points-from-mask", str(path)])
    _one_line_error(r, "4001 distinct labels", "--max-labels")
    r = runner.invoke(app, ["--max-labels", "5000", "points-from-mask", str(path), "--min-area", "1"])
    assert r.exit_code == 0, r.output


def test_absurd_points_are_refused(photo, model_file, tmp_path):
    r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), "--points=-1e308,30",
                            "-p", "57,30", "-p", "42,15", "-p", "1e308,45", "--out", str(tmp_path / "m.png")])
    assert r.exit_code == 2 and "too far" in r.stderr and "Traceback" not in r.output  # a usage error


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["images"][0]["objects"][0].update(source=5), "source must be a path string"),
    (lambda d: d["images"][0]["objects"][0].update(label=[1]), "label must be an integer"),
    (lambda d: d["images"][0]["objects"][0].update(points_xy=[[1, 2], [3, True], [5, 6], [7, 8]]),
     "four [x, y] number pairs"),
    (lambda d: d["images"][0]["objects"][0].update(points_xy=[[10 ** 400, 2], [3, 4], [5, 6], [7, 8]]),
     "too large"),
    (lambda d: d["images"][0].update(height="64"), "height must be a positive integer"),
    (lambda d: d.update(exif_transpose="no"), "exif_transpose"),
])
def test_malformed_objects_json_is_one_line(tmp_path, photo, model_file, mutate, needle):
    data = {"format": "dextr-objects", "format_version": 1, "images": [{
        "image": photo.name, "height": 64, "width": 80,
        "objects": [{"label": 1, "points_xy": [[27, 30], [57, 30], [42, 15], [42, 45]]}]}]}
    mutate(data)
    pf = tmp_path / "objects.json"
    pf.write_text(json.dumps(data))
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--points-file", str(pf),
                            "--out-dir", str(tmp_path / "masks")])
    _one_line_error(r, "objects.json", needle)


def test_deeply_nested_objects_json_is_one_line(tmp_path, model_file):
    pf = tmp_path / "objects.json"
    pf.write_text("[" * 100000 + "]" * 100000)
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--points-file", str(pf),
                            "--out-dir", str(tmp_path / "masks")])
    _one_line_error(r, "nested too deeply")


def test_too_many_objects_on_one_image(tmp_path, photo, model_file):
    obj = {"label": 1, "points_xy": [[27, 30], [57, 30], [42, 15], [42, 45]]}
    data = {"format": "dextr-objects", "format_version": 1,
            "images": [{"image": photo.name, "objects": [obj] * 5}]}
    pf = tmp_path / "objects.json"
    pf.write_text(json.dumps(data))
    args = ["predict", "-m", str(model_file), "--points-file", str(pf), "--out-dir", str(tmp_path / "m")]
    _one_line_error(runner.invoke(app, ["--max-objects", "4", *args]), "5 objects", "--max-objects")


def test_os_errors_reaching_the_boundary_are_one_line(monkeypatch, tmp_path):
    from dextr_lib.workflows import points  # the command imports it when it runs

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "[x]out.json"))

    monkeypatch.setattr(points, "points_from_masks", full_disk)
    label = tmp_path / "L.png"
    PIL.Image.fromarray(np.ones((4, 4), np.uint8)).save(label)
    r = runner.invoke(app, ["points-from-mask", str(label)])
    _one_line_error(r, "[x]out.json: no space left on device")
    r = runner.invoke(app, ["--debug", "points-from-mask", str(label)])
    assert isinstance(r.exception, OSError)  # --debug lets it through, with its traceback


@pytest.mark.parametrize("text, needle", [
    (b"[predict]\nbatch_size = 0\n", "[predict] batch_size: must be >= 1, got 0"),
    (b"[predict]\nthreshold = 2.0\n", "[predict] threshold: must be <= 1.0, got 2.0"),
    (b"[eval]\nthresholds = [0.5, -1.0]\n", "[eval] thresholds: must be >= 0.0, got -1.0"),
    (b"[train]\npadding = nan\n", "[train] padding: expected a finite number, got nan"),
    (b"[train]\ntarget_size = 8\n", "[train] target_size: must be >= 16"),
    (b"[points_from_mask]\nkind = \"labels\"\n", "expected one of label, mask"),
    (b"[predict]\nmodel = \"caf\xe9.pt\"\n", "not UTF-8"),
    (b"a = " + b"[" * 100000 + b"]" * 100000 + b"\n", "c.toml"),
])
def test_bad_config_values_are_one_line(tmp_path, photo, text, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(text)
    r = runner.invoke(app, ["predict", str(photo), *POINTS, "-c", str(cfg)])
    _one_line_error(r, needle)


def test_unwritable_jobs_folder_is_one_line(tmp_path, photo):
    labels = tmp_path / "labels"
    labels.mkdir()
    lab = np.zeros((64, 80), np.uint8)
    lab[10:30, 10:40] = 1
    PIL.Image.fromarray(lab).save(labels / "photo.png")
    (tmp_path / "blocker").write_text("")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[paths]\njobs = "blocker/jobs"\n')
    r = runner.invoke(app, ["train", "j", "-c", str(cfg), "--dataset", "custom_label",
                            "--image-pat", str(photo), "--target-pat", str(labels / "*.png"),
                            "--arch", "resunet18", "--no-pretrained", "--target-size", "64",
                            "--num-epochs", "1", "--iters-per-epoch", "1"])
    _one_line_error(r, "blocker/jobs")


def test_a_named_pipe_as_photo_of_a_mask_is_refused_not_read(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    PIL.Image.fromarray(np.pad(np.ones((8, 8), np.uint8), 4)).save(labels / "x_mask.png")
    os.mkfifo(tmp_path / "x.png")
    r = subprocess.run([sys.executable, "-m", "dextr_cli", "points-from-mask", str(labels / "x_mask.png"),
                        "--image", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "not a regular file" in r.stderr, r.stderr
