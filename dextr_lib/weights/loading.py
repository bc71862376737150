"""From a ``--model`` spec to a checkpoint: zoo names, our files and legacy files, in one place.

A *model spec* is a path to a model file or a zoo name (:mod:`dextr_lib.weights.zoo`). A model file is
one of three formats, told apart here and nowhere else:

* ours (:mod:`dextr_lib.weights.checkpoint`): a dict with ``format = "dextr"``, read with
  ``torch.load(weights_only=True)``;
* an original DEXTR-PyTorch state dict (psp101), possibly wrapped in ``{"state_dict": ...}``;
* a pickled ``dextr`` 0.1.2 model, read by :mod:`dextr_lib.weights.legacy`'s restricted unpickler
  (only when ``weights_only=True`` cannot read the file).

Legacy files become our checkpoint dict in memory; :func:`convert` writes one to disk. A fourth
kind, an ``.onnx`` file written by ``dextr export`` (:mod:`dextr_lib.workflows.export`), holds a network
graph for ONNX Runtime / OpenVINO, not weights: :func:`read_onnx_model` reads it and its
pre-processing metadata.
:func:`dextr_lib.load_model` (in :mod:`dextr_lib.model`, beside ``create_model``) builds a
:class:`~dextr_lib.model.DextrModel` from what :func:`resolve_checkpoint` returns; this module
does not know the model class, so the model module can use it without an import cycle.
"""
from __future__ import annotations

import itertools
import json
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..errors import CheckpointError, LimitError, did_you_mean
from ..inference.preprocessing import Preprocess
from ..inference.runtimes import require
from ..utils.fileio import os_error_cause, shown_path
from ..utils.limits import check_checkpoint_bytes
from . import checkpoint as ckpt_io
from . import legacy, zoo
from .architectures import build_network
from .surgery import add_negative_channel

PathLike = Union[str, os.PathLike]
ProgressFn = Optional[Callable[[int, Optional[int]], None]]


@dataclass
class ResolvedCheckpoint:
    """A checkpoint dict and where it came from.

    Attributes:
        checkpoint: our checkpoint dict (validated structure).
        source: the file it was read from.
        note: ``None`` for our own format, else a sentence saying what it was converted from.
        pretrained: the zoo name, when the spec was one.
    """

    checkpoint: Dict[str, Any]
    source: str
    note: Optional[str] = None
    pretrained: Optional[str] = None


def read_model_file(path: PathLike) -> Tuple[Dict[str, Any], Optional[str]]:
    """Read a model file of any supported format as our checkpoint dict.

    Returns:
        ``(checkpoint_dict, note)``: ``note`` is ``None`` for our own format, else a sentence
        saying what the file was converted from (for the CLI to show).

    Raises:
        CheckpointError: missing, unreadable or unsupported file, or a pickle referencing
            anything outside the allow-list.
    """
    path = os.fspath(path)
    check_model_path(path)
    ckpt_io.check_model_file(path)  # size limits, no allocating pickles: before any unpickling
    name = os.path.basename(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not loadable with weights_only: maybe a dextr 0.1.2 pickle
        return legacy.read_dextr012(path), f"converted from dextr 0.1.2 model file {name}"
    if isinstance(obj, dict) and obj.get("format") == ckpt_io.FORMAT:
        return ckpt_io.validate_checkpoint(obj, path), None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "format" not in obj:
        obj = obj["state_dict"]
    if legacy.is_original_state_dict(obj):
        return legacy.convert_original(obj, path), f"converted from DEXTR-PyTorch model file {name}"
    raise CheckpointError(
        f"{path} is not a dextr checkpoint, a dextr 0.1.2 model or a DEXTR-PyTorch state dict"
    )


def check_model_path(path: PathLike) -> None:
    """Refuse, before reading a byte, a model path that is not a regular file within the
    model-size limit (:mod:`dextr_lib.utils.limits`), saying what it is instead.

    Raises:
        CheckpointError: missing, a folder, a pipe/socket/device, or not readable.
        LimitError: larger than the model-size limit.
    """
    shown = shown_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"model not found: {shown} (no such file)") from None
    except OSError as e:
        raise CheckpointError(f"cannot read model {shown}: {os_error_cause(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"model {shown} is a folder, not a model file; give the file itself")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"model {shown} is not a regular file (a pipe, socket or device); "
                              "give a model file")
    check_checkpoint_bytes(st.st_size, shown)


