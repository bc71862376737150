"""Runtimes and ONNX export: the same masks from torch, ONNX Runtime and OpenVINO."""
import json
import warnings

import numpy as np
import pytest
import torch

import dextr_lib
from dextr_lib.core.geometry import extreme_points_from_mask
from dextr_lib.errors import (
    CheckpointError, DeviceError, ExportError, MissingExtraError, OutputError, PrecisionWarning, UnknownNameError,
)
from dextr_lib.inference import device as device_mod
from dextr_lib.inference.preprocessing import Preprocess, image_to_tensor
from dextr_lib.inference.runtimes import require
from dextr_lib.weights.loading import ONNX_META_PREPROCESS
from dextr_lib.workflows.export import calibration_objects, export_onnx, jittered_box_points

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def synthetic_objects(n, size=96, seed=0):
    """``n`` (image, mask, points): one random ellipse of a random colour on a textured background."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        img = rng.integers(0, 256, size=(size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        cy, cx = rng.uniform(30, size - 30, size=2)
        ry, rx = rng.uniform(10, 28, size=2)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[mask] = rng.integers(0, 256, size=3)
        out.append((img, mask, extreme_points_from_mask(mask)))
    return out


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """``tiny_model`` exported once to fp32 ONNX, with the report."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    objs = [(img, pts) for img, _, pts in synthetic_objects(3, seed=1)]
    report = export_onnx(tiny_model, path, check=objs)
    return path, report


def test_export_round_trip_same_masks_in_every_runtime(tiny_model, exported, shared_data):
    path, report = exported
    assert report.n_check == 3 and report.max_abs_logit_diff < 1e-3 and report.min_mask_iou >= 0.99
    onnx_model = dextr_lib.load_model(path)
    assert onnx_model.net is None and onnx_model.runtime == ("openvino" if _has("openvino") else "onnxruntime")
    assert onnx_model.preprocess == tiny_model.preprocess and onnx_model.arch == "resunet18"
    # the same real objects through the one pre/post-processing path, three runtimes
    import PIL.Image

    objects = []
    for stem in ["FudanPed00001", "PennPed00010"]:
        img = np.asarray(PIL.Image.open(shared_data / "pennfudan" / "images" / f"{stem}.png").convert("RGB"))
        labels = np.asarray(PIL.Image.open(shared_data / "pennfudan" / "labels" / f"{stem}_mask.png"))
        objects += [(img, extreme_points_from_mask(labels == v)) for v in np.unique(labels)[1:]]
    images, points = [o[0] for o in objects], [o[1] for o in objects]
    ref = tiny_model.predict(images, points, batch_size=3)
    for model, runtime in [(onnx_model, None), (onnx_model, "openvino"), (onnx_model, "onnxruntime"),
                           (tiny_model, "onnxruntime")]:
        if runtime == "openvino":
            pytest.importorskip("openvino")
        got = model.predict(images, points, batch_size=3, runtime=runtime)
        for a, b in zip(ref, got):
            assert a.shape == b.shape
            assert np.abs(a - b).max() < 1e-4
            assert _iou(a >= 0.5, b >= 0.5) >= 0.99


def test_onnx_metadata_carries_profile_and_provenance(tiny_model, exported):
    import onnx

    path, _ = exported
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props[ONNX_META_PREPROCESS]) == tiny_model.preprocess.to_dict()
    meta = json.loads(props["dextr.meta"])
    assert meta["exported_by"].startswith("dextr ") and "quantization" not in meta
    # dynamic batch dimension: the graph input's first dimension has no fixed size
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert not dim0.HasField("dim_value")


