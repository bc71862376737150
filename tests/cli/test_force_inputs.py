"""`--force` never replaces an input, for every command and every kind of input: the model, the
photos (those a COCO or points file names, and --image-dir photos included), label images, the
points/COCO file and the config, however the output names it (symlink, hard link, ./ spelling).
Each refusal is one line, exit 1, and leaves the input's bytes as they were."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from dextr_cli.app import app

runner = CliRunner()
POINTS_XY = [[27, 30], [57, 30], [42, 15], [42, 45]]


@pytest.fixture
def files(tmp_path, photo, model_file):
    """A folder with a model, two photos in images/, their label images, a COCO file and a
    points file naming them, and a config."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    shutil.copy(model_file, tmp_path / "m.pt")
    lab = np.zeros((64, 80), np.uint8)
    lab[15:46, 27:58] = 1
    for stem in ("a", "a_label1"):  # a_label1.png is also the name of a's first mask
        shutil.copy(photo, tmp_path / "images" / f"{stem}.png")
        PIL.Image.fromarray(lab).save(tmp_path / "labels" / f"{stem}_mask.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 80}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [27, 15, 31, 31],
                             "area": 961, "extreme_points": POINTS_XY}],
            "categories": [{"id": 1, "name": "object"}]}
    (tmp_path / "images" / "in.json").write_text(json.dumps(coco))
    objects = {"format": "dextr-objects", "format_version": 1, "images": [
        {"image": f"images/{stem}.png", "height": 64, "width": 80,
         "objects": [{"label": 1, "source": f"labels/{stem}_mask.png", "points_xy": POINTS_XY}]}
        for stem in ("a", "a_label1")]}
    (tmp_path / "objects.json").write_text(json.dumps(objects))
    (tmp_path / "dextr.toml").write_text("[predict]\nbatch_size = 1\n")
    return tmp_path


def _refused_and_unchanged(args, victim, *needles):
    before = victim.read_bytes()
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), r.exception  # no traceback
    text = " ".join(r.output.split())
    assert "it is an input of this command" in text, r.output
    for n in needles:
        assert n in text, (n, r.output)
    assert victim.read_bytes() == before


def test_predict_coco_never_replaces_the_model_or_a_photo_it_names(files):
    coco = ["predict", "-m", files / "m.pt", "--coco", files / "images" / "in.json", "--force", "--device", "cpu"]
    _refused_and_unchanged([*coco, "--out", files / "m.pt"], files / "m.pt")
    _refused_and_unchanged([*coco, "--out", files / "images" / "a.png"], files / "images" / "a.png")
    _refused_and_unchanged([*coco, "--out", files / "images" / "in.json"], files / "images" / "in.json")


def test_predict_points_file_coco_never_replaces_a_photo_label_or_points_file(files):
    args = ["predict", "-m", files / "m.pt", "--points-file", files / "objects.json", "--format", "coco",
            "--force", "--device", "cpu", "--out"]
    for victim in (files / "images" / "a_label1.png", files / "labels" / "a_mask.png", files / "objects.json",
                   files / "m.pt"):
        _refused_and_unchanged([*args, victim], victim)


def test_outputs_are_compared_by_real_file(files, tmp_path):
    photo = files / "images" / "a.png"
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    hard = tmp_path / "hard.png"
    os.link(photo, hard)
    base = ["predict", photo, "-m", files / "m.pt", "--force"]
    base += [x for xy in POINTS_XY for x in ("-p", f"{xy[0]},{xy[1]}")]
    for out in (link, hard, f"{files}/./images/../images/a.png"):
        _refused_and_unchanged([*base, "--out", out], photo)


def test_predict_never_writes_over_the_config_or_the_model(files, monkeypatch):
    monkeypatch.chdir(files)
    base = ["predict", "images/a.png", "-m", "m.pt", "--force"]
    base += [x for xy in POINTS_XY for x in ("-p", f"{xy[0]},{xy[1]}")]
    _refused_and_unchanged([*base, "--out", "dextr.toml"], files / "dextr.toml")  # the config, found by default
    _refused_and_unchanged([*base, "--out", "./m.pt"], files / "m.pt")
    _refused_and_unchanged([*base, "--out", "x.png", "--overlay", "m.pt"], files / "m.pt")


def test_mask_folder_holding_a_photo_is_refused_before_any_mask_is_written(files):
    # a's first mask would be images/a_label1.png: the other photo of the points file.
    victim = files / "images" / "a_label1.png"
    _refused_and_unchanged(["predict", "-m", files / "m.pt", "--points-file", files / "objects.json",
                            "--out-dir", files / "images", "--force", "--device", "cpu"], victim, "--out-dir")
    assert not (files / "images" / "a_label1_label1.png").exists()  # nothing written


def test_points_from_mask_never_replaces_a_photo_of_its_image_dir(files):
    for victim in (files / "images" / "a.png", files / "dextr.toml"):
        args = ["points-from-mask", files / "labels" / "a_mask.png", "--image-dir", files / "images",
                "--out", victim, "--force"]
        if victim.suffix == ".toml":
            args += ["--config", victim]
        _refused_and_unchanged(args, victim)
    # the photo found beside the labels by default (../images) is an input too
    _refused_and_unchanged(["points-from-mask", files / "labels" / "a_mask.png", "--format", "coco",
                            "--out", files / "images" / "a.png", "--force"], files / "images" / "a.png")


def test_convert_export_and_eval_never_replace_an_input(files):
    hard = files / "hard.pt"
    os.link(files / "m.pt", hard)
    _refused_and_unchanged(["convert", files / "m.pt", hard, "--force"], files / "m.pt")
    model_onnx = files / "m.onnx"
    model_onnx.symlink_to(files / "m.pt")
    _refused_and_unchanged(["export", model_onnx, model_onnx, "--force"], files / "m.pt")
    evaluate = ["eval", "-m", files / "m.pt", "--dataset", "custom_label", "--device", "cpu", "--force",
                "--image-pat", files / "images" / "a.png", "--target-pat", files / "labels" / "a_mask.png"]
    _refused_and_unchanged([*evaluate, "--json", files / "m.pt"], files / "m.pt")
    _refused_and_unchanged([*evaluate, "--csv", files / "dextr.toml", "--config", files / "dextr.toml"],
                           files / "dextr.toml")
