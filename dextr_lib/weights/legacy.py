"""Import checkpoints written by the two earlier DEXTR implementations.

* ``dextr`` 0.1.2 files are whole pickled ``DextrModel`` objects (classes from ``dextr.*``,
  ``torchvision`` and ``torch.nn``). They are read with a restricted unpickler: classes from
  those packages become inert stand-ins that only record their pickled state, tensors are rebuilt
  by torch's own rebuild functions, and any other global (``os.system``, ``builtins.eval``, ...)
  is refused with a :class:`CheckpointError`. No code from the file runs and the ``dextr``
  package is not needed. The stand-ins' state gives a flat state dict plus ``padding``,
  ``blob_sigma`` and the target size.
* Original DEXTR-PyTorch files are plain state dicts of a DeepLab-v2 ResNet-101 with a PSP head
  (our ``psp101``), possibly saved from ``nn.DataParallel`` (``module.`` prefix).

Both become our checkpoint dict (see :mod:`dextr_lib.weights.checkpoint`) with the matching
pre-processing profile (``dextr012`` / ``original``). Telling the formats apart and loading any
of them is :mod:`dextr_lib.weights.loading`'s job; this module only reads the old ones.
"""
from __future__ import annotations

import _compat_pickle
import os
import pickle
import re
import types
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import CheckpointError, LimitError
from ..inference.preprocessing import get_profile
from . import checkpoint as ckpt_io

PathLike = Union[str, os.PathLike]

#: Packages whose classes are replaced by inert stand-ins (never imported, never called).
_STANDIN_PREFIXES = ("dextr.", "torchvision.", "torch.nn.modules.")
_CLASS_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for raw bytes (array data), nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("refusing _codecs.encode with unexpected arguments in a pickle")
    return text.encode("latin1")


def _bytearray_copy(*args: Any) -> bytearray:
    """``bytearray`` of existing data only: ``bytearray(3_000_000_000)`` from a 35-byte pickle
    would allocate 3 GB."""
    if not args or not isinstance(args[0], (str, bytes, bytearray)):
        raise CheckpointError("refusing bytearray() of a size in a pickle (it only allocates memory)")
    return bytearray(*args) if not isinstance(args[0], str) else bytearray(args[0], *args[1:2] or ("latin1",))


def _real_globals() -> Dict[Tuple[str, str], Any]:
    """Callables the pickle may really use: tensor/array rebuilders and plain containers."""
    allowed: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "bytearray"): _bytearray_copy,
        ("_codecs", "encode"): _latin1_bytes,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for name in ("_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy"):
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for dt in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType", "UInt8DType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, dt):
            allowed[("numpy.dtypes", dt)] = getattr(np.dtypes, dt)
    for dtype_name in ("float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool"):
        allowed[("torch", dtype_name)] = getattr(torch, dtype_name)
    return allowed


class StandIn:
    """An inert object standing for a pickled instance of ``module.qualname``.

    It records constructor arguments and pickled state and does nothing else."""

    module = "?"
    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        obj.__dict__["_state"] = None
        return obj

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            merged = dict(state[0] or {})
            merged.update(state[1])
            state = merged
        self.__dict__["_state"] = state

    @property
    def state(self) -> Dict[str, Any]:
        s = self.__dict__.get("_state")
        return s if isinstance(s, dict) else {}

    def __repr__(self) -> str:
        return f"<stand-in for {self.module}.{self.qualname}>"


_STANDINS: Dict[Tuple[str, str], type] = {}


