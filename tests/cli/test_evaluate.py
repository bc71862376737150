"""``dextr eval`` end to end on a tiny synthetic label dataset, plus its usage errors."""
import csv
import json

import numpy as np
import PIL.Image
import pytest
import torch
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app
from dextr_cli.commands.evaluate import GT_COLOR, PRED_COLOR

H, W = 64, 80
runner = CliRunner()


def _disk(cy, cx, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


@pytest.fixture
def label_data(tmp_path):
    """Two images with label PNGs: a rectangle and a disk (img0), a rectangle (img1)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    lab0 = np.zeros((H, W), np.uint8)
    lab0[10:30, 10:40] = 1
    lab0[_disk(44, 60, 11)] = 2
    lab1 = np.zeros((H, W), np.uint8)
    lab1[20:50, 30:60] = 1
    for name, lab in (("img0", lab0), ("img1", lab1)):
        img = rng.integers(0, 60, size=(H, W, 3), dtype=np.uint8)
        img[lab > 0] = [220, 200, 40]
        PIL.Image.fromarray(img).save(tmp_path / "images" / f"{name}.png")
        PIL.Image.fromarray(lab).save(tmp_path / "labels" / f"{name}_mask.png")
    return tmp_path


@pytest.fixture
def crop_model_file(tmp_path):
    """A resunet18 (target 64) whose output is 'object' everywhere in its crop: a prediction
    that differs from every ground truth, so both overlay outlines show."""
    torch.manual_seed(0)
    model = dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)
    with torch.no_grad():
        model.net.final_clf.weight.zero_()
        model.net.final_clf.bias.fill_(5.0)
    path = tmp_path / "crop_model.pt"
    model.save(path)
    return path


def _dataset_args(root):
    return ["--dataset", "custom_label", "--image-pat", str(root / "images" / "*.png"),
            "--target-pat", str(root / "labels" / "*_mask.png")]


def test_eval_table_json_csv_and_overlays(label_data, crop_model_file, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "eval", "-m", str(crop_model_file), *_dataset_args(label_data), "--device", "cpu",
        "--thresholds", "0.3,0.5", "--json", str(out / "report.json"), "--csv", str(out / "objects.csv"),
        "--overlays", str(out / "worst"), "--worst", "2",
    ])
    assert result.exit_code == 0, result.output
    for text in ("box baseline", "quadrilateral baseline", "mean IoU", "boundary F", "threshold sweep",
                 "objects/s", "no negative clicks"):
        assert text in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["objects"] == 3 and report["summary"]["threshold"] == 0.5
    assert report["model"]["source"] == str(crop_model_file) and report["model"]["arch"] == "resunet18"
    with open(out / "objects.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # 3 objects x 2 thresholds
    main = [float(r["iou"]) for r in rows if float(r["threshold"]) == 0.5]
    assert np.mean(main) == pytest.approx(report["summary"]["mean_iou"])
    box = [float(r["box_iou"]) for r in rows if float(r["threshold"]) == 0.5]
    assert np.mean(box) == pytest.approx(report["baselines"]["box"]["mean_iou"])
    # rectangles: their points' box is the object itself
    assert sorted(box)[-2:] == [1.0, 1.0]
    overlays = sorted((out / "worst").glob("*.png"))
    assert len(overlays) == 2
    for path in overlays:
        with PIL.Image.open(path) as im:
            assert im.size == (W, H)
            pixels = {tuple(p) for p in np.asarray(im.convert("RGB")).reshape(-1, 3)}
        assert GT_COLOR in pixels and PRED_COLOR in pixels


def test_eval_clicks_reports_noc_and_plots_several_models(label_data, crop_model_file, tmp_path):
    # the crop model marks its whole crop: false positives around each object, so the annotator
    # clicks negatives, which this model (no negative channel) spends without changing its mask
    first = tmp_path / "first.json"
    result = runner.invoke(app, ["eval", "-m", str(crop_model_file), *_dataset_args(label_data), "--device", "cpu",
                                 "--clicks", "6", "--json", str(first), "--csv", str(tmp_path / "o.csv")])
    assert result.exit_code == 0, result.output
    for text in ("NoC@85", "NoC@90", "mIoU after k clicks", "spent"):
        assert text in result.output
    inter = json.loads(first.read_text())["interactive"]
    assert inter["clicks"] == 6 and inter["takes_negatives"] is False
    assert inter["corrections_not_taken"] == inter["corrections"] > 0
    assert inter["miou"]["4"] == inter["miou"]["6"]  # spent clicks leave the masks unchanged
    with open(tmp_path / "o.csv", newline="") as f:
        assert {"noc_85", "iou_at_6"} <= set(next(csv.DictReader(f)))
    plot = tmp_path / "noc.png"
    result = runner.invoke(app, ["eval", "-m", str(crop_model_file), *_dataset_args(label_data), "--device", "cpu",
                                 "--clicks", "5", "--limit", "1", "--plot", str(plot), "--compare", str(first)])
    assert result.exit_code == 0, result.output
    with PIL.Image.open(plot) as im:
        assert im.size[0] > 100
    result = runner.invoke(app, ["eval", "-m", str(crop_model_file), *_dataset_args(label_data), "--clicks", "5",
                                 "--plot", str(plot), "--compare", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "not a `dextr eval --clicks K --json` report" in result.output


def test_eval_reads_its_defaults_from_the_config(label_data, crop_model_file, tmp_path):
    cfg = tmp_path / "dextr.toml"
    cfg.write_text(
        f'[eval]\nmodel = "{crop_model_file}"\ndataset = "custom_label"\n'
        f'image_pat = ["{label_data / "images" / "*.png"}"]\n'
        f'target_pat = ["{label_data / "labels" / "*_mask.png"}"]\ndevice = "cpu"\n'
    )
    result = runner.invoke(app, ["eval", "-c", str(cfg), "--limit", "1", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["objects"] == 1


@pytest.mark.parametrize("args, hint", [
    ([], "--model"),
    (["-m", "x.pt", "--thresholds", "0.3,abc"], "--thresholds"),
    (["-m", "x.pt", "--points-from", "clicks"], "--points-from"),
    (["-m", "x.pt", "--worst", "3"], "--worst"),
    (["-m", "x.pt", "--plot", "noc.png"], "--plot"),
    (["-m", "x.pt", "--clicks", "3"], "--clicks"),
])
def test_usage_errors(args, hint):
    result = runner.invoke(app, ["eval", *args])
    assert result.exit_code == 2
    assert hint in result.output


@pytest.mark.parametrize("option, toml, message", [
    (["--dataset", "custom_label", "--image-pat", "a/*.png"], 'dataset = "custom_label"\nimage_pat = ["a/*.png"]',
     "[eval] image_pat: dataset custom_label needs both image_pat and target_pat (--image-pat, --target-pat)"),
    (["--dataset", "nope"], 'dataset = "nope"',
     "[eval] dataset: expected one of pascal_voc, custom_label, custom_mask, coco, got 'nope'"),
    ([], "", "[eval] dataset: choose a dataset kind (--dataset)"),
])
def test_dataset_settings_fail_alike_from_the_cli_and_the_config(tmp_path, option, toml, message):
    """One check (dextr_lib.config.check_dataset), one error line, wherever the value came from."""
    cfg = tmp_path / "dextr.toml"
    cfg.write_text(f"[eval]\n{toml}\n")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    lines = []
    for args in (["-c", str(empty), *option], ["-c", str(cfg)]):
        result = runner.invoke(app, ["eval", "-m", "x.pt", *args])
        assert result.exit_code == 1, result.output
        lines.append(" ".join(result.stderr.split()))
    assert lines[0] == lines[1] and message in lines[0]


def test_jitter_and_points_file_exclude_each_other(tmp_path):
    pf = tmp_path / "objects.json"
    pf.write_text("{}")
    result = runner.invoke(app, ["eval", "-m", "x.pt", "--points-file", str(pf), "--jitter", "2"])
    assert result.exit_code == 2 and "--jitter" in result.output


def test_dataset_error_is_one_line(tmp_path, crop_model_file):
    result = runner.invoke(app, ["eval", "-m", str(crop_model_file), "--dataset", "custom_label",
                                 "--image-pat", str(tmp_path / "none" / "*.png"),
                                 "--target-pat", str(tmp_path / "none" / "*.png")])
    assert result.exit_code == 1
    assert "Error:" in result.output and "Traceback" not in result.output


def test_eval_on_pennfudan(shared_data, crop_model_file, tmp_path):
    root = shared_data / "pennfudan"
    result = runner.invoke(app, [
        "eval", "-m", str(crop_model_file), "--dataset", "custom_label",
        "--image-pat", str(root / "images" / "PennPed0000*.png"),
        "--target-pat", str(root / "labels" / "PennPed0000*_mask.png"), "--min-object-area", "100",
        "--limit", "6", "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"),
        "--overlays", str(tmp_path / "worst"), "--worst", "2", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    with open(tmp_path / "r.csv", newline="") as f:
        ious = [float(r["iou"]) for r in csv.DictReader(f)]
    assert len(ious) == 6 and np.mean(ious) == pytest.approx(report["summary"]["mean_iou"])
    assert 0.3 < report["baselines"]["quadrilateral"]["mean_iou"] < 0.8
    assert len(list((tmp_path / "worst").glob("*.png"))) == 2


def test_points_file_matches_ground_truth_points(label_data, crop_model_file, tmp_path):
    from dextr_lib.formats.objects import write_objects
    from dextr_lib.workflows.points import points_from_masks

    labels = sorted((label_data / "labels").glob("*.png"))
    write_objects(points_from_masks(labels, image_dir=label_data / "images"), tmp_path / "objects.json")
    means = []
    for extra in ([], ["--points-file", str(tmp_path / "objects.json")]):
        out = tmp_path / f"r{len(extra)}.json"
        result = runner.invoke(app, ["eval", "-m", str(crop_model_file), *_dataset_args(label_data),
                                     "--device", "cpu", "--json", str(out), *extra])
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        assert data["summary"]["objects"] == 3
        means.append((data["settings"]["point_source"], data["summary"]["mean_iou"]))
    assert [m[0] for m in means] == ["ground_truth", "points_file"]
    assert means[0][1] == pytest.approx(means[1][1])


def test_sweep_never_changes_the_main_threshold(label_data, tmp_path):
    """The headline threshold is --threshold, else the model's own (here 0.6), whatever
    --thresholds lists (the command used to pick 0.5-if-listed-else-the-first itself)."""
    torch.manual_seed(0)
    model = dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)
    model.preprocess = model.preprocess.replace(threshold=0.6)
    model.save(tmp_path / "m.pt")
    base = ["eval", "-m", str(tmp_path / "m.pt"), *_dataset_args(label_data), "--device", "cpu",
            "--thresholds", "0.3,0.9"]
    for extra, main in (([], 0.6), (["--threshold", "0.9"], 0.9)):
        r = runner.invoke(app, base + extra + ["--json", str(tmp_path / "r.json"), "--force"])
        assert r.exit_code == 0, r.output
        data = json.loads((tmp_path / "r.json").read_text())
        assert data["summary"]["threshold"] == main
        assert sorted({0.3, 0.9, main}) == [s["threshold"] for s in data["sweep"]]
    assert data["model"]["source"] == str(tmp_path / "m.pt")
    assert data["dataset"]["image_pat"] == [str(label_data / "images" / "*.png")]


def test_overlays_never_replace_a_photo(label_data, crop_model_file):
    # Overlays are named worst<rank>_...png once the evaluation ranks them: photos so named in
    # the --overlays folder are refused before any work, even with --force.
    for name in ("img0", "img1"):
        (label_data / "images" / f"{name}.png").rename(label_data / "images" / f"worst_{name}.png")
        (label_data / "labels" / f"{name}_mask.png").rename(label_data / "labels" / f"worst_{name}_mask.png")
    before = {p: p.read_bytes() for p in (label_data / "images").iterdir()}
    result = runner.invoke(app, ["eval", "-m", str(crop_model_file), *_dataset_args(label_data), "--device", "cpu",
                                 "--overlays", str(label_data / "images"), "--worst", "2", "--force"])
    assert result.exit_code == 1, result.output
    assert "refusing to write overlays into" in result.output and "worst_img0.png" in result.output
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in (label_data / "images").iterdir()} == before
