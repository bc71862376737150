"""``dextr points-from-mask``: label images of every bit depth, mask files, options and output."""
from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.formats.objects import read_objects

runner = CliRunner()


def _labels():
    lab = np.zeros((40, 50), np.int64)
    lab[5:15, 4:20] = 1
    lab[20:35, 25:45] = 2
    lab[0:3, 40:50] = 255  # void
    lab[38, 2] = 2  # a stray pixel of object 2
    return lab


def _save_palette(lab, path):
    im = PIL.Image.fromarray(lab.astype(np.uint8), mode="P")
    pal = [0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * (3 * 252) + [255, 255, 255]
    im.putpalette(pal)
    im.save(path)


def _run(*args):
    return runner.invoke(app, ["points-from-mask", *map(str, args)])


def _expected(mask):
    return extreme_points_from_mask(mask)


@pytest.mark.parametrize("depth", ["palette", "L", "I;16", "I"])
def test_label_images_of_every_depth_give_the_extreme_points(tmp_path, depth):
    lab = _labels()
    path = tmp_path / ("x_mask.tif" if depth == "I" else "x_mask.png")  # PNG has no 32-bit mode
    if depth == "palette":
        _save_palette(lab, path)
        objs = {1: lab == 1, 2: lab == 2}
    else:
        big = {"L": 1, "I;16": 1000, "I": 70000}[depth]
        lab2 = np.where((lab == 1) | (lab == 2), lab * big, lab)
        arr = lab2.astype({"L": np.uint8, "I;16": np.uint16, "I": np.int32}[depth])
        PIL.Image.fromarray(arr).save(path)
        assert PIL.Image.open(path).mode == ("L" if depth == "L" else depth)
        objs = {big: lab == 1, 2 * big: lab == 2}
    r = _run(path, "-o", tmp_path / "o.json")
    assert r.exit_code == 0, r.output
    f = read_objects(tmp_path / "o.json")
    assert len(f.images) == 1 and f.images[0].image is None  # no photo beside it
    got = {o.label: o.points for o in f.images[0].objects}
    assert sorted(got) == sorted(objs)  # void 255 and background 0 are no objects
    for v, m in objs.items():
        np.testing.assert_array_equal(got[v], _expected(m))
    assert "no photo found" in r.stderr


def test_largest_component_min_area_and_ignore_index(tmp_path):
    lab = _labels()
    _save_palette(lab, tmp_path / "x.png")
    r = _run(tmp_path / "x.png", "--largest-component", "--ignore-index", "0", "--min-area", "20",
             "-o", tmp_path / "o.json")
    assert r.exit_code == 0, r.output
    objs = {o.label: o for o in read_objects(tmp_path / "o.json").images[0].objects}
    assert sorted(objs) == [1, 2, 255]  # 255 (30 px) is an object once it is not ignored
    main2 = np.zeros_like(lab, bool)
    main2[20:35, 25:45] = True
    np.testing.assert_array_equal(objs[2].points, _expected(main2))  # stray pixel dropped
    assert objs[2].area == main2.sum()


def test_min_area_skips_small_objects(tmp_path):
    _save_palette(_labels(), tmp_path / "x.png")
    r = _run(tmp_path / "x.png", "--min-area", "200", "-o", tmp_path / "o.json")
    assert r.exit_code == 0, r.output
    assert [o.label for o in read_objects(tmp_path / "o.json").images[0].objects] == [2]


def test_jitter_is_seeded(tmp_path):
    _save_palette(_labels(), tmp_path / "x.png")
    outs = []
    for seed, name in ((1, "a"), (1, "b"), (2, "c")):
        r = _run(tmp_path / "x.png", "--jitter", "2", "--seed", seed, "-o", tmp_path / f"{name}.json")
        assert r.exit_code == 0, r.output
        outs.append(np.stack([o.points for o in read_objects(tmp_path / f"{name}.json").images[0].objects]))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])
    exact = np.stack([_expected(_labels() == v) for v in (1, 2)])
    assert 0 < np.abs(outs[0] - exact).max() < 12


def test_mask_files_group_under_their_photo_and_json_goes_to_stdout(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    PIL.Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "images" / "p.jpg")
    lab = _labels()
    for k, v in enumerate((1, 2)):
        PIL.Image.fromarray(((lab == v) * 255).astype(np.uint8)).save(tmp_path / "masks" / f"p_mask{k}.png")
    r = _run(tmp_path / "masks" / "p_mask0.png", tmp_path / "masks" / "p_mask1.png", "--kind", "mask")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["format"] == "dextr-objects" and len(data["images"]) == 1
    img = data["images"][0]
    assert img["image"] == str((tmp_path / "images" / "p.jpg").resolve())
    assert [o["name"] for o in img["objects"]] == ["p_mask0", "p_mask1"]
    exp = _expected(lab == 2)
    assert img["objects"][1]["points_xy"] == [[int(x), int(y)] for y, x in exp]  # stored [x, y]
    assert "2 objects in 1 images" in r.stderr


