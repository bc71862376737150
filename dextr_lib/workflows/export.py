"""ONNX export: a model file that ONNX Runtime or OpenVINO run, with its pre-processing inside.

The graph is the network only (``inputs`` ``(batch, 4, T, T)`` -> ``logits`` ``(batch, 1, T, T)``);
the pre-processing profile, architecture and provenance travel in the ONNX ``metadata_props``
(as timm's ``pretrained_cfg`` travels with its weights), so :func:`dextr_lib.load_model` gives a
:class:`~dextr_lib.model.DextrModel` whose crops, heatmaps and paste-back are the same code as
for the PyTorch model. ``int8=True`` adds post-training static quantisation (ONNX Runtime's
quantisation tools, QDQ format) calibrated on crops of the user's own images.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..core.geometry import as_points_array
from ..core.images import ImageLike, read_image, to_rgb_array
from ..errors import DatasetError, ExportError, OutputError
from ..evaluation.metrics import iou
from ..formats.objects import read_objects
from ..inference.engine import resolve_threshold
from ..inference.preprocessing import Preprocess, image_to_tensor
from ..inference.runtimes import network_to_onnx, require
from ..model import DextrModel
from ..utils.fileio import atomic_open
from ..version import __version__
from ..weights.loading import ONNX_META_ARCH, ONNX_META_FORMAT, ONNX_META_META, ONNX_META_PREPROCESS, parse_onnx_model

PathLike = Union[str, os.PathLike]

FORMAT_VERSION = "1"


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how close the exported graph is to PyTorch."""

    path: Path
    int8: bool
    size_bytes: int
    #: objects the check ran on, and the largest |logit difference| against the PyTorch network
    n_check: int = 0
    max_abs_logit_diff: float = float("nan")
    #: IoU of thresholded masks, exported vs PyTorch fp32 (min and mean over the check objects)
    min_mask_iou: float = float("nan")
    mean_mask_iou: float = float("nan")
    n_calibration: int = 0
    metadata: Dict[str, str] = field(default_factory=dict)