def _standin(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STANDINS:
        _STANDINS[key] = type(name, (StandIn,), {"module": module, "qualname": name})
    return _STANDINS[key]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for ``dextr`` 0.1.2 files: stand-ins for allow-listed classes, real objects only
    for tensor/array rebuilders, everything else refused."""

    _real: Optional[Dict[Tuple[str, str], Any]] = None

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles (torch.save's default) name Python 2 modules (``__builtin__``).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if RestrictedUnpickler._real is None:
            RestrictedUnpickler._real = _real_globals()
        real = RestrictedUnpickler._real.get((module, name))
        if real is not None:
            return real
        if module.startswith(_STANDIN_PREFIXES) and _CLASS_NAME.match(name):
            return _standin(module, name)
        raise CheckpointError(
            f"refusing to load {module}.{name} from a pickled checkpoint: only dextr 0.1.2 "
            "models (classes from dextr, torchvision and torch.nn) are imported, and no code "
            "from the file is run"
        )


def _restricted_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("dextr_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]

    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()

    mod.load = load  # type: ignore[attr-defined]
    mod.__name__ = "pickle"  # torch.load checks the name for its legacy-format magic number
    return mod


# -- dextr 0.1.2 -------------------------------------------------------------------------------
#: Deepest module nesting a real network has is about 10; a crafted file may nest thousands.
_MAX_MODULE_DEPTH = 64


def _flat_state_dict(module: StandIn, source: str = "<file>") -> "OrderedDict[str, torch.Tensor]":
    """Rebuild ``nn.Module.state_dict()`` from a stand-in's recorded ``__dict__``.

    Iterative, and refuses what no real network has: a module graph with a cycle or nested
    deeper than ``_MAX_MODULE_DEPTH``, non-string names, values that are not tensors."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    seen = set()
    stack = [(module, "", 0)]
    while stack:
        mod, prefix, depth = stack.pop()
        if id(mod) in seen:
            raise CheckpointError(f"{source}: the pickled network's modules form a cycle")
        if depth > _MAX_MODULE_DEPTH:
            raise CheckpointError(f"{source}: the pickled network nests modules {depth} deep")
        seen.add(id(mod))
        state = mod.state
        non_persistent = state.get("_non_persistent_buffers_set") or set()
        entries = []
        for group in ("_parameters", "_buffers", "_modules"):
            values = state.get(group) or {}
            if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
                raise CheckpointError(f"{source}: {prefix or 'the network'} has a malformed {group}")
            entries.append(values)
        params, buffers, children = entries
        for name, p in params.items():
            if p is not None:
                out[prefix + name] = _tensor(p, prefix + name, source).detach()
        for name, b in buffers.items():
            if b is not None and (not isinstance(non_persistent, (set, frozenset)) or name not in non_persistent):
                out[prefix + name] = _tensor(b, prefix + name, source)
        for name, child in reversed(list(children.items())):
            if isinstance(child, StandIn):
                stack.append((child, f"{prefix}{name}.", depth + 1))
    return out


def _tensor(value: Any, name: str, source: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{source}: {name} is a {type(value).__name__}, not a tensor")
    return value


def _children(module: StandIn) -> Dict[str, Any]:
    return dict(module.state.get("_modules") or {})


def _arch_of(net: StandIn, source: str) -> str:
    kind = type(net).__name__
    if kind == "ResUNet":
        try:
            layers = [_children(_children(net)["base_model"])[f"layer{i}"] for i in range(1, 5)]
            blocks = tuple(len(_children(layer)) for layer in layers)
            block = type(_children(layers[0])["0"]).__name__
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError(f"{source}: ResUNet without a ResNet base_model") from None
        depth = {
            ("BasicBlock", (2, 2, 2, 2)): 18, ("BasicBlock", (3, 4, 6, 3)): 34,
            ("Bottleneck", (3, 4, 6, 3)): 50, ("Bottleneck", (3, 4, 23, 3)): 101,
        }.get((block, blocks))
        if depth is None:
            raise CheckpointError(
                f"{source}: unsupported ResUNet encoder ({block}, blocks per stage {blocks})"
            )
        return f"resunet{depth}"
    if kind == "DenseUNet":
        return "denseunet161"
    if kind == "DeepLabV3":
        return "deeplab3"
    raise CheckpointError(
        f"{source}: unsupported dextr 0.1.2 network class {net.module}.{kind}; expected "
        "ResUNet, DenseUNet or DeepLabV3"
    )


_DROP_PREFIXES = ("base_model.fc.", "base_model.classifier.", "aux_classifier.")


def _complete_bn_counters(weights: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """Add the ``num_batches_tracked`` counters that files from PyTorch < 0.4.1 lack."""
    for key in [k for k in weights if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        if counter not in weights:
            weights[counter] = torch.tensor(0, dtype=torch.long)
    return weights


def convert_dextr012(obj: Any, source: str = "<file>") -> Dict[str, Any]:
    """Turn a restricted-unpickled ``dextr`` 0.1.2 ``DextrModel`` into our checkpoint dict."""
    if not (isinstance(obj, StandIn) and type(obj).__name__ == "DextrModel"):
        raise CheckpointError(
            f"{source}: expected a pickled dextr 0.1.2 DextrModel, found {obj!r}"
        )
    state = obj.state
    net = state.get("net")
    if not isinstance(net, StandIn):
        raise CheckpointError(f"{source}: the pickled DextrModel has no network")
    arch = _arch_of(net, source)
    weights = _complete_bn_counters(OrderedDict(
        (k, v) for k, v in _flat_state_dict(net, source).items() if not k.startswith(_DROP_PREFIXES)
    ))
    size = state.get("target_size_yx")
    try:
        ty, tx = (int(v) for v in size)
    except (TypeError, ValueError, OverflowError):
        raise CheckpointError(f"{source}: bad target_size_yx {size!r}") from None
    if ty != tx:
        raise CheckpointError(
            f"{source}: non-square target size {ty}x{tx} is not supported (dextr uses square crops)"
        )
    try:
        padding = float(state["padding"])
        blob_sigma = float(state["blob_sigma"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise CheckpointError(f"{source}: the pickled DextrModel lacks padding/blob_sigma") from None
    ckpt_io.check_preprocess_values({"target_size": ty, "padding": padding, "blob_sigma": blob_sigma}, source)
    try:
        preprocess = get_profile("dextr012", target_size=ty, padding=padding, blob_sigma=blob_sigma)
    except (TypeError, ValueError) as e:
        if isinstance(e, LimitError):
            raise
        raise CheckpointError(f"{source}: invalid pre-processing settings: {e}") from None
    meta = {"source": f"converted from dextr 0.1.2 file {os.path.basename(source)}",
            "converted_from": "dextr012"}
    return ckpt_io.make_checkpoint(arch, preprocess.to_dict(), weights, meta)


# -- original DEXTR-PyTorch ----------------------------------------------------------------------
def is_original_state_dict(obj: Any) -> bool:
    """Whether ``obj`` looks like an original DEXTR-PyTorch state dict (tensors, a ``layer5``)."""
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ) and any(k.split("module.", 1)[-1].startswith("layer5.") for k in obj)


def convert_original(state_dict: Dict[str, torch.Tensor], source: str = "<file>") -> Dict[str, Any]:
    """An original DEXTR-PyTorch state dict (``module.`` prefix stripped) -> our checkpoint dict."""
    weights = _complete_bn_counters(OrderedDict(
        (k[len("module."):] if k.startswith("module.") else k, v) for k, v in state_dict.items()
    ))
    meta = {"source": f"converted from DEXTR-PyTorch file {os.path.basename(source)}",
            "converted_from": "original"}
    return ckpt_io.make_checkpoint("psp101", get_profile("original").to_dict(), weights, meta)


def read_dextr012(path: PathLike) -> Dict[str, Any]:
    """Read a pickled ``dextr`` 0.1.2 model file (restricted unpickler) as our checkpoint dict.

    Raises:
        CheckpointError: unreadable file, not a 0.1.2 model, or a pickle referencing anything
            outside the allow-list.
    """
    path = os.fspath(path)
    return convert_dextr012(_load_restricted(path), path)


def _load_restricted(path: str) -> Any:
    try:
        return torch.load(
            path, map_location="cpu", pickle_module=_restricted_pickle_module(), weights_only=False
        )
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot read {path}: not a dextr checkpoint nor a readable legacy model ({first})"
        ) from None
