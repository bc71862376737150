"""``dextr export`` and ``--runtime``/``--precision auto`` on the command line."""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.inference import device as device_mod

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

runner = CliRunner()
POINTS = ["-p", "10,40", "-p", "70,42", "-p", "40,8", "-p", "41,75"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model):
    """A checkpoint, two photos and the checkpoint exported by the CLI."""
    root = tmp_path_factory.mktemp("export")
    tiny_model.save(root / "tiny.pt")
    rng = np.random.default_rng(0)
    for i in range(2):
        PIL.Image.fromarray(rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(root / f"photo{i}.png")
    result = runner.invoke(app, ["export", str(root / "tiny.pt"), str(root / "tiny.onnx"),
                                 "--calibration-images", str(root / "photo*.png"), "--objects", "4"])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "fp32" in result.output
    assert "on 4 calibration objects" in result.output and "mask IoU min" in result.output
    return root


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_predict_same_mask_with_every_runtime(files, runtime):
    if runtime == "openvino":
        pytest.importorskip("openvino")
    model = files / ("tiny.pt" if runtime == "torch" else "tiny.onnx")
    out = files / f"mask_{runtime}.png"
    result = runner.invoke(app, ["predict", str(files / "photo0.png"), "-m", str(model), *POINTS,
                                 "--prob", "-o", str(out), "--runtime", runtime])
    assert result.exit_code == 0, result.output
    ref = files / "mask_ref.png"
    if not ref.exists():
        assert runner.invoke(app, ["predict", str(files / "photo0.png"), "-m", str(files / "tiny.pt"),
                                   *POINTS, "--prob", "-o", str(ref)]).exit_code == 0
    a = np.asarray(PIL.Image.open(ref), dtype=int)
    b = np.asarray(PIL.Image.open(out), dtype=int)
    assert np.abs(a - b).max() <= 1  # 8-bit probabilities


def test_onnx_model_needs_an_onnx_runtime(files):
    result = runner.invoke(app, ["predict", str(files / "photo0.png"), "-m", str(files / "tiny.onnx"),
                                 *POINTS, "-o", str(files / "m.png"), "--runtime", "torch"])
    assert result.exit_code == 1
    assert "onnxruntime or openvino" in result.output and "Traceback" not in result.output


def test_export_usage_errors(files):
    result = runner.invoke(app, ["export", str(files / "tiny.pt"), str(files / "x.onnx"), "--int8"])
    assert result.exit_code == 2 and "--calibration-images" in result.output
    result = runner.invoke(app, ["export", str(files / "tiny.pt"), str(files / "x.pt")])
    assert result.exit_code == 2 and ".onnx" in result.output
    result = runner.invoke(app, ["export", str(files / "tiny.pt"), str(files / "tiny.onnx")])
    assert result.exit_code == 2 and "--force" in result.output
    result = runner.invoke(app, ["export", str(files / "tiny.pt"), str(files / "y.onnx"),
                                 "--calibration-images", str(files / "nothing*.png")])
    assert result.exit_code == 1 and "no calibration images match" in result.output
    assert not (files / "y.onnx").exists()


def test_emulated_bf16_warns_in_one_line(files, monkeypatch):
    caps = {"avx2": True, "avx512": False, "avx512_bf16": False, "amx_bf16": False, "vnni": False,
            "source": "test"}
    monkeypatch.setattr(device_mod, "cpu_capabilities", lambda: caps)
    args = ["predict", str(files / "photo0.png"), "-m", str(files / "tiny.pt"), *POINTS,
            "--device", "cpu"]
    result = runner.invoke(app, [*args, "-o", str(files / "w_bf16.png"), "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "Warning" in ln]
    assert len(lines) == 1 and "emulated" in lines[0] and "slower than fp32" in lines[0]
    result = runner.invoke(app, [*args, "-o", str(files / "w_auto.png"), "--precision", "auto"])
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output


@pytest.mark.parametrize("diff, shown", [(1.0, "1.00e+00"), (1.234e-6, "1.23e-06")])
def test_the_export_check_prints_the_logit_difference_with_its_precision(files, monkeypatch, diff, shown):
    from dextr_lib.workflows import export as export_mod

    report = export_mod.ExportReport(files / "z.onnx", False, 1000, n_check=4, max_abs_logit_diff=diff,
                                     min_mask_iou=1.0, mean_mask_iou=1.0)
    monkeypatch.setattr(export_mod, "export_onnx", lambda *a, **k: report)
    result = runner.invoke(app, ["export", str(files / "tiny.pt"), str(files / "z.onnx")])
    assert result.exit_code == 0, result.output
    assert f"max |logit difference| {shown}," in result.output