def test_onnx_model_limits_are_clear(exported, tmp_path):
    path, _ = exported
    model = dextr_lib.load_model(path)
    with pytest.raises(ExportError, match="onnxruntime or openvino"):
        model.predict([np.zeros((40, 40, 3), np.uint8)], [[[20, 5], [20, 35], [5, 20], [35, 20]]],
                      runtime="torch")
    with pytest.raises(ExportError, match="no PyTorch weights"):
        model.save(tmp_path / "x.pt")
    with pytest.raises(ExportError, match="already an ONNX graph"):
        export_onnx(model, tmp_path / "again.onnx")
    with pytest.raises(OutputError, match="exists"):
        export_onnx(dextr_lib.create_model("resunet18", target_size=64), path)
    with pytest.raises(UnknownNameError, match="onnxruntime"):
        model.predict([np.zeros((40, 40, 3), np.uint8)], [[[20, 5], [20, 35], [5, 20], [35, 20]]],
                      runtime="tensorrt")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError):
        dextr_lib.load_model(bad)



def test_a_loaded_onnx_model_reads_its_graph_from_the_file(exported, tmp_path, monkeypatch):
    """The runtimes read the graph from the .onnx file (the weights are not held in memory
    twice), and a file replaced since loading is refused instead of mixing two models."""
    import shutil

    path = tmp_path / "m.onnx"
    shutil.copy(exported[0], path)
    monkeypatch.chdir(tmp_path)
    model = dextr_lib.load_model("m.onnx")  # a relative path, then another working folder
    monkeypatch.chdir(tmp_path.parent)
    assert model.onnx is None  # no bytes kept
    assert model.onnx_graph() == path.read_bytes()
    image, points = np.zeros((40, 40, 3), np.uint8), [[[20, 5], [20, 35], [5, 20], [35, 20]]]
    before = model.predict([image], points, runtime="onnxruntime")[0]
    path.write_bytes(path.read_bytes() + b"\n")  # another file now (size and time differ)
    assert np.array_equal(model.predict([image], points, runtime="onnxruntime")[0], before)  # runner kept
    with pytest.raises(CheckpointError, match="changed .* since this model was loaded"):
        model.predict([image], points, runtime="openvino" if _has("openvino") else "onnxruntime",
                      precision="fp32" if _has("openvino") else "auto")
    path.unlink()
    with pytest.raises(CheckpointError, match="load it again"):
        model.onnx_graph()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None

