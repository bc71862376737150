"""COCO files through the CLI: points-from-mask/predict write them, eval reads them, and the
numbers match the mask-file route."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.core.images import read_image
from dextr_lib.formats import coco
from dextr_lib.formats.objects import read_objects

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
runner = CliRunner()
H, W = 60, 72


@pytest.fixture
def mask_stack(tmp_path):
    """Two photos with one mask file per object (an ellipse with a hole, a two-part object,
    rectangles); masks of a photo overlap."""
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    yy, xx = np.mgrid[:H, :W]
    ring = (((yy - 30) / 20.0) ** 2 + ((xx - 30) / 25.0) ** 2 <= 1) & ~((yy - 30) ** 2 + (xx - 30) ** 2 <= 16)
    two = np.zeros((H, W), bool)
    two[5:15, 50:70] = True
    two[40:55, 55:68] = True
    rect = np.zeros((H, W), bool)
    rect[20:45, 20:50] = True
    masks = {"p0": [ring, two], "p1": [rect, ring & (xx > 20)]}
    for stem, objs in masks.items():
        img = rng.integers(0, 80, size=(H, W, 3), dtype=np.uint8)
        for k, m in enumerate(objs):
            img[m] = [200, 180 - 60 * k, 40 + 90 * k]
            PIL.Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "masks" / f"{stem}_mask{k}.png")
        PIL.Image.fromarray(img).save(tmp_path / "images" / f"{stem}.png")
    return tmp_path, masks


def _ok(args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _eval_json(args, out: Path) -> dict:
    _ok(["eval", *args, "--json", out, "--batch-size", "1"])
    return json.loads(out.read_text())


def _same_summary(a: dict, b: dict) -> None:
    for key in ("objects", "images", "skipped"):
        assert a["summary"][key] == b["summary"][key]
    for key in ("mean_iou", "median_iou", "per_image_mean_iou", "above_0.85", "mean_boundary_f"):
        assert a["summary"][key] == pytest.approx(b["summary"][key], abs=1e-9), key
    for name in a["baselines"]:
        assert a["baselines"][name]["mean_iou"] == pytest.approx(b["baselines"][name]["mean_iou"], abs=1e-12)


def test_points_from_mask_coco_round_trips_and_evaluates_like_the_masks(mask_stack, model_file, tmp_path):
    root, masks = mask_stack
    out = tmp_path / "out" / "instances.json"
    _ok(["points-from-mask", *sorted((root / "masks").glob("*.png")), "--kind", "mask",
         "--image-dir", root / "images", "--format", "coco", "--category", "thing", "-o", out])
    api = COCO(str(out))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == ["thing"]
    by_name = {Path(i["file_name"]).stem: i for i in api.loadImgs(api.getImgIds())}
    assert by_name["p0"]["file_name"] == "p0.png"  # relative to the images root: the photos' folder
    for stem, objs in masks.items():
        anns = api.loadAnns(api.getAnnIds(imgIds=[by_name[stem]["id"]]))
        assert len(anns) == len(objs)
        for ann, m in zip(anns, objs):
            np.testing.assert_array_equal(api.annToMask(ann).astype(bool), m)  # exact
            assert ann["iscrowd"] == 0 and ann["area"] == int(m.sum()) and len(ann["extreme_points"]) == 4
    # the same objects, read from the mask files and from the COCO file, give the same numbers
    a = _eval_json(["-m", model_file, "--dataset", "custom_mask", "--whole-labels",
                    "--image-pat", root / "images" / "*.png", "--target-pat", root / "masks" / "*.png"],
                   tmp_path / "a.json")
    b = _eval_json(["-m", model_file, "--dataset", "coco", "--annotations", out, "--images", root / "images"],
                   tmp_path / "b.json")
    _same_summary(a, b)
    assert b["dataset"]["kind"] == "coco" and set(b["per_class"]) == {"thing"}


def test_predict_points_file_coco_equals_png_masks(mask_stack, model_file, tiny_model, tmp_path):
    root, _ = mask_stack
    objects = tmp_path / "objects.json"
    _ok(["points-from-mask", *sorted((root / "masks").glob("*.png")), "--kind", "mask",
         "--image-dir", root / "images", "-o", objects])
    _ok(["predict", "-m", model_file, "--points-file", objects, "--out-dir", tmp_path / "png"])
    result = tmp_path / "result.json"
    _ok(["predict", "-m", model_file, "--points-file", objects, "--format", "coco", "--out", result])
    api = COCO(str(result))
    parsed = read_objects(objects)
    anns = api.loadAnns(api.getAnnIds())
    assert len(anns) == parsed.n_objects == 4
    k = 0
    for entry in parsed.images:
        rgb = read_image(entry.image, exif_transpose=False)
        expect = tiny_model.predict_image(rgb, [o.points for o in entry.objects], threshold=0.5)
        for o, m in zip(entry.objects, expect):
            ann = anns[k]
            k += 1
            np.testing.assert_array_equal(api.annToMask(ann).astype(bool), m)
            png = np.array(PIL.Image.open(tmp_path / "png" / f"{Path(entry.image).stem}_{o.name}.png")) > 0
            np.testing.assert_array_equal(png, m)
            np.testing.assert_array_equal(coco.extreme_points_from_coco(ann["extreme_points"]), o.points)
            assert 0.5 <= ann["score"] <= 1.0 or not m.any()
    # eval on the predictions: the PNG masks and the COCO file give the same numbers
    a = _eval_json(["-m", model_file, "--dataset", "custom_mask", "--whole-labels",
                    "--image-pat", root / "images" / "*.png", "--target-pat", tmp_path / "png" / "*.png"],
                   tmp_path / "a.json")
    b = _eval_json(["-m", model_file, "--dataset", "coco", "--annotations", result, "--points-from", "masks",
                    "--images", root / "images"], tmp_path / "b.json")
    _same_summary(a, b)
    # with the stored clicks the model meets its own predictions again
    c = _eval_json(["-m", model_file, "--dataset", "coco", "--annotations", result, "--images", root / "images"],
                   tmp_path / "c.json")
    assert c["summary"]["mean_iou"] == 1.0 and c["settings"]["annotated_points"] == 4


def test_predict_coco_input_to_new_file(mask_stack, model_file, tmp_path):
    root, _ = mask_stack
    inst = tmp_path / "inst.json"
    _ok(["points-from-mask", *sorted((root / "masks").glob("*.png")), "--kind", "mask",
         "--image-dir", root / "images", "--format", "coco", "-o", inst])
    data = json.loads(inst.read_text())
    del data["annotations"][0]["extreme_points"]  # this one is derived from its mask
    data["annotations"][1]["extreme_points"] = [[60, 6], [51, 10], [57, 52], [66, 45]]
    (tmp_path / "in.json").write_text(json.dumps(data))
    out = tmp_path / "pred.json"
    res = _ok(["predict", "-m", model_file, "--coco", tmp_path / "in.json", "--images", root / "images",
               "--out", out, "--polygons"])
    assert "Wrote 4 annotations of 2 images" in res.output
    pred = json.loads(out.read_text())
    assert [a["id"] for a in pred["annotations"]] == [a["id"] for a in data["annotations"]]
    assert all(isinstance(a["segmentation"], list) and "score" in a for a in pred["annotations"])
    assert pred["annotations"][1]["extreme_points"] == [[60, 6], [51, 10], [57, 52], [66, 45]]
    ann0 = json.loads(inst.read_text())["annotations"][0]
    assert pred["annotations"][0]["extreme_points"] == ann0["extreme_points"]  # the mask's, by the paper's rule
    COCO(str(out))
    # no silent overwrite
    again = runner.invoke(app, ["predict", "-m", str(model_file), "--coco", str(tmp_path / "in.json"),
                                "--images", str(root / "images"), "--out", str(out)])
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    _ok(["predict", "-m", model_file, "--coco", tmp_path / "in.json", "--images", root / "images", "--out", out,
         "--force"])


@pytest.mark.parametrize("args, needle", [
    (["points-from-mask", "{mask}", "--kind", "mask", "--format", "coco"], "--format coco writes a file"),
    (["points-from-mask", "{mask}", "--kind", "mask", "--polygons", "-o", "x.json"], "--polygons and --images are for --format coco"),
    (["predict", "-m", "{model}", "--points-file", "{objects}", "--format", "coco", "--out-dir", "d"],
     "give --out result.json"),
    (["predict", "-m", "{model}", "--format", "coco", "--out", "r.json"], "--format coco goes with --points-file"),
    (["predict", "-m", "{model}", "--points-file", "{objects}", "--out-dir", "d", "--polygons"],
     "are for COCO output"),
    (["eval", "-m", "{model}", "--dataset", "coco", "--annotations", "{objects}", "--points-from", "clicks"],
     "expected one of annotations, masks"),
])
def test_usage_errors_exit_2(mask_stack, model_file, tmp_path, args, needle):
    root, _ = mask_stack
    objects = tmp_path / "objects.json"
    _ok(["points-from-mask", root / "masks" / "p0_mask0.png", "--kind", "mask", "--image-dir", root / "images",
         "-o", objects])
    subs = {"{mask}": str(root / "masks" / "p0_mask0.png"), "{model}": str(model_file), "{objects}": str(objects)}
    result = runner.invoke(app, [subs.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split()).replace("│", "").replace("  ", " ") or needle in result.output


@pytest.mark.parametrize("args, needle", [
    (["eval", "-m", "{model}", "--dataset", "coco"], "[eval] annotations: dataset coco needs its instances file"),
    (["eval", "-m", "{model}", "--dataset", "custom_mask", "--annotations", "{objects}",
      "--image-pat", "a", "--target-pat", "b"], "[eval] annotations: annotations, images and categories "
     "(--annotations, --images, --categories; [train]: also val_annotations, val_images) are for dataset coco"),
])
def test_dataset_setting_errors_are_one_line(model_file, tmp_path, args, needle):
    subs = {"{model}": str(model_file), "{objects}": str(tmp_path / "objects.json")}
    result = runner.invoke(app, [subs.get(a, a) for a in args])
    assert result.exit_code == 1, result.output
    assert needle in " ".join(result.output.split())


def test_eval_user_errors_name_the_problem(mask_stack, model_file, tmp_path):
    root, _ = mask_stack
    inst = tmp_path / "inst.json"
    _ok(["points-from-mask", *sorted((root / "masks").glob("*.png")), "--kind", "mask",
         "--image-dir", root / "images", "--format", "coco", "-o", inst])
    res = runner.invoke(app, ["eval", "-m", str(model_file), "--dataset", "coco", "--annotations", str(inst),
                              "--categories", "person,dog"])
    assert res.exit_code == 1 and "unknown COCO categories 'person', 'dog'" in res.output
    assert "Traceback" not in res.output
    (root / "images" / "p1.png").unlink()
    res = runner.invoke(app, ["eval", "-m", str(model_file), "--dataset", "coco", "--annotations", str(inst),
                              "--images", str(root / "images")])
    assert res.exit_code == 1 and "image file not found" in res.output and "p1.png" in res.output


def _coco128_instances(data: Path, out: Path, n_images: int) -> Path:
    """COCO128-seg's mask stacks (first n images) as a COCO file with the class names of objects.csv."""
    rows = list(csv.DictReader((data / "objects.csv").open()))
    stems = sorted({r["image_stem"] for r in rows})[:n_images]
    cf = coco.CocoFile()
    for stem in stems:
        photo = data / "images" / f"{stem}.jpg"
        with PIL.Image.open(photo) as im:
            w, h = im.size
        iid = cf.add_image(f"{stem}.jpg", h, w)
        for r in sorted((r for r in rows if r["image_stem"] == stem), key=lambda r: int(r["k"])):
            m = np.array(PIL.Image.open(data / "masks" / f"{stem}_mask{r['k']}.png")) > 0
            cf.add_annotation(coco.annotation_from_mask(
                m, ann_id=None, image_id=iid, category_id=cf.category_id(r["class_name"])))
    cf.save(out)
    return out


