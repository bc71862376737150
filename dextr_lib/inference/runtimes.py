"""Runtimes: the one seam where the network runs.

A runner maps a batch of ``(N, 4, T, T)`` float32 inputs (RGB + extreme-point heatmap, as
:meth:`~dextr_lib.inference.preprocessing.Preprocess.make_inputs` builds them) to ``(N, 1, T, T)`` float32
logits. Everything before (crops, heatmaps) and after (sigmoid, paste-back) is shared by all
runtimes in :class:`~dextr_lib.inference.engine.Engine`; only this call differs:

- ``torch``: the PyTorch module, ``channels_last``, bf16/fp16 through autocast;
- ``onnxruntime``: an ONNX graph in ONNX Runtime's CPU provider (``pip install dextr[onnx]``);
- ``openvino``: the same ONNX graph compiled by OpenVINO for the CPU (``pip install dextr[openvino]``).
"""
from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Any, Optional, Union

import torch
import torch.nn as nn

from ..errors import CheckpointError, DeviceError, ExportError, MissingExtraError, UnknownNameError
from .device import module_device

#: Runtime names accepted by ``runtime=`` and ``--runtime``.
RUNTIMES = ("torch", "onnxruntime", "openvino")

_EXTRA = {"onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx", "openvino": "openvino"}


def require(module: str, purpose: str) -> Any:
    """Import an optional dependency, or raise :class:`MissingExtraError` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = _EXTRA.get(module.split(".")[0], module)
        raise MissingExtraError(
            f"{purpose} needs the {module.split('.')[0]} package; install it with: "
            f"pip install 'dextr[{extra}]'"
        ) from None


def check_runtime(name: str) -> str:
    """``name`` if it is a known runtime, else :class:`UnknownNameError`."""
    if name not in RUNTIMES:
        raise UnknownNameError.of("runtime", name, RUNTIMES)
    return name


class Runner:
    """Base of the runners: ``runner(inputs) -> logits`` (see the module docstring)."""

    #: runtime name, one of :data:`RUNTIMES`.
    name = ""

    def __init__(self, precision: str):
        #: the precision it runs in (``fp32``, ``bf16``, ``fp16``), already resolved.
        self.precision = precision

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r})"


class TorchRunner(Runner):
    """The PyTorch network on its device; NHWC (``channels_last``) convolutions, which oneDNN and
    recent GPUs run about 30% faster with unchanged values."""

    name = "torch"

    def __init__(self, net: nn.Module, precision: str = "fp32"):
        super().__init__(precision)
        self.net = net
        self._dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        # Outside any inference mode: the converted parameters must stay usable for training.
        with torch.inference_mode(False):
            net.to(memory_format=torch.channels_last)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.contiguous(memory_format=torch.channels_last)
        amp = (torch.autocast(x.device.type, dtype=self._dtype) if self._dtype is not None
               else contextlib.nullcontext())
        with amp:
            return self.net(x).float()


class OnnxRuntimeRunner(Runner):
    """An ONNX graph (serialized ``bytes``, or the path of its file) in ONNX Runtime on the CPU,
    fp32 (int8 graphs run their quantised operators)."""

    name = "onnxruntime"

    def __init__(self, graph: Union[bytes, str], precision: str = "fp32", threads: Optional[int] = None):
        super().__init__(precision)
        ort = require("onnxruntime", "the onnxruntime runtime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        with _refusal(self.name, graph):
            self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run([self._output], {self._input: x})[0])


class OpenVinoRunner(Runner):
    """An ONNX graph compiled by OpenVINO for the CPU, in fp32 or (where the CPU has
    AVX512-BF16/AMX) bf16; int8 (QDQ) graphs run OpenVINO's int8 kernels."""

    name = "openvino"

    def __init__(self, graph: Union[bytes, str], precision: str = "fp32", threads: Optional[int] = None):
        super().__init__(precision)
        ov = require("openvino", "the openvino runtime")
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        }
        with _refusal(self.name, graph):
            model = core.read_model(graph) if isinstance(graph, str) else core.read_model(graph, b"")
            self.compiled = core.compile_model(model, "CPU", config)
        self._request = self.compiled.create_infer_request()

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self._request.infer({0: x})
        return torch.from_numpy(next(iter(out.values())).copy())


@contextlib.contextmanager
def _refusal(runtime: str, graph: Union[bytes, str]):
    """A graph that passed dextr's load checks but that the runtime refuses (an operator it has
    no kernel for, a malformed node) is a :class:`CheckpointError` of one line, not the
    runtime's own exception types and multi-line reports."""
    try:
        yield
    except Exception as e:  # each runtime raises its own (pybind, RuntimeError) types
        what = graph if isinstance(graph, str) else "the ONNX model"
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # ONNX Runtime says it on its first line, OpenVINO after a 'Check ... failed' preamble.
        reason = next((line for line in reversed(lines) if not line.endswith(":")), type(e).__name__)
        reason = reason.split(" failed:", 1)[-1].lstrip("- ")  # ORT's "Load model from <path> failed:"
        raise CheckpointError(f"{runtime} cannot run {what}: {reason[:300]}") from e


def make_runner(
    runtime: str, precision: str, device: torch.device,
    net: Optional[nn.Module] = None, onnx_graph: Union[bytes, str, None] = None,
) -> Runner:
    """The runner of ``runtime`` for a network given as a module (torch) or an ONNX graph (the
    others: its bytes, or the path of its file).

    Raises:
        DeviceError: onnxruntime/openvino on a device other than the CPU.
    """
    check_runtime(runtime)
    if runtime == "torch":
        assert net is not None
        return TorchRunner(net, precision)
    if device.type != "cpu":
        raise DeviceError(f"runtime {runtime!r} runs on the CPU here; use the cpu device or the torch runtime")
    assert onnx_graph is not None
    cls = OnnxRuntimeRunner if runtime == "onnxruntime" else OpenVinoRunner
    return cls(onnx_graph, precision)


def network_to_onnx(net: nn.Module, target_size: int, opset: Optional[int] = None,
                    in_channels: int = 4) -> bytes:
    """Export ``net`` to a serialized ONNX graph with the ``torch.onnx`` dynamo exporter: input
    ``inputs`` ``(batch, in_channels, T, T)`` with a dynamic batch dimension (5 channels for a
    network that takes negative clicks), output ``logits``.

    Raises:
        MissingExtraError: onnx/onnxscript not installed.
        ExportError: the exporter failed on this network.
    """
    require("onnxscript", "ONNX export")
    onnx = require("onnx", "ONNX export")
    was_training = net.training
    device = module_device(net)
    # the exporter wants contiguous weights; a torch runner made before keeps its channels_last
    was_channels_last = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                            and not p.is_contiguous() for p in net.parameters())
    net.eval()
    example = torch.zeros(2, in_channels, target_size, target_size, device=device)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own deprecation chatter
            program = torch.onnx.export(
                net.to(memory_format=torch.contiguous_format), (example,), dynamo=True,
                dynamic_shapes=({0: batch},), input_names=["inputs"], output_names=["logits"],
                opset_version=opset, optimize=True, verbose=False,
            )
    except Exception as e:  # the exporter raises many types; the user needs the first line
        raise ExportError(f"ONNX export of the network failed: {str(e).splitlines()[0]}") from e
    finally:
        net.train(was_training)
        if was_channels_last:
            with torch.inference_mode(False):
                net.to(memory_format=torch.channels_last)
    proto = program.model_proto
    return proto.SerializeToString() if isinstance(proto, onnx.ModelProto) else onnx.ModelProto.SerializeToString(proto)