#: ``metadata_props`` keys of a dextr ONNX file (written by :func:`dextr_lib.workflows.export.export_onnx`).
ONNX_META_FORMAT = "dextr.format"
ONNX_META_ARCH = "dextr.arch"
ONNX_META_PREPROCESS = "dextr.preprocess"
ONNX_META_META = "dextr.meta"


def is_onnx_spec(spec: Any) -> bool:
    """Whether a model spec names an ONNX file (by its ``.onnx`` suffix)."""
    return isinstance(spec, (str, os.PathLike)) and os.fspath(spec).lower().endswith(".onnx")


@dataclass
class OnnxModelFile:
    """What a dextr ONNX file holds: the serialized graph and its pre-processing and provenance."""

    data: bytes
    preprocess: Preprocess
    arch: str
    meta: Dict[str, Any]
    source: str
    #: the file it was read from (None: bytes made in memory); runtimes read the graph from
    #: there, so a loaded model does not hold a second copy of its weights
    path: Optional[str] = None


def parse_onnx_model(data: bytes, source: str = "<onnx>") -> OnnxModelFile:
    """Read a serialized dextr ONNX graph's metadata.

    Raises:
        CheckpointError: not a readable ONNX graph, or one without dextr metadata.
        MissingExtraError: the ``onnx`` package is not installed.
    """
    onnx = require("onnx", "loading an ONNX model")
    try:
        proto = onnx.load_from_string(data)
    except Exception:  # protobuf's DecodeError and friends
        raise CheckpointError(f"{source} is not a readable ONNX file") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if ONNX_META_PREPROCESS not in props:
        raise CheckpointError(f"{source} is an ONNX file without dextr metadata; export it with "
                              "`dextr export MODEL OUT.onnx`")
    _refuse_external_data(onnx, proto, source)
    try:
        preprocess = json.loads(props[ONNX_META_PREPROCESS])
        meta = json.loads(props.get(ONNX_META_META, "{}"))
        for key, value in ((ONNX_META_PREPROCESS, preprocess), (ONNX_META_META, meta)):
            if not isinstance(value, dict):
                raise TypeError(f"{key} must be a JSON object, got {type(value).__name__}")
        # the checkpoints' checks: value types, and target_size within the limit
        ckpt_io.check_preprocess_values(preprocess, source)
        preprocess = Preprocess.from_dict(preprocess)
    except (TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{source} has invalid dextr metadata: {str(e)[:200]}") from None
    _check_input_shape(proto, preprocess.target_size, source)
    meta.setdefault("source", source)
    return OnnxModelFile(data, preprocess, props.get(ONNX_META_ARCH, "unknown"), meta, source)


def _refuse_external_data(onnx: Any, proto: Any, source: str) -> None:
    """``dextr export`` writes one self-contained file: tensors kept in other files (which a
    runtime would open by the names the graph gives, anywhere on disk) are refused."""
    for tensor in _onnx_tensors(proto.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            where = {e.key: e.value for e in tensor.external_data}.get("location", "?")
            raise CheckpointError(
                f"{source} keeps tensor {tensor.name[:80]!r} in another file ({where[:200]!r}); dextr "
                "loads only self-contained ONNX files, as `dextr export` writes them"
            )


def _check_input_shape(proto: Any, target_size: int, source: str) -> None:
    """The graph's input must take ``(N, C, target_size, target_size)`` crops where its sides
    are fixed, else every prediction would fail inside the runtime."""
    inputs = list(proto.graph.input)
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    sides = [d.dim_value for d in list(dims)[2:] if d.HasField("dim_value")]
    if len(inputs) != 1 or len(dims) != 4 or any(side != target_size for side in sides):
        shape = "x".join(str(d.dim_value) if d.HasField("dim_value") else "?" for d in dims)
        raise CheckpointError(
            f"{source}: its graph takes {len(inputs)} input(s) of shape {shape or '?'}, not one "
            f"(N, C, {target_size}, {target_size}) input as its metadata's target_size says"
        )


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    """The tensors of an ONNX graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _onnx_tensors(attr.g)
            for sub in attr.graphs:
                yield from _onnx_tensors(sub)


def read_onnx_model(path: PathLike) -> OnnxModelFile:
    """Read an ONNX file written by ``dextr export`` (see :func:`parse_onnx_model`), after the
    checkpoints' file checks (:func:`check_model_path`: a regular file within the size limit)."""
    check_model_path(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    return replace(parse_onnx_model(data, os.fspath(path)), path=os.fspath(path))


def resolve_checkpoint(
    spec: Union[PathLike, str],
    *,
    cache_dir: Optional[PathLike] = None,
    mirror: Optional[str] = None,
    on_progress: ProgressFn = None,
) -> ResolvedCheckpoint:
    """The checkpoint a model spec names: an existing file first, else a zoo name (downloaded
    into the cache when missing).

    Raises:
        CheckpointError: neither a file nor a zoo name, or an unreadable/unsupported file.
        DownloadError, ChecksumError: a zoo download failed.
    """
    pretrained = None
    if isinstance(spec, (str, os.PathLike)) and os.path.isfile(spec):
        path = Path(spec)
    elif zoo.is_pretrained_name(spec):
        pretrained = str(spec)
        path = zoo.fetch_pretrained(pretrained, cache_dir=cache_dir, mirror=mirror, on_progress=on_progress)
    elif isinstance(spec, (str, os.PathLike)) and os.path.lexists(spec):
        path = Path(spec)  # a folder, a pipe, a broken link: read_model_file says which
    else:
        raise CheckpointError(
            f"model not found: {spec!r} is neither a checkpoint file nor a pretrained model "
            f"name{did_you_mean(spec, zoo.list_pretrained())}; the names: {', '.join(zoo.list_pretrained())}"
        )
    ckpt, note = read_model_file(path)
    if pretrained is not None:
        ckpt.setdefault("meta", {})["pretrained"] = pretrained
    return ResolvedCheckpoint(ckpt, os.fspath(path), note, pretrained)


def network_from_checkpoint(ckpt: Dict[str, Any], source: str = "<checkpoint>") -> Tuple[nn.Module, Preprocess]:
    """Build the checkpoint's architecture with its weights, and its pre-processing profile.

    Raises:
        CheckpointError: not a dextr checkpoint, bad pre-processing settings, or weights that do
            not fit the architecture.
    """
    ckpt = ckpt_io.validate_checkpoint(ckpt, source)
    try:
        preprocess = Preprocess.from_dict(ckpt["preprocess"])
    except LimitError:
        raise
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{source} has invalid pre-processing settings: {e}") from None
    net = _network_to_fill(ckpt["arch"], ckpt["state_dict"], preprocess.negative_clicks)
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{source}: weights do not fit architecture {ckpt['arch']!r}: "
            f"{str(e).splitlines()[0]}"
        ) from None
    return net, preprocess


def _network_to_fill(arch: str, state_dict: Dict[str, Any], negative_clicks: bool = False) -> nn.Module:
    """``arch`` on the CPU with uninitialised tensors when ``state_dict`` holds every one of them
    (built on the meta device, then allocated), else randomly initialised as usual; with the
    negative-click input channel when the model takes one.

    Skipping the random initialisation of weights that are overwritten at once makes loading
    faster, and left less freed memory behind for the allocator to keep: resunet101 predicting
    at 512 px peaked at 1278-1301 MiB instead of 1315-1397 (the dextr 0.1.2 package: 1264-1283).
    """
    def build() -> nn.Module:
        net = build_network(arch)
        return add_negative_channel(net) if negative_clicks else net

    with torch.device("meta"):
        net = build()
    tensors = {name for name, _ in itertools.chain(net.named_parameters(), net.named_buffers())}
    if not tensors <= set(state_dict):  # something the file does not fill: initialise it
        return build()
    return net.to_empty(device="cpu")


def convert(src: PathLike, dst: PathLike) -> Optional[str]:
    """Convert any supported model file ``src`` to our format at ``dst`` (written atomically).

    A converted file is loaded into its architecture before anything is written.

    Returns:
        The conversion note (``None`` when ``src`` was already in our format).
    """
    ckpt, note = read_model_file(src)
    if note is not None:
        network_from_checkpoint(ckpt, os.fspath(src))
    ckpt_io.atomic_torch_save(ckpt, dst)
    return note