@pytest.mark.parametrize("n", [3, pytest.param(100, marks=pytest.mark.slow)])
def test_coco128_eval_via_coco_equals_mask_stack(shared_data, model_file, tmp_path, n):
    data = shared_data / "coco128seg"
    inst = _coco128_instances(data, tmp_path / "coco128.json", n)
    stems = [json.loads(inst.read_text())["images"][i]["file_name"][:-4] for i in range(n)]
    (tmp_path / "imgs.txt").write_text("\n".join(str(data / "images" / f"{s}.jpg") for s in stems))
    common = ["-m", model_file, "--min-object-area", "400"]
    a = _eval_json([*common, "--dataset", "custom_mask", "--whole-labels", "--image-pat", f"@{tmp_path / 'imgs.txt'}",
                    "--target-pat", data / "masks" / "*.png"], tmp_path / "a.json")
    b = _eval_json([*common, "--dataset", "coco", "--annotations", inst, "--images", data / "images"],
                   tmp_path / "b.json")
    _same_summary(a, b)
    assert a["summary"]["objects"] >= 5
    assert "bowl" in b["per_class"]  # COCO category names (000000000009 has bowls)
    print(f"coco128 first {n} images: mask stack mIoU {a['summary']['mean_iou']:.6f}, "
          f"coco {b['summary']['mean_iou']:.6f} on {b['summary']['objects']} objects")


