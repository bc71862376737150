"""Hostile COCO files through the commands that read them: one line and exit code 1 (real
processes: pycocotools used to segfault, exit 139), the objects-per-image limit of
``predict --coco``, and COCO files whose ``file_name`` other tools join with an images root."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from dextr_cli.app import app

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
runner = CliRunner()
HUGE = [[0, 0, 1e12, 0, 1e12, 1e12, 0, 1e12]]
HUGE_LINE = "annotation 1: 'segmentation': polygon 0 has the point (1e+12, 0), far outside its 10x10 image"


def _coco_file(tmp_path: Path, **ann) -> Path:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    PIL.Image.new("RGB", (10, 10)).save(tmp_path / "imgs" / "a.png")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4,
                         "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]], **ann}]}))
    return path


def _one_line_exit_1(args, cwd, *needles):
    r = subprocess.run([sys.executable, "-m", "dextr_cli", *map(str, args)], capture_output=True, text=True,
                       timeout=300, cwd=cwd)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in " ".join(r.stderr.split()), (needle, r.stderr)


# A real process each (~10 s of imports): predict in the default run, the other readers in the slow one.
@pytest.mark.parametrize("command", ["predict", *(pytest.param(c, marks=pytest.mark.slow)
                                                  for c in ("eval", "train", "serve"))])
def test_a_polygon_of_huge_coordinates_is_one_line_in_every_reader(command, tmp_path, model_file):
    bad = _coco_file(tmp_path, segmentation=HUGE)
    args = {
        "eval": ["eval", "-m", model_file, "--dataset", "coco", "--annotations", bad, "--images", tmp_path / "imgs"],
        "train": ["train", "t", "--jobs-dir", tmp_path / "jobs", "--dataset", "coco", "--annotations", bad,
                  "--images", tmp_path / "imgs", "--arch", "resunet18", "--no-pretrained", "--num-epochs", "1"],
        "predict": ["predict", "-m", model_file, "--coco", bad, "--images", tmp_path / "imgs",
                    "--out", tmp_path / "out.json"],
        "serve": ["serve", "-m", model_file, "--images", tmp_path / "imgs", "--annotations", bad, "--port", "8765"],
    }[command]
    _one_line_exit_1(args, tmp_path, HUGE_LINE)


def test_serve_refuses_a_file_whose_annotation_has_a_string_bbox(tmp_path, tiny_model):
    """Such a file used to load and answer 500 on GET /api/images/{id}."""
    pytest.importorskip("fastapi")
    from dextr_lib.errors import DatasetError
    from dextr_lib.serving import create_app

    bad = _coco_file(tmp_path, bbox="abc")
    with pytest.raises(DatasetError, match=r"bad.json: annotation 1: 'bbox' must be \[x, y, width, height\] "
                                           r"\(four numbers\), got 'abc'"):
        create_app(tiny_model, tmp_path / "imgs", bad)
    with pytest.raises(DatasetError, match=HUGE_LINE.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        create_app(tiny_model, tmp_path / "imgs", _coco_file(tmp_path, segmentation=HUGE))


@pytest.mark.parametrize("field, value, line", [
    ("id", "1", "bad.json: annotations[0]: 'id' must be an integer, got '1'"),
    ("category_id", None, "bad.json: annotation 1: 'category_id' must be an integer, got None"),
    ("segmentation", {"size": ["a", "b"], "counts": "00"},
     "annotation 1: 'segmentation': RLE 'size' must be [height, width] (two integers), got ['a', 'b']"),
    ("segmentation", {"size": [10, 10], "counts": "\u00e9t\u00e9"},
     "annotation 1: 'segmentation': compressed RLE counts must be ASCII text"),
])
def test_wrong_types_are_one_line(field, value, line, tmp_path, model_file):
    bad = _coco_file(tmp_path, **{field: value})
    r = runner.invoke(app, ["eval", "-m", str(model_file), "--dataset", "coco", "--annotations", str(bad)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert line in " ".join(r.output.split()), r.output


def test_predict_coco_honours_max_objects(tmp_path, model_file):
    path = _coco_file(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"] = [{**data["annotations"][0], "id": k} for k in (1, 2, 3)]
    path.write_text(json.dumps(data))
    r = runner.invoke(app, ["--max-objects", "2", "predict", "-m", str(model_file), "--coco", str(path),
                            "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "out.json")])
    assert r.exit_code == 1 and not (tmp_path / "out.json").exists()
    assert "bad.json: image 1 has 3 objects on one image, over the limit max_objects=2" in " ".join(r.output.split())


# -- file names relative to an images root -----------------------------------------------------
@pytest.fixture
def photos_and_masks(tmp_path):
    """data/images/{p0.png, sub/p1.png} and one mask each in data/masks (the JSON goes elsewhere)."""
    images, masks = tmp_path / "data" / "images", tmp_path / "data" / "masks"
    (images / "sub").mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 12:40] = 255
    for rel in ("p0.png", "sub/p1.png"):
        PIL.Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / rel)
        PIL.Image.fromarray(mask).save(masks / f"{Path(rel).stem}_mask.png")
    return images, masks


def _found_like_detectron2(coco_path: Path, image_root: Path) -> list:
    """``os.path.join(image_root, file_name)`` for every image, as detectron2's load_coco_json does."""
    return [os.path.join(image_root, img["file_name"]) for img in json.loads(coco_path.read_text())["images"]]