def test_missing_extra_names_the_pip_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    monkeypatch.delitem(__import__("sys").modules, "openvino", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'dextr\[openvino\]'"):
        require("openvino", "the openvino runtime")


def test_calibration_boxes_lie_inside_the_image():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pts = jittered_box_points(50, 70, rng)
        assert (pts >= 0).all() and (pts[:, 0] <= 49).all() and (pts[:, 1] <= 69).all()
        assert pts[0, 1] < pts[1, 1] and pts[2, 0] < pts[3, 0]  # left < right, top < bottom
    objs = calibration_objects([np.zeros((50, 70, 3), np.uint8)] * 2, 5)
    assert len(objs) == 5


# -- precision -----------------------------------------------------------------------------------
@pytest.fixture
def capabilities(monkeypatch):
    """Set the CPU capabilities the precision logic sees."""

    def set_caps(**caps):
        base = {"avx2": True, "avx512": False, "avx512_bf16": False, "amx_bf16": False, "vnni": False,
                "source": "test"}
        base.update(caps)
        monkeypatch.setattr(device_mod, "cpu_capabilities", lambda: base)

    return set_caps


@pytest.mark.parametrize("caps, expected", [
    ({}, "fp32"),
    ({"avx512": True}, "fp32"),
    ({"avx512": True, "avx512_bf16": True}, "bf16"),
    ({"amx_bf16": True}, "bf16"),
])
def test_precision_auto_follows_the_cpu(capabilities, caps, expected):
    capabilities(**caps)
    cpu = torch.device("cpu")
    assert device_mod.resolve_precision("auto", cpu, "torch") == expected
    assert device_mod.resolve_precision("auto", cpu, "openvino") == expected
    assert device_mod.resolve_precision("auto", cpu, "onnxruntime") == "fp32"  # ORT runs fp32 here


def test_precision_auto_on_cuda(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    assert device_mod.resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    assert device_mod.resolve_precision("auto", cuda) == "fp32"


def test_explicit_bf16_warns_once_in_a_line_where_emulated(capabilities):
    cpu = torch.device("cpu")
    capabilities(avx512=True)
    with pytest.warns(PrecisionWarning, match="emulated.*slower than fp32") as rec:
        assert device_mod.resolve_precision("bf16", cpu) == "bf16"
    assert "\n" not in str(rec[0].message)
    capabilities(avx512_bf16=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device_mod.resolve_precision("bf16", cpu) == "bf16"


def test_precision_errors(capabilities):
    capabilities()
    cpu = torch.device("cpu")
    with pytest.raises(DeviceError, match="GPU"):
        device_mod.resolve_precision("fp16", cpu)
    with pytest.raises(DeviceError, match="fp32 only"):
        device_mod.resolve_precision("bf16", cpu, "onnxruntime")
    with pytest.raises(UnknownNameError, match="auto"):
        device_mod.resolve_precision("fp8", cpu)


def test_cpu_capabilities_read_from_proc_cpuinfo(monkeypatch):
    device_mod.cpu_capabilities.cache_clear()
    monkeypatch.setattr(device_mod, "_proc_cpuinfo_flags",
                        lambda: frozenset("fpu avx2 avx512f avx512_vnni amx_bf16".split()))
    try:
        caps = device_mod.cpu_capabilities()
        assert caps == {"avx2": True, "avx512": True, "avx512_bf16": False, "amx_bf16": True,
                        "vnni": True, "source": "/proc/cpuinfo"}
        assert device_mod.native_bf16(torch.device("cpu"))
    finally:
        device_mod.cpu_capabilities.cache_clear()


def test_predict_auto_runs_the_resolved_precision(capabilities):
    capabilities()  # no native bf16: auto is exact fp32
    torch.manual_seed(0)
    tiny_model = dextr_lib.create_model("resunet18", target_size=64)
    img = np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8)
    pts = [[30, 5], [30, 55], [5, 30], [55, 30]]
    assert tiny_model.runner("torch", "auto").precision == "fp32"
    a = tiny_model.predict_image(img, [pts], precision="auto")[0]
    b = tiny_model.predict_image(img, [pts], precision="fp32")[0]
    assert np.array_equal(a, b)


# -- int8 ----------------------------------------------------------------------------------------
def _train_tiny(steps=150, seed=0):
    """A resunet18 at 64 px trained on synthetic ellipses until its masks are good."""
    torch.manual_seed(seed)
    model = dextr_lib.create_model("resunet18", target_size=64, padding=4, blob_sigma=4.0)
    pp = model.preprocess
    xs, ys = [], []
    for img, mask, pts in synthetic_objects(48, seed=seed):
        x, boxes = pp.make_inputs(image_to_tensor(img), pts[None].astype(float))
        y = pp.crop(torch.from_numpy(mask)[None, None].float(), boxes)
        xs.append(x)
        ys.append((y > 0.5).float())
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    net = model.net.train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (8,), generator=gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.slow
def test_int8_masks_within_iou_bar_of_fp32_on_a_trained_model(tmp_path):
    model = _train_tiny()
    calib = [(img, pts) for img, _, pts in synthetic_objects(24, seed=7)]
    test = synthetic_objects(16, seed=8)
    images, points = [t[0] for t in test], [t[2] for t in test]
    fp32 = model.predict(images, points, threshold=0.5)
    assert np.mean([_iou(p, t[1]) for p, t in zip(fp32, test)]) > 0.8  # the model learned the task
    report = export_onnx(model, tmp_path / "int8.onnx", int8=True, calibration=calib)
    assert report.min_mask_iou >= 0.97
    q = dextr_lib.load_model(tmp_path / "int8.onnx")
    assert q.meta["quantization"]["calibration_objects"] == 24
    runtimes = ["onnxruntime"]
    try:
        require("openvino", "test")
        runtimes.append("openvino")
    except MissingExtraError:
        pass
    for runtime in runtimes:
        int8 = q.predict(images, points, threshold=0.5, runtime=runtime)
        ious = [_iou(a, b) for a, b in zip(fp32, int8)]
        assert min(ious) >= 0.97, (runtime, ious)


def test_int8_graph_is_quantised(tiny_model, exported, tmp_path):
    import onnx

    calib = [(img, pts) for img, _, pts in synthetic_objects(4, seed=3)]
    report = export_onnx(tiny_model, tmp_path / "q.onnx", int8=True, calibration=calib)
    proto = onnx.load(str(tmp_path / "q.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20  # every convolution's weights
    assert report.size_bytes < 0.35 * exported[1].size_bytes  # int8 weights: a quarter of fp32
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["dextr.meta"])
    assert meta["quantization"]["calibration_objects"] == 4
    import importlib.util

    expected = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
    assert dextr_lib.load_model(tmp_path / "q.onnx").runtime == expected  # the faster one
    with pytest.raises(ExportError, match="calibration"):
        export_onnx(tiny_model, tmp_path / "q2.onnx", int8=True)


def test_default_batch_size_fits_the_runtime_and_device(tiny_model):
    """Unset, objects per forward are 1 for torch on a CPU (bigger batches are slower per object
    there), 8 for the ONNX runtimes and GPUs; predict and evaluate use that rule."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert device_mod.default_batch_size("torch", cpu) == 1
    assert device_mod.default_batch_size("torch", cuda) == 8
    assert device_mod.default_batch_size("onnxruntime", cpu) == device_mod.default_batch_size("openvino", cpu) == 8

    model = dextr_lib.create_model("resunet18", target_size=64)
    real, seen = model.runner("torch", "fp32"), []

    class Counting(type(real)):  # the torch runner, counting the objects of each forward
        def __call__(self, x):
            seen.append(len(x))
            return real(x)

    model._runners[("torch", "fp32", "cpu")] = Counting(model.net)
    image = np.zeros((40, 40, 3), np.uint8)
    points = [[[20, 5], [20, 35], [5, 20], [35, 20]]] * 3
    model.predict([image] * 3, points)
    assert seen == [1, 1, 1]
    seen.clear()
    model.predict([image] * 3, points, batch_size=2)
    assert seen == [2, 1]


def test_exporting_keeps_the_torch_runners_channels_last():
    """Exporting (for onnxruntime/openvino) must not leave the PyTorch network in the slower
    contiguous layout a torch runner made before had switched away from."""
    model = dextr_lib.create_model("resunet18", target_size=64)
    model.runner("torch", "fp32")

    def first_conv_is_channels_last():
        conv = next(p for p in model.net.parameters() if p.dim() == 4)
        return conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()

    assert first_conv_is_channels_last()
    model.onnx_graph()
    assert first_conv_is_channels_last()


def test_onnx_runtimes_leave_the_cores_to_their_own_threads(tiny_model, exported, monkeypatch):
    """With ONNX Runtime or OpenVINO on the CPU, torch's crops and paste-backs run on one thread
    (the runtime's threads own the cores), and torch's thread count is restored after each; the
    torch runtime keeps every thread."""
    seen = []

    def spy(method):
        def wrapped(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return method(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(Preprocess, "make_inputs", spy(Preprocess.make_inputs))
    monkeypatch.setattr(Preprocess, "paste", spy(Preprocess.paste))
    model = dextr_lib.load_model(exported[0])
    image, _, points = synthetic_objects(1)[0]
    torch.set_num_threads(2)
    try:
        images = [image, image.copy()]  # two photos: a crop and a paste-back each
        masks = model.predict(images, [points, points], runtime="onnxruntime")
        assert seen == [1, 1, 1, 1] and torch.get_num_threads() == 2
        between = [torch.get_num_threads()  # the caller's own code between masks: its threads
                   for _ in model.predict_iter([(image, points)] * 2, runtime="onnxruntime", batch_size=1)]
        assert between == [2, 2]
        seen.clear()
        expected = tiny_model.predict(images, [points, points], runtime="torch")
        assert seen == [2, 2, 2, 2]
        assert all(np.allclose(a, b, atol=1e-3) for a, b in zip(masks, expected))  # same masks
    finally:
        torch.set_num_threads(device_mod.TORCH_DEFAULT_THREADS)
