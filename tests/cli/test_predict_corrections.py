"""``dextr predict`` with correction clicks after the four extreme points: ``--positive`` /
``--negative`` on the command line, ``positive_xy`` / ``negative_xy`` of objects.json, and
``positive_points`` / ``negative_points`` of COCO files (written beside ``extreme_points``, read
back by ``--coco``). Every mask is compared with the library's for the same clicks."""
from __future__ import annotations

import copy
import json

import numpy as np
import PIL.Image
import pytest
import torch
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.formats.coco import CocoFile
from dextr_lib.formats.objects import ImageEntry, ObjectEntry, write_objects
from dextr_lib.weights.surgery import input_conv

runner = CliRunner()
CLI_POINTS = ["27,30", "57,30", "42,15", "42,45"]  # the synthetic disk's left, right, top, bottom as X,Y
POSITIVE_YX = np.array([[22.0, 33.0]])  # inside the disk's crop; on the command line X,Y = 33,22
NEGATIVE_YX = np.array([[40.0, 50.0], [20.0, 30.0]])


def _points_args():
    return [a for p in CLI_POINTS for a in ("--points", p)]


def _xy(clicks_yx):
    return [f"{x:g},{y:g}" for y, x in clicks_yx]


@pytest.fixture(scope="module")
def negative_model(tmp_path_factory, tiny_model):
    """``tiny_model`` with a negative-click channel whose weights are random (not the zeros of a
    fresh channel), so a negative click changes the output; and its checkpoint file."""
    model = copy.deepcopy(tiny_model).add_negative_channel()
    conv = input_conv(model.net)[1]
    with torch.no_grad():
        conv.weight[:, -1].copy_(torch.randn(conv.weight[:, -1].shape, generator=torch.Generator().manual_seed(0)))
    path = tmp_path_factory.mktemp("negmodel") / "neg.pt"
    model.save(path)
    return model, path


def _run(*args):
    return runner.invoke(app, ["predict", *map(str, args), "--device", "cpu"])


def _mask(path):
    return np.asarray(PIL.Image.open(path))


def test_a_positive_click_reaches_the_network_as_the_library_takes_it(tmp_path, photo, model_file, tiny_model,
                                                                     synthetic_sample):
    image, _, pts = synthetic_sample
    base = [photo, "-m", model_file, *_points_args(), "--prob"]
    r = _run(*base, "--positive", _xy(POSITIVE_YX)[0], "-o", tmp_path / "with.png")
    assert r.exit_code == 0, r.output
    r = _run(*base, "-o", tmp_path / "without.png")
    assert r.exit_code == 0, r.output
    expected = tiny_model.predict([image], [pts], positive=[POSITIVE_YX])[0]
    with_click = _mask(tmp_path / "with.png").astype(float)
    assert np.abs(with_click - expected * 255).max() <= 0.5 + 1e-6
    assert not np.array_equal(with_click, _mask(tmp_path / "without.png"))  # the click changed the input


def test_negative_clicks_on_a_model_with_the_channel(tmp_path, photo, negative_model, synthetic_sample):
    model, path = negative_model
    image, _, pts = synthetic_sample
    clicks = [a for xy in _xy(NEGATIVE_YX) for a in ("--negative", xy)]
    r = _run(photo, "-m", path, *_points_args(), *clicks, "--positive", _xy(POSITIVE_YX)[0],
             "-o", tmp_path / "m.png")
    assert r.exit_code == 0, r.output
    expected = model.predict([image], [pts], positive=[POSITIVE_YX], negative=[NEGATIVE_YX], threshold=0.5)[0]
    np.testing.assert_array_equal(_mask(tmp_path / "m.png") == 255, expected)
    without = model.predict([image], [pts], positive=[POSITIVE_YX])[0]
    assert not np.array_equal(model.predict([image], [pts], positive=[POSITIVE_YX], negative=[NEGATIVE_YX])[0],
                              without)


@pytest.mark.parametrize("args, needle", [
    (["--negative", "50,40"], "takes no negative clicks"),
    (["--positive", "2,2"], "outside the object's crop"),
])
def test_refused_corrections_are_one_line_exit_1(tmp_path, photo, model_file, args, needle):
    r = _run(photo, "-m", model_file, *_points_args(), *args, "-o", tmp_path / "m.png")
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], r.stderr
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("args, needle", [
    (["--positive", "a,b"], "expected X,Y"),
    (["--points-file", "{objects}", "--out-dir", "masks", "--positive", "1,2"], "go with IMAGE and --points"),
])
def test_usage_errors_exit_2(tmp_path, photo, model_file, args, needle):
    objects = tmp_path / "o.json"
    objects.write_text("{}")
    args = [a.replace("{objects}", str(objects)) for a in args]
    image = [] if "--points-file" in args else [photo, *_points_args()]
    r = _run(*image, "-m", model_file, *args)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and "Traceback" not in r.output