def onnx_metadata(model: DextrModel, quantization: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """The ``metadata_props`` of an export of ``model``: profile, architecture and provenance."""
    meta = dict(model.meta)
    meta.update({
        "exported_by": f"dextr {__version__}",
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    })
    if quantization is not None:
        meta["quantization"] = quantization
    return {
        ONNX_META_FORMAT: FORMAT_VERSION,
        ONNX_META_ARCH: model.arch,
        ONNX_META_PREPROCESS: json.dumps(model.preprocess.to_dict(), sort_keys=True),
        ONNX_META_META: json.dumps(meta, sort_keys=True, default=str),
    }


def with_metadata(onnx_bytes: bytes, metadata: Dict[str, str]) -> bytes:
    """``onnx_bytes`` with ``metadata`` as its ``metadata_props`` (see :func:`onnx_metadata`)."""
    onnx = require("onnx", "ONNX export")
    proto = onnx.load_from_string(onnx_bytes)
    del proto.metadata_props[:]
    for k, v in metadata.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "dextr"
    proto.producer_version = __version__
    return proto.SerializeToString()


# -- calibration objects -----------------------------------------------------------------------
def jittered_box_points(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Four extreme points ``[y, x]`` of a random box, as an annotator would click an object in
    it: one point on each side of the box, at a random position along that side.

    The box spans 20-90% of each image side, so crops cover small and large objects alike."""
    bh, bw = (rng.uniform(0.2, 0.9) * height, rng.uniform(0.2, 0.9) * width)
    y0, x0 = rng.uniform(0, height - bh), rng.uniform(0, width - bw)
    y1, x1 = y0 + bh, x0 + bw
    return np.array([
        [rng.uniform(y0, y1), x0],          # left-most
        [rng.uniform(y0, y1), x1 - 1],      # right-most
        [y0, rng.uniform(x0, x1)],          # top
        [y1 - 1, rng.uniform(x0, x1)],      # bottom
    ])


def calibration_objects(
    images: Union[str, Sequence[Union[PathLike, ImageLike]]],
    n_objects: int = 32,
    seed: int = 0,
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``n_objects`` (RGB image, ``(4, 2)`` points) pairs for int8 calibration: jittered boxes
    (:func:`jittered_box_points`) spread evenly over ``images`` (a glob, or a list of paths or
    images). For objects with known masks, pass their extreme points to :func:`export_onnx`
    as ``calibration=`` instead (``dextr points-from-mask`` derives them by the paper's rule).

    Raises:
        DatasetError: the glob matches no file.
    """
    if isinstance(images, str):
        paths = sorted(glob.glob(os.path.expanduser(images), recursive=True))
        if not paths:
            raise DatasetError(f"no calibration images match {images!r}")
        images = paths
    if not images:
        raise DatasetError("no calibration images given")
    rng = np.random.default_rng(seed)
    per_image = -(-n_objects // len(images))
    out: List[Tuple[np.ndarray, np.ndarray]] = []
    for item in images:
        rgb = read_image(item) if isinstance(item, (str, os.PathLike)) else to_rgb_array(item)
        for _ in range(per_image):
            out.append((rgb, jittered_box_points(rgb.shape[0], rgb.shape[1], rng)))
        if len(out) >= n_objects:
            break
    return out[:n_objects]


def _network_inputs(preprocess: Preprocess, objects: Sequence[Tuple[Any, Any]]) -> Iterator[np.ndarray]:
    """The ``(1, 4, T, T)`` network inputs ``predict`` would build for ``objects``."""
    for image, points in objects:
        x, _ = preprocess.make_inputs(image_to_tensor(to_rgb_array(image), torch.device("cpu")),
                                      as_points_array(points, name="calibration points"))
        for row in x:
            yield row[None].numpy()


def quantize_int8(
    onnx_bytes: bytes, preprocess: Preprocess, objects: Sequence[Tuple[Any, Any]],
) -> Tuple[bytes, Dict[str, Any]]:
    """Post-training static int8 quantisation with ONNX Runtime's tools (QDQ format, per-channel
    int8 weights, uint8 activations, MinMax ranges from the network inputs of ``objects``).

    Returns the quantised graph and a description for the metadata.
    """
    ort = require("onnxruntime", "int8 quantisation")
    from onnxruntime import quantization as q  # part of the onnxruntime package

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self._it = ({"inputs": x} for x in _network_inputs(preprocess, objects))

        def get_next(self):
            return next(self._it, None)

    # Ranges are folded in every few objects, so memory stays that of a few forwards (not every
    # activation of every object). ONNX Runtime finds no data left when the count divides evenly.
    extra: Dict[str, Any] = {"CalibTensorRangeSymmetric": False}
    fold = next((k for k in (4, 3, 5, 7) if len(objects) % k), None)
    if fold is not None:
        extra["CalibMaxIntermediateOutputs"] = fold
    with tempfile.TemporaryDirectory(prefix="dextr-int8-") as tmp:
        src, pre, dst = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        Path(src).write_bytes(onnx_bytes)
        try:
            q.quant_pre_process(src, pre, skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantise the plain graph then
            pre = src
        # The first convolution (it reads the heatmap channel) and the last (its logits decide the
        # mask boundary) stay fp32: they are a sliver of the time and most of the error.
        onnx = require("onnx", "int8 quantisation")
        convs = [n.name for n in onnx.load(pre, load_external_data=False).graph.node if n.op_type == "Conv"]
        exclude = sorted({convs[0], convs[-1]}) if convs else []
        q.quantize_static(
            pre, dst, Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True, nodes_to_exclude=exclude,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
            extra_options=extra,
        )
        data = Path(dst).read_bytes()
    info = {
        "method": "static, QDQ, per-channel int8 weights, uint8 activations, MinMax calibration; "
                  "first and last convolution kept fp32",
        "tool": f"onnxruntime {ort.__version__}",
        "calibration_objects": len(objects),
    }
    return data, info


# -- export and load ---------------------------------------------------------------------------
def _check(model: DextrModel, exported: DextrModel, objects, runtime: str, report: ExportReport) -> None:
    """Compare the exported graph with the PyTorch network on ``objects``."""
    if not objects:
        return
    ref_run = model.runner("torch", "fp32")
    new_run = exported.runner(runtime, "fp32")
    diffs, ious = [], []
    thr = resolve_threshold(None, model.preprocess)
    with torch.inference_mode():
        for x in _network_inputs(model.preprocess, objects):
            a = ref_run(torch.from_numpy(x).to(model.device)).cpu()
            b = new_run(torch.from_numpy(x))
            diffs.append(float((a - b).abs().max()))
            exported_mask, torch_mask = (torch.sigmoid(v)[0, 0].numpy() >= thr for v in (b, a))
            ious.append(iou(exported_mask, torch_mask))
    report.n_check = len(ious)
    report.max_abs_logit_diff = max(diffs)
    report.min_mask_iou = min(ious)
    report.mean_mask_iou = float(np.mean(ious))


def export_onnx(
    model: DextrModel,
    out: PathLike,
    *,
    int8: bool = False,
    calibration: Optional[Sequence[Tuple[Any, Any]]] = None,
    check: Optional[Sequence[Tuple[Any, Any]]] = None,
    opset: Optional[int] = None,
    overwrite: bool = False,
    on_stage: Optional[Callable[[str], None]] = None,
) -> ExportReport:
    """Write ``model`` as an ONNX file that :func:`dextr_lib.load_model` loads back.

    Args:
        model: a PyTorch-backed model (any file ``load_model`` accepts).
        out: the ``.onnx`` file to write (atomically).
        int8: quantise to int8 (static, calibrated on ``calibration``).
        calibration: (image, ``(4, 2)`` points) pairs, e.g. from :func:`calibration_objects`;
            a few dozen objects of the kind the model will see.
        check: (image, points) pairs to compare the exported graph with PyTorch on (ONNX
            Runtime vs PyTorch fp32 logits and masks); default the calibration objects.
        opset: ONNX opset (default: the exporter's).
        overwrite: replace an existing ``out``.
        on_stage: called with a short description as each stage starts (for progress display).

    Raises:
        ExportError: an ONNX model given, or the export failed.
        OutputError: ``out`` exists (and not ``overwrite``).
        MissingExtraError: ``onnx``/``onnxscript``/``onnxruntime`` not installed.
    """
    stage = on_stage or (lambda s: None)
    out = Path(out)
    if model.is_onnx:
        raise ExportError("this model is already an ONNX graph; export the .pt checkpoint it came from")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --force to replace it")
    if int8 and not calibration:
        raise ExportError("int8 quantisation needs calibration objects (--calibration-images GLOB)")
    stage("exporting the network to ONNX")
    data = network_to_onnx(model.net, model.preprocess.target_size, opset, model.preprocess.in_channels)
    quant = None
    if int8:
        stage(f"calibrating int8 on {len(calibration)} objects")
        data, quant = quantize_int8(data, model.preprocess, calibration)
    metadata = onnx_metadata(model, quant)
    data = with_metadata(data, metadata)
    report = ExportReport(path=out, int8=int8, size_bytes=len(data),
                          n_calibration=len(calibration or ()), metadata=metadata)
    stage("checking the exported graph against PyTorch")
    exported = model_from_onnx_bytes(data, source=str(out))
    _check(model, exported, check if check is not None else (calibration or ()), "onnxruntime", report)
    try:
        with atomic_open(out, "wb") as f:
            f.write(data)
    except OSError as e:
        raise ExportError(f"cannot write {out}: {e.strerror or e}") from None
    return report


def model_from_onnx_bytes(data: bytes, source: str = "<onnx>") -> DextrModel:
    """A :class:`DextrModel` running a serialized dextr ONNX graph (files: ``load_model``)."""
    return DextrModel.from_onnx(parse_onnx_model(data, source))


def objects_from_points_file(path: PathLike, n_objects: Optional[int] = None) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(RGB image, points) pairs from an ``objects.json`` (``dextr points-from-mask`` writes the
    paper's extreme points of each mask), at most ``n_objects``, spread over its images.

    Raises:
        DatasetError: no objects with a photo in the file.
    """
    objects = read_objects(path)
    entries = [e for e in objects.images if e.objects and e.image is not None]
    if not entries:
        raise DatasetError(f"{path} has no objects with a photo")
    n = n_objects or objects.n_objects
    per_image = max(1, -(-n // len(entries)))
    out: List[Tuple[np.ndarray, np.ndarray]] = []
    for entry in entries:
        rgb = read_image(entry.image, exif_transpose=objects.exif_transpose)
        out += [(rgb, o.points) for o in entry.objects[:per_image]]
        if len(out) >= n:
            break
    return out[:n]
