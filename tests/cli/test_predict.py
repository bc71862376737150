"""``dextr predict``: single image with --points, --points-file batches, and usage errors."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app
from dextr_cli.commands import predict as predict_cmd
from dextr_lib.formats.objects import ImageEntry, ObjectEntry, write_objects

runner = CliRunner()
# The object's left, right, top, bottom as X,Y (column,row) for the synthetic disk at (y 30, x 42).
CLI_POINTS = ["27,30", "57,30", "42,15", "42,45"]


def _points_args(points=CLI_POINTS):
    return [a for p in points for a in ("--points", p)]


def test_writes_a_binary_mask_equal_to_the_library_result(tmp_path, photo, model_file, tiny_model,
                                                         synthetic_sample):
    image, _, pts = synthetic_sample
    out = tmp_path / "mask.png"
    r = runner.invoke(app, ["predict", str(photo), "--model", str(model_file), *_points_args(),
                            "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    mask = np.asarray(PIL.Image.open(out))
    assert mask.shape == (64, 80) and set(np.unique(mask)) <= {0, 255}
    expected = tiny_model.predict([image], [pts], threshold=0.5)[0]
    np.testing.assert_array_equal(mask == 255, expected)
    assert "mask.png" in r.stdout


def test_prob_writes_8bit_probabilities_and_threshold_changes_the_mask(tmp_path, photo, model_file,
                                                                       tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    base = ["predict", str(photo), "-m", str(model_file), *_points_args(), "--device", "cpu"]
    r = runner.invoke(app, base + ["--prob", "-o", str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    prob = np.asarray(PIL.Image.open(tmp_path / "p.png"))
    assert prob.dtype == np.uint8 and prob.shape == (64, 80)
    expected = tiny_model.predict([image], [pts])[0]
    assert np.abs(prob.astype(float) - expected * 255).max() <= 0.5 + 1e-6
    r = runner.invoke(app, base + ["--threshold", "0.9", "-o", str(tmp_path / "t.png")])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(tmp_path / "t.png")) == 255, expected >= 0.9)


def test_points_are_converted_from_xy_to_yx_and_config_supplies_defaults(tmp_path, photo, monkeypatch):
    calls = {}

    class FakeModel:
        preprocess = dextr_lib.inference.preprocessing.Preprocess(threshold=0.25)
        load_note = None
        runtime, onnx = "torch", None

        def runner(self, runtime=None, precision="fp32"):  # the CLI makes it before predicting
            calls.update(runner=(runtime, precision))

        def predict_image(self, image, points_list, **kw):
            calls.update(points=np.asarray(points_list), **kw)
            prob = np.full(image.shape[:2], 0.3, np.float32)
            return [prob if kw["threshold"] is None else prob >= kw["threshold"]]

    def fake_load(spec, map_location=None, **kw):
        calls.update(spec=spec, device=map_location, cache_dir=kw.get("cache_dir"))
        return FakeModel()

    monkeypatch.setattr(dextr_lib, "load_model", fake_load)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[paths]\nmodels = "cache"\n[predict]\nmodel = "from-config.pt"\nbatch_size = 3\n'
                   'device = "cpu"\n')
    r = runner.invoke(app, ["predict", str(photo), "-p", "1,2", "-p", "3.5,4", "-p", "5,6", "-p", "7,8",
                            "-c", str(cfg), "-o", str(tmp_path / "m.png")])
    assert r.exit_code == 0, r.output
    assert calls["spec"] == str(tmp_path / "from-config.pt")  # relative to the config file
    assert calls["batch_size"] == 3 and calls["device"] == "cpu"
    assert calls["cache_dir"] == str(tmp_path / "cache")
    assert calls["threshold"] == 0.25  # the model profile's threshold
    np.testing.assert_array_equal(calls["points"], [[[2, 1], [4, 3.5], [6, 5], [8, 7]]])
    assert (np.asarray(PIL.Image.open(tmp_path / "m.png")) == 255).all()  # 0.3 >= 0.25
    r = runner.invoke(app, ["predict", str(photo), *_points_args(), "-c", str(cfg), "-m", "cli.pt",
                            "--batch-size", "5", "-t", "0.5", "-o", str(tmp_path / "m.png"), "--force"])
    assert r.exit_code == 0, r.output
    assert (calls["spec"], calls["batch_size"], calls["threshold"]) == ("cli.pt", 5, 0.5)
    assert (np.asarray(PIL.Image.open(tmp_path / "m.png")) == 0).all()


def test_overlay_is_written_with_the_photo_size(tmp_path, photo, model_file):
    r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), *_points_args(),
                            "-o", str(tmp_path / "m.png"), "--overlay", str(tmp_path / "o.png"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    ov = np.asarray(PIL.Image.open(tmp_path / "o.png"))
    assert ov.shape == (64, 80, 3)
    assert not np.array_equal(ov, np.asarray(PIL.Image.open(photo)))


def test_default_output_name(tmp_path, photo, model_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), *_points_args(), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "photo_dextr.png").is_file()


def test_points_file_writes_one_mask_per_object(tmp_path, photo, model_file, tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    entries = [ImageEntry(str(photo), [ObjectEntry(pts, label=1), ObjectEntry(pts + 2, label=7)], 64, 80)]
    write_objects(entries, tmp_path / "sub" / "objects.json")
    out = tmp_path / "masks"
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--points-file", str(tmp_path / "sub" / "objects.json"),
                            "--out-dir", str(out), "--device", "cpu", "--batch-size", "1"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["photo_label1.png", "photo_label7.png"]
    expected = tiny_model.predict_image(image, [pts, pts + 2], threshold=0.5)
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(out / "photo_label7.png")) == 255, expected[1])


def test_points_file_size_mismatch_is_one_line(tmp_path, photo, model_file, synthetic_sample):
    _, _, pts = synthetic_sample
    write_objects([ImageEntry(str(photo), [ObjectEntry(pts, label=1)], 100, 80)], tmp_path / "o.json")
    r = runner.invoke(app, ["predict", "-m", str(model_file), "--points-file", str(tmp_path / "o.json"),
                            "--out-dir", str(tmp_path / "m"), "--device", "cpu"])
    assert r.exit_code == 1
    assert "80x64" in r.stderr and "80x100" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-p", "3;4", "-p", "1,2", "-p", "1,2", "-p", "1,2"], "expected X,Y"),
        (["-p", "1,2", "-p", "3,4", "-p", "5,6"], "exactly 4 points"),
        (["-p", "1,2", "-p", "3,4", "-p", "5,6", "-p", "7,8", "-p", "9,9"], "exactly 4 points"),
        ([], "four --points"),
        (["-p", "1,2", "-p", "3,4", "-p", "5,6", "-p", "7,8", "--out-dir", "x"], "--out-dir"),
        (["--points-file", "{objects}"], "--points-file"),
        (["-p", "1,2", "-p", "3,4", "-p", "5,6", "-p", "7,8", "--threshold", "2"], "threshold"),
    ],
)
def test_usage_errors_exit_2(tmp_path, photo, model_file, args, needle):
    objects = tmp_path / "o.json"
    objects.write_text("{}")
    args = [a.replace("{objects}", str(objects)) for a in args]
    r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), *args])
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize(
    "setup, needle",
    [
        ("missing_model", "model not found"),
        ("bad_points_file", "not a dextr objects file"),
        ("bad_precision", "unknown precision 'fp8'"),
        ("fp16_on_cpu", "needs a GPU"),
    ],
)
def test_user_errors_are_one_line_exit_1(tmp_path, photo, model_file, setup, needle):
    base = ["predict", "-m", str(model_file)]
    if setup == "missing_model":
        args = ["predict", str(photo), "-m", str(tmp_path / "nope.pt"), *_points_args()]
    elif setup in ("bad_precision", "fp16_on_cpu"):
        precision = "fp8" if setup == "bad_precision" else "fp16"
        args = base + [str(photo), *_points_args(), "--precision", precision, "-o", str(tmp_path / "m.png")]
    else:
        (tmp_path / "o.json").write_text('{"images": []}')
        args = base + ["--points-file", str(tmp_path / "o.json"), "--out-dir", str(tmp_path / "m")]
    r = runner.invoke(app, args + ["--device", "cpu"])
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("Error:") and needle in lines[0]
    assert "Traceback" not in r.output and not isinstance(r.exception, dextr_lib.DextrError)


def test_parse_points_is_the_single_xy_conversion():
    np.testing.assert_array_equal(predict_cmd._parse_points([" 1, 2", "3.5,4", "-1,6e1", "7,+8"]),
                                  [[2, 1], [4, 3.5], [60, -1], [8, 7]])


def test_real_photo_mask_and_overlay(tmp_path, shared_data, model_file):
    photo = shared_data / "photos" / "bear.jpg"
    w, h = PIL.Image.open(photo).size
    pts = [f"{w // 4},{h // 2}", f"{3 * w // 4},{h // 2 + 5}", f"{w // 2},{h // 5}", f"{w // 2 + 3},{4 * h // 5}"]
    r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), *_points_args(pts),
                            "-o", str(tmp_path / "m.png"), "--overlay", str(tmp_path / "o.png"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    mask = PIL.Image.open(tmp_path / "m.png")
    ov = PIL.Image.open(tmp_path / "o.png")
    assert mask.size == (w, h) and mask.mode == "L"
    assert ov.size == (w, h) and ov.mode == "RGB"


def test_points_file_without_photos_fails_before_loading_the_model(tmp_path, synthetic_sample, monkeypatch):
    _, _, pts = synthetic_sample
    monkeypatch.setattr(dextr_lib, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    write_objects([ImageEntry(None, [ObjectEntry(pts, label=1)], 64, 80)], tmp_path / "a.json")
    write_objects([ImageEntry(str(tmp_path / "gone.png"), [ObjectEntry(pts, label=1)])], tmp_path / "b.json")
    for name, needle in (("a.json", "has no photo"), ("b.json", "photo not found")):
        r = runner.invoke(app, ["predict", "-m", "m.pt", "--points-file", str(tmp_path / name),
                                "--out-dir", str(tmp_path / "m")])
        assert r.exit_code == 1 and needle in r.stderr and "images[0]" in r.stderr


def test_unwritable_output_is_one_line(tmp_path, photo, model_file):
    (tmp_path / "file").write_text("")
    for out in (tmp_path / "mask.xyz", tmp_path / "file" / "mask.png"):
        r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), *_points_args(),
                                "-o", str(out), "--device", "cpu"])
        assert r.exit_code == 1 and r.stderr.startswith("Error: cannot write") and "Traceback" not in r.output


def test_bf16_precision_gives_nearly_the_fp32_mask(tmp_path, photo, model_file, tiny_model, synthetic_sample):
    image, _, pts = synthetic_sample
    r = runner.invoke(app, ["predict", str(photo), "-m", str(model_file), *_points_args(), "--prob",
                            "--precision", "bf16", "-o", str(tmp_path / "p.png"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    prob = np.asarray(PIL.Image.open(tmp_path / "p.png")) / 255.0
    exact = tiny_model.predict([image], [pts])[0]
    # bf16 keeps 8 bits of mantissa: close to, but not bit-identical with, the fp32 result.
    assert np.abs(prob - exact).mean() < 0.02


def test_the_config_model_is_relative_to_the_config_file(tmp_path, photo, model_file, monkeypatch):
    conf = tmp_path / "conf"
    (conf / "models").mkdir(parents=True)
    (conf / "models" / "m.pt").write_bytes(model_file.read_bytes())
    (conf / "dextr.toml").write_text('[predict]\nmodel = "models/m.pt"\n')
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # not the config's folder: the model is still found
    r = runner.invoke(app, ["predict", str(photo), *_points_args(), "-c", "../conf/dextr.toml",
                            "--out", "mask.png", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (work / "mask.png").is_file()


@pytest.mark.parametrize("points, says", [
    (["5,1", "5,2", "5,3", "5,40"], "the four --points 5,1 5,2 5,3 5,40 all have X = 5 (no width)"),
    (["1,7", "5,7", "3,7", "9,7"], "all have Y = 7 (no height)"),
    (["1,7", "5e9,7", "3,7", "9,8"], "--points 5e9,7 lies too far from any image"),
])
def test_bad_points_are_explained_in_x_y(photo, points, says):
    r = runner.invoke(app, ["predict", str(photo), "-m", "never-loaded.pt", *_points_args(points)])
    assert r.exit_code == 2
    message = " ".join(r.stderr.replace("│", " ").split())
    assert says in message and "[y, x]" not in message and "points_list" not in message