TINY_TRAIN = ["--arch", "resunet18", "--target-size", "64", "--padding", "4", "--blob-sigma", "4",
              "--no-pretrained", "--batch-size", "2", "--iters-per-epoch", "1", "--opt-type", "adam",
              "--learning-rate", "1e-3", "--seed", "1", "--num-epochs", "1"]


def test_train_and_finetune_on_coco_files(mask_stack, model_file, tmp_path):
    root, _ = mask_stack
    inst = tmp_path / "data" / "instances.json"
    _ok(["points-from-mask", *sorted((root / "masks").glob("*.png")), "--kind", "mask",
         "--image-dir", root / "images", "--format", "coco", "--category", "thing", "-o", inst])
    jobs = tmp_path / "jobs"
    res = _ok(["train", "c", "--jobs-dir", jobs, "--dataset", "coco", "--annotations", inst, "--images", root / "images",
               "--val-annotations", inst, "--val-images", root / "images", "--categories", "thing", *TINY_TRAIN])
    assert "best val mIoU" in res.output
    from dextr_lib.config import load_config

    cfg = load_config(jobs / "c" / "config.toml").train
    assert (cfg.dataset, cfg.annotations, cfg.categories) == ("coco", str(inst), ["thing"])
    _ok(["finetune", "f", "--from", model_file, "--jobs-dir", jobs, "--dataset", "coco", "--annotations", inst,
         "--images", root / "images", "--num-epochs", "1", "--iters-per-epoch", "1", "--batch-size", "2", "--seed", "2"])
    bad = runner.invoke(app, ["train", "x", "--jobs-dir", str(jobs), "--dataset", "coco", *TINY_TRAIN])
    assert bad.exit_code == 1 and "needs its instances file" in bad.output
    bad = runner.invoke(app, ["train", "y", "--jobs-dir", str(jobs), "--dataset", "custom_mask",
                              "--image-pat", "a", "--target-pat", "b", "--annotations", str(inst), *TINY_TRAIN])
    assert bad.exit_code == 1 and "are for dataset coco" in bad.output