def test_explicit_image_and_image_dir(tmp_path):
    _save_palette(_labels(), tmp_path / "lab.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    PIL.Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(photos / "lab.png")
    r = _run(tmp_path / "lab.png", "--image-dir", photos, "-o", tmp_path / "out" / "o.json")
    assert r.exit_code == 0, r.output
    raw = json.loads((tmp_path / "out" / "o.json").read_text())
    assert raw["images"][0]["image"] == "../photos/lab.png"  # relative to the JSON file
    assert read_objects(tmp_path / "out" / "o.json").images[0].image == str(tmp_path / "out" / "../photos/lab.png")
    r = _run(tmp_path / "lab.png", "--image", photos / "lab.png", "-o", tmp_path / "o2.json")
    assert r.exit_code == 0, r.output
    r = _run(tmp_path / "lab.png", tmp_path / "lab.png", "--image", photos / "lab.png")
    assert r.exit_code == 2 and "--image" in r.stderr


def test_user_errors(tmp_path):
    PIL.Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "rgb.png")
    r = _run(tmp_path / "rgb.png")
    assert r.exit_code == 1 and "--kind mask" in r.stderr and "Traceback" not in r.output
    (tmp_path / "junk.png").write_bytes(b"nope")
    r = _run(tmp_path / "junk.png")
    assert r.exit_code == 1 and "cannot read" in r.stderr
    r = _run(tmp_path / "missing.png")
    assert r.exit_code == 2
    r = _run(tmp_path / "rgb.png", "--kind", "polygon")
    assert r.exit_code == 2 and "--kind" in r.stderr


def test_then_predict_from_the_points_file(tmp_path, tiny_model):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    _save_palette(_labels(), tmp_path / "labels" / "a_mask.png")
    assert _run(tmp_path / "labels" / "a_mask.png", "-o", tmp_path / "o.json").exit_code == 0
    tiny_model.save(tmp_path / "m.pt")
    r = runner.invoke(app, ["predict", "-m", str(tmp_path / "m.pt"), "--points-file", str(tmp_path / "o.json"),
                            "--out-dir", str(tmp_path / "masks"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["a_label1.png", "a_label2.png"]
    assert PIL.Image.open(tmp_path / "masks" / "a_label1.png").size == (50, 40)


def test_real_pennfudan_points_lie_on_the_extreme_pixels(tmp_path, shared_data):
    label_path = shared_data / "pennfudan" / "labels" / "FudanPed00001_mask.png"
    r = _run(label_path, "-o", tmp_path / "o.json")
    assert r.exit_code == 0, r.output
    f = read_objects(tmp_path / "o.json")
    assert f.images[0].image.endswith("FudanPed00001.png")
    assert PIL.Image.open(f.images[0].image).size == (f.images[0].width, f.images[0].height)
    lab = np.asarray(PIL.Image.open(label_path))
    assert sorted(o.label for o in f.images[0].objects) == sorted(set(np.unique(lab)) - {0})
    for o in f.images[0].objects:
        ys, xs = np.nonzero(lab == o.label)
        (ly, lx), (ry, rx), (ty, tx), (by, bx) = o.points.astype(int)
        assert all(lab[y, x] == o.label for y, x in o.points.astype(int))
        assert (lx, rx, ty, by) == (xs.min(), xs.max(), ys.min(), ys.max())


def test_binary_mask_read_as_labels_warns_with_the_fix(tmp_path):
    PIL.Image.fromarray(((_labels() == 1) * 255).astype(np.uint8)).save(tmp_path / "m.png")
    r = _run(tmp_path / "m.png")
    assert r.exit_code == 0
    assert "kind 'mask'" in r.stderr and "no objects found" in r.stderr
    assert json.loads(r.stdout)["images"][0]["objects"] == []


def test_the_table_says_when_it_shows_only_the_first_objects(tmp_path):
    lab = np.zeros((40, 120), np.uint8)
    for k in range(60):  # 60 objects of 2x2 pixels
        y, x = divmod(k, 20)
        lab[2 + 10 * y:4 + 10 * y, 2 + 6 * x:4 + 6 * x] = k + 1
    PIL.Image.fromarray(lab).save(tmp_path / "x_mask.png")
    r = _run(tmp_path / "x_mask.png", "-o", tmp_path / "o.json")
    assert r.exit_code == 0, r.output
    assert "the first 50 of 60 objects" in r.stdout and "10 more objects not shown" in r.stdout
    assert len(read_objects(tmp_path / "o.json").images[0].objects) == 60
    lab[lab > 5] = 0
    PIL.Image.fromarray(lab).save(tmp_path / "y_mask.png")
    r = _run(tmp_path / "y_mask.png", "-o", tmp_path / "p.json")
    assert r.exit_code == 0 and "not shown" not in r.stdout and "first" not in r.stdout
