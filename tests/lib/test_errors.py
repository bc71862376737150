"""User-reachable mistakes raise DextrError subclasses (from dextr_lib.errors), worded for
Python callers and command-line users alike."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import dextr_lib
from dextr_cli.app import app
from dextr_lib import errors
from dextr_lib.core.geometry import relaxed_boxes
from dextr_lib.errors import DeviceError, DextrError, InvalidValueError, MismatchError
from dextr_lib.evaluation.evaluator import evaluate
from dextr_lib.evaluation.metrics import iou
from dextr_lib.inference.device import resolve_device

LIB = Path(dextr_lib.__file__).parent


def test_every_dextr_error_is_defined_in_errors_py():
    for path in LIB.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                assert not any(b.endswith("Error") for b in bases), f"{path}: class {node.name}"


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"threshold": -0.1}, {"threshold": float("nan")},
                                    {"batch_size": 0}, {"batch_size": -3}])
def test_predict_rejects_bad_values(tiny_model, synthetic_sample, kwargs):
    image, _, pts = synthetic_sample
    with pytest.raises(InvalidValueError) as e:
        tiny_model.predict([image], [pts], **kwargs)
    assert isinstance(e.value, DextrError) and isinstance(e.value, ValueError)  # old callers still work
    assert str(next(iter(kwargs.values()))) in str(e.value)


def test_padding_too_large_for_the_target_size():
    with pytest.raises(InvalidValueError, match="padding"):
        dextr_lib.create_model("resunet18", target_size=64, padding=32)
    with pytest.raises(InvalidValueError, match="half the target size"):
        relaxed_boxes(np.zeros((1, 4, 2)), padding=40, target_size=64)


def test_metrics_mismatched_masks():
    with pytest.raises(MismatchError):
        iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_evaluate_rejects_bad_thresholds_before_any_work(tiny_model):
    class NoDataset:  # evaluate must fail before touching the dataset
        kind = "custom_label"

        def __getattr__(self, name):
            raise AssertionError(f"dataset.{name} used")

    for kw in ({"thresholds": [0.5, 2.0]}, {"threshold": 1.01}, {"batch_size": 0}):
        with pytest.raises(InvalidValueError):
            evaluate(tiny_model, NoDataset(), **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_error_speaks_to_python_and_cli_users():
    with pytest.raises(DeviceError) as e:
        resolve_device("cuda")
    assert "--device" not in str(e.value) and "'cpu'" in str(e.value)
    assert issubclass(errors.DeviceError, DextrError)


def test_cli_shows_a_library_value_error_as_one_line(tmp_path, tiny_model, synthetic_sample):
    """A bad value from the config reaches the library; the user gets one line, exit 1."""
    import PIL.Image

    image, _, _ = synthetic_sample
    PIL.Image.fromarray(image).save(tmp_path / "photo.png")
    tiny_model.save(tmp_path / "m.pt")
    (tmp_path / "dextr.toml").write_text("[predict]\nbatch_size = 0\n")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "photo.png"), "-m", str(tmp_path / "m.pt"),
                                 "-p", "27,30", "-p", "57,30", "-p", "42,15", "-p", "42,45",
                                 "-o", str(tmp_path / "mask.png"), "--device", "cpu",
                                 "--config", str(tmp_path / "dextr.toml")])
    assert r.exit_code == 1, r.output
    assert "batch" in r.output.lower() and "Traceback" not in r.output
    assert len([l for l in r.output.splitlines() if l.startswith("Error")]) == 1