def _objects_file(tmp_path, photo, pts, *, negative=None):
    """objects.json (version 2): the disk with a positive correction, and a shifted copy without."""
    entries = [ImageEntry(str(photo), [ObjectEntry(pts, label=1, positive=POSITIVE_YX, negative=negative),
                                       ObjectEntry(pts + 2, label=2)], 64, 80)]
    path = tmp_path / "objects.json"
    write_objects(entries, path)
    assert "positive_xy" in path.read_text()
    return path


def test_objects_json_corrections_reach_the_masks(tmp_path, photo, model_file, tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    objects = _objects_file(tmp_path, photo, pts)
    r = _run("-m", model_file, "--points-file", objects, "--out-dir", tmp_path / "masks", "--prob")
    assert r.exit_code == 0, r.output
    expected = tiny_model.predict_image(image, [pts, pts + 2], positive=[POSITIVE_YX, []])
    for label, prob in zip((1, 2), expected):
        got = _mask(tmp_path / "masks" / f"photo_label{label}.png").astype(float)
        assert np.abs(got - prob * 255).max() <= 0.5 + 1e-6, label


def test_objects_json_negatives_on_a_model_without_the_channel_fail_before_any_mask(tmp_path, photo, model_file,
                                                                                    synthetic_sample):
    objects = _objects_file(tmp_path, photo, synthetic_sample[2], negative=NEGATIVE_YX)
    r = _run("-m", model_file, "--points-file", objects, "--out-dir", tmp_path / "masks")
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "takes no negative clicks" in lines[0], r.stderr
    assert not list(tmp_path.glob("masks/*.png"))


def test_coco_output_keeps_the_clicks_and_a_coco_round_trip_predicts_with_them(
        tmp_path, photo, negative_model, synthetic_sample):
    model, path = negative_model
    image, _, pts = synthetic_sample
    objects = _objects_file(tmp_path, photo, pts, negative=NEGATIVE_YX)
    first, second = tmp_path / "result.json", tmp_path / "again.json"
    r = _run("-m", path, "--points-file", objects, "--format", "coco", "--out", first)
    assert r.exit_code == 0, r.output
    anns = json.loads(first.read_text())["annotations"]
    assert anns[0]["positive_points"] == [[33, 22]]  # [x, y], like extreme_points
    assert anns[0]["negative_points"] == [[50, 40], [30, 20]]
    assert "positive_points" not in anns[1] and "negative_points" not in anns[1]
    expected = model.predict_image(image, [pts, pts + 2], positive=[POSITIVE_YX, []],
                                   negative=[NEGATIVE_YX, []], threshold=0.5)
    coco = CocoFile.load(first)
    for ann, mask in zip(coco.annotations, expected):
        np.testing.assert_array_equal(coco.annotation_mask(ann), mask)

    r = _run("-m", path, "--coco", first, "--images", tmp_path, "--out", second)
    assert r.exit_code == 0, r.output
    again = CocoFile.load(second)
    assert [(a["positive_points"], a["negative_points"]) for a in again.annotations[:1]] == \
        [(anns[0]["positive_points"], anns[0]["negative_points"])]
    for ann, mask in zip(again.annotations, expected):  # the clicks were used, not only copied
        np.testing.assert_array_equal(again.annotation_mask(ann), mask)


def test_coco_points_from_masks_drops_the_clicks_it_did_not_use(tmp_path, photo, model_file, synthetic_sample):
    objects = _objects_file(tmp_path, photo, synthetic_sample[2])
    first, second = tmp_path / "result.json", tmp_path / "again.json"
    assert _run("-m", model_file, "--points-file", objects, "--format", "coco", "--out", first).exit_code == 0
    r = _run("-m", model_file, "--coco", first, "--images", tmp_path, "--points-from", "masks", "--out", second)
    assert r.exit_code == 0, r.output
    assert not any("positive_points" in a for a in json.loads(second.read_text())["annotations"])


def test_malformed_coco_clicks_are_one_line(tmp_path, photo, model_file, synthetic_sample):
    objects = _objects_file(tmp_path, photo, synthetic_sample[2])
    first = tmp_path / "result.json"
    assert _run("-m", model_file, "--points-file", objects, "--format", "coco", "--out", first).exit_code == 0
    data = json.loads(first.read_text())
    data["annotations"][0]["positive_points"] = [[1, 2, 3]]
    first.write_text(json.dumps(data))
    r = _run("-m", model_file, "--coco", first, "--images", tmp_path, "--out", tmp_path / "again.json")
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'positive_points'" in lines[0] and "[x, y]" in lines[0], r.stderr