def test_points_from_mask_writes_names_relative_to_the_images_root(photos_and_masks, tmp_path, model_file):
    images, masks = photos_and_masks
    out = tmp_path / "elsewhere" / "deep" / "instances.json"
    r = runner.invoke(app, ["points-from-mask", str(masks / "p0_mask.png"), "--image", str(images / "p0.png"),
                            "--kind", "mask", "--format", "coco", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert [img["file_name"] for img in json.loads(out.read_text())["images"]] == ["p0.png"]  # never ../../..
    assert all(os.path.isfile(p) for p in _found_like_detectron2(out, images))
    # dextr reads it back with the same images root
    res = tmp_path / "pred.json"
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--coco", str(out), "--images", str(images),
                            "--out", str(res)])
    assert r.exit_code == 0, r.output
    assert _found_like_detectron2(res, images) == _found_like_detectron2(out, images)


def test_predict_points_file_coco_names_photos_under_images(photos_and_masks, tmp_path, model_file):
    images, masks = photos_and_masks
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps({"format": "dextr-objects", "format_version": 1, "images": [
        {"image": str(images / rel), "objects": [{"points_xy": [[12, 20], [39, 20], [25, 10], [25, 29]]}]}
        for rel in ("p0.png", "sub/p1.png")]}))
    out = tmp_path / "out" / "result.json"
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--points-file", str(objects), "--format", "coco",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert [i["file_name"] for i in json.loads(out.read_text())["images"]] == ["p0.png", "sub/p1.png"]
    assert f"file names relative to {images}" in " ".join(r.output.split())
    # a chosen root: names relative to it, the same photos found
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--points-file", str(objects), "--format", "coco",
                            "--images", str(images.parent), "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert [i["file_name"] for i in json.loads(out.read_text())["images"]] == ["images/p0.png", "images/sub/p1.png"]
    assert all(os.path.isfile(p) for p in _found_like_detectron2(out, images.parent))
    r = runner.invoke(app, ["eval", "-m", str(model_file), "--dataset", "coco", "--annotations", str(out),
                            "--images", str(images.parent)])
    assert r.exit_code == 0, r.output
    # a photo outside the root is refused, not written as ../..
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--points-file", str(objects), "--format", "coco",
                            "--images", str(images / "sub"), "--out", str(out), "--force"])
    assert r.exit_code == 1 and "is not inside the images folder" in " ".join(r.output.split())
