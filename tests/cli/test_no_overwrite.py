"""No command overwrites an existing file unless asked (--force), and never its own input; eval
checks its outputs before the slow work; default names cannot pass for ground truth."""
from __future__ import annotations

import json
import os

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app
from dextr_lib.evaluation import evaluator as evaluation

runner = CliRunner()
POINTS = ["-p", "27,30", "-p", "57,30", "-p", "42,15", "-p", "42,45"]


def _refused(r, *needles):
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), r.exception
    for n in needles:
        assert n in r.output, (n, r.output)


def test_predict_never_writes_over_its_photo(photo, model_file):
    before = photo.read_bytes()
    for opt in ("--out", "--overlay"):
        args = ["predict", str(photo), "-m", str(model_file), *POINTS, opt, str(photo), "--force"]
        if opt == "--overlay":
            args += ["--out", str(photo.with_name("m.png"))]
        _refused(runner.invoke(app, args), "it is an input")
        assert photo.read_bytes() == before


def test_predict_default_name_is_not_ground_truth_and_is_not_overwritten(tmp_path, photo, model_file,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    truth = tmp_path / "photo_mask.png"  # a ground-truth mask beside the photo
    truth.write_bytes(b"ground truth")
    args = ["predict", str(photo), "-m", str(model_file), *POINTS, "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "photo_dextr.png").is_file() and truth.read_bytes() == b"ground truth"
    mtime = os.stat(tmp_path / "photo_dextr.png").st_mtime_ns
    _refused(runner.invoke(app, args), "photo_dextr.png already exists", "--force")
    assert os.stat(tmp_path / "photo_dextr.png").st_mtime_ns == mtime
    assert runner.invoke(app, args + ["--force"]).exit_code == 0


def test_predict_checks_outputs_before_loading_the_model(tmp_path, photo, monkeypatch):
    existing = tmp_path / "m.png"
    existing.write_bytes(b"keep")

    def no_load(*a, **k):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(dextr_lib, "load_model", no_load)
    r = runner.invoke(app, ["predict", str(photo), "-m", "x.pt", *POINTS, "--out", str(existing)])
    _refused(r, "already exists")
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = runner.invoke(app, ["predict", str(photo), "-m", "x.pt", *POINTS, "--out", str(blocker / "m.png")])
    _refused(r, "not a folder")


def test_points_from_mask_never_replaces_a_label_image(tmp_path):
    label = tmp_path / "L.png"
    PIL.Image.fromarray(np.pad(np.ones((10, 10), np.uint8), 5)).save(label)
    before = label.read_bytes()
    _refused(runner.invoke(app, ["points-from-mask", str(label), "--out", str(label), "--force"]), "it is an input")
    assert label.read_bytes() == before
    out = tmp_path / "objects.json"
    assert runner.invoke(app, ["points-from-mask", str(label), "--out", str(out)]).exit_code == 0
    _refused(runner.invoke(app, ["points-from-mask", str(label), "--out", str(out)]), "--force")
    assert runner.invoke(app, ["points-from-mask", str(label), "--out", str(out), "--force"]).exit_code == 0


@pytest.fixture
def label_data(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    lab = np.zeros((64, 80), np.uint8)
    lab[10:30, 10:40] = 1
    img = np.full((64, 80, 3), 30, np.uint8)
    img[lab > 0] = 200
    names = ["img0", os.fsdecode(b"caf\xe9")]  # the second name is not valid UTF-8
    for name in names:
        PIL.Image.fromarray(img).save(tmp_path / "images" / f"{name}.png")
        PIL.Image.fromarray(lab).save(tmp_path / "labels" / f"{name}_mask.png")
    return tmp_path


def _eval_args(root, model_file):
    return ["eval", "-m", str(model_file), "--dataset", "custom_label", "--device", "cpu",
            "--image-pat", str(root / "images" / "*.png"), "--target-pat", str(root / "labels" / "*_mask.png")]


def test_eval_refuses_bad_outputs_before_evaluating(label_data, model_file, monkeypatch):
    def no_eval(*a, **k):
        raise AssertionError("evaluation must not start")

    monkeypatch.setattr(evaluation, "evaluate", no_eval)  # the command imports it when it runs
    base = _eval_args(label_data, model_file)
    photo = label_data / "images" / "img0.png"
    before = photo.read_bytes()
    _refused(runner.invoke(app, base + ["--json", str(photo), "--force"]), "it is an input")
    assert photo.read_bytes() == before
    _refused(runner.invoke(app, base + ["--csv", str(label_data / "labels" / "img0_mask.png"), "--force"]),
             "it is an input")
    existing = label_data / "report.json"
    existing.write_text("{}")
    _refused(runner.invoke(app, base + ["--json", str(existing)]), "already exists")
    _refused(runner.invoke(app, base + ["--csv", str(photo / "x.csv")]), "not a folder")
    worst = label_data / "worst"
    worst.mkdir()
    (worst / "worst01_old.png").write_bytes(b"x")
    _refused(runner.invoke(app, base + ["--overlays", str(worst)]), "already holds overlays")


def test_eval_with_non_utf8_image_names_writes_its_reports(label_data, model_file, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, _eval_args(label_data, model_file) + [
        "--json", str(out / "r.json"), "--csv", str(out / "o.csv"), "--overlays", str(out / "worst")])
    assert r.exit_code == 0, r.output
    assert "caf\\udce9.png" in (out / "o.csv").read_text(encoding="utf-8")  # escaped, valid UTF-8
    json.loads((out / "r.json").read_text(encoding="utf-8"))
    assert len(list((out / "worst").glob("worst*.png"))) == 2


def test_points_file_masks_are_not_overwritten_without_force(tmp_path, photo, model_file):
    obj = {"label": 1, "points_xy": [[27, 30], [57, 30], [42, 15], [42, 45]]}
    pf = tmp_path / "objects.json"
    pf.write_text(json.dumps({"format": "dextr-objects", "format_version": 1,
                              "images": [{"image": photo.name, "objects": [obj, dict(obj, label=2)]}]}))
    out = tmp_path / "masks"
    args = ["predict", "-m", str(model_file), "--points-file", str(pf), "--out-dir", str(out), "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    (out / "photo_label2.png").write_bytes(b"edited by hand")
    (out / "photo_label1.png").unlink()
    _refused(runner.invoke(app, args), "photo_label2.png already exists", "--force")
    assert not (out / "photo_label1.png").exists()  # refused before anything was written
    assert runner.invoke(app, args + ["--force"]).exit_code == 0
    assert (out / "photo_label2.png").read_bytes() != b"edited by hand"
