"""Hostile ``.onnx`` (and ``.pt``) model paths reach the user as one line, under the same
limits as checkpoints: sizes checked before reading, metadata values range-checked, tensors
in other files refused, folders and pipes named for what they are."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dextr_cli.app import app
from dextr_lib.inference.preprocessing import Preprocess
from dextr_lib.weights.loading import ONNX_META_META, ONNX_META_PREPROCESS

onnx = pytest.importorskip("onnx")
helper = onnx.helper

runner = CliRunner()
POINTS = ["--points", "27,30", "--points", "57,30", "--points", "42,15", "--points", "42,45"]


def _write_onnx(path, preprocess=None, meta="{}", external=None):
    """A tiny graph (an Add of one initializer) with dextr metadata; ``external``: the file the
    initializer's data is said to live in."""
    weight = helper.make_tensor("w", onnx.TensorProto.FLOAT, [1], [1.0])
    if external is not None:
        weight = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[1],
                                  data_location=onnx.TensorProto.EXTERNAL)
        for key, value in (("location", external), ("offset", "0"), ("length", "4")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["inputs", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("inputs", onnx.TensorProto.FLOAT, [None, 4, 64, 64])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [None, 4, 64, 64])],
        initializer=[weight])
    model = helper.make_model(graph)
    pre = {**Preprocess().to_dict(), "target_size": 64} if preprocess is None else preprocess
    for key, value in ((ONNX_META_PREPROCESS, json.dumps(pre)), (ONNX_META_META, meta)):
        model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())
    return path


def _one_line(r, *needles):
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    err = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and len(r.output.strip().splitlines()) == 1, r.output
    for n in needles:
        assert n in err[0], (n, r.output)


def _predict(photo, model):
    return runner.invoke(app, ["predict", str(photo), "-m", str(model), *POINTS, "--device", "cpu"])


def test_target_size_over_the_limit_is_refused(tmp_path, photo):
    big = _write_onnx(tmp_path / "big.onnx", {**Preprocess().to_dict(), "target_size": 20000})
    _one_line(_predict(photo, big), "big.onnx", "20000x20000", "max_target_size=2048")


@pytest.mark.parametrize("field, value, needle", [
    ("target_size", "512", "expected int"),
    ("padding", float("nan"), "expected float"),
])
def test_metadata_values_of_the_wrong_type_are_refused(tmp_path, photo, field, value, needle):
    bad = _write_onnx(tmp_path / "bad.onnx", {**Preprocess().to_dict(), field: value})
    _one_line(_predict(photo, bad), f"preprocess {field}", needle)


def test_meta_that_is_a_list_is_one_line(tmp_path, photo):
    bad = _write_onnx(tmp_path / "list.onnx", meta="[1, 2]")
    _one_line(_predict(photo, bad), "list.onnx", "dextr.meta must be a JSON object, got list")


@pytest.mark.parametrize("location", ["/etc/passwd", "../../secret.bin", "weights.bin"])
def test_external_data_is_refused_in_one_line(tmp_path, photo, location):
    (tmp_path / "weights.bin").write_bytes(bytes(4))
    bad = _write_onnx(tmp_path / "ext.onnx", external=location)
    _one_line(_predict(photo, bad), "ext.onnx", "keeps tensor 'w' in another file", location)


def test_a_file_over_the_size_limit_is_not_read(tmp_path, photo, monkeypatch):
    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as f:
        f.truncate(5 * 2 ** 30)  # sparse: 5 GiB by its size, nothing on disk
    monkeypatch.setattr("pathlib.Path.read_bytes", lambda self: pytest.fail(f"read {self}"))
    _one_line(_predict(photo, huge), "huge.onnx", "5120 MiB", "max_checkpoint_mb=4096")


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_a_folder_named_like_a_model_says_so(tmp_path, photo, suffix):
    folder = tmp_path / f"x{suffix}"
    folder.mkdir()
    _one_line(_predict(photo, folder), f"x{suffix}", "is a folder")


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_a_named_pipe_named_like_a_model_is_not_read(tmp_path, photo, suffix):
    fifo = tmp_path / f"x{suffix}"
    os.mkfifo(fifo)
    # A real process: reading the pipe would block forever.
    r = subprocess.run([sys.executable, "-m", "dextr_cli", "predict", str(photo), "-m", str(fifo),
                        *POINTS, "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"x{suffix} is not a regular file" in " ".join(r.stderr.split())


def test_a_graph_that_does_not_take_the_metadata_s_crops_is_refused(tmp_path, photo):
    bad = _write_onnx(tmp_path / "mismatch.onnx", {**Preprocess().to_dict(), "target_size": 512})
    _one_line(_predict(photo, bad), "mismatch.onnx", "shape ?x4x64x64", "(N, C, 512, 512)")


@pytest.mark.parametrize("runtime, words", [
    ("onnxruntime", "No Op registered for NoSuchOp"),
    ("openvino", "No conversion rule found for operations: NoSuchOp"),
])
def test_a_graph_the_runtime_refuses_is_one_line(tmp_path, photo, runtime, words):
    pytest.importorskip(runtime)
    # Passes dextr's load checks (metadata, shapes, no external data); the runtime has no
    # kernel for the operator.
    model = onnx.load_from_string(_write_onnx(tmp_path / "op.onnx").read_bytes())
    model.graph.node[0].op_type = "NoSuchOp"
    (tmp_path / "op.onnx").write_bytes(model.SerializeToString())
    r = runner.invoke(app, ["predict", str(photo), "-m", str(tmp_path / "op.onnx"), *POINTS, "--device", "cpu",
                            "--runtime", runtime, "--out", str(tmp_path / "mask.png")])
    _one_line(r, f"{runtime} cannot run", "op.onnx", words)
    assert not (tmp_path / "mask.png").exists()
