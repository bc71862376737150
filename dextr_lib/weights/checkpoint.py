"""Self-describing checkpoints: weights plus plain metadata, never arbitrary pickles.

A checkpoint is a dict loadable with ``torch.load(path, weights_only=True)``::

    {
        "format": "dextr", "format_version": 1, "library_version": "0.2.0",
        "arch": "resunet101",
        "preprocess": {...},          # Preprocess.to_dict()
        "state_dict": {...},          # the network's weights
        "meta": {...},                # plain provenance data (source, training summary)
        # optional, written by training: "training": {optimizer, scheduler, epoch, rng, ...}
    }
"""
from __future__ import annotations

import dataclasses
import math
import mmap
import os
import pickletools
import stat
import zipfile
from typing import IO, Any, Dict, Optional, Union

import torch

from ..errors import CheckpointError, LimitError
from ..utils.fileio import atomic_open, os_error_cause, shown_path
from ..utils.limits import check_checkpoint_bytes, check_target_size
from ..version import __version__

FORMAT = "dextr"
FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``.

    A reader (or a crash at any moment) sees either the old file or the complete new one."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def make_checkpoint(
    arch: str,
    preprocess: Dict[str, Any],
    state_dict: Dict[str, torch.Tensor],
    meta: Optional[Dict[str, Any]] = None,
    **extra: Any,
) -> Dict[str, Any]:
    """Assemble a checkpoint dict (weights moved to CPU)."""
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "arch": arch,
        "preprocess": dict(preprocess),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "meta": dict(meta or {}),
    }
    ckpt.update(extra)
    return ckpt


def read_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load and validate a dextr checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: missing file, unreadable file, or not a dextr checkpoint.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    check_model_file(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a dextr checkpoint loadable with "
            f"weights_only=True ({first})"
        ) from None
    return validate_checkpoint(ckpt, path)


#: Pickle names that let a few bytes allocate gigabytes (``bytearray(3_000_000_000)``); no
#: checkpoint we or the earlier DEXTR implementations wrote references them.
_ALLOCATING_GLOBALS = ("bytearray",)
#: A torch file is a zip of small pickles plus raw tensor data; a legacy (non-zip) torch file is a
#: few pickles (magic number, protocol, system info, the object, storage keys), then raw data.
_LEGACY_PICKLES = 5


def check_model_file(path: Any) -> None:
    """Refuse, before unpickling, a model file that could allocate far more than it holds.

    Checks: a regular file (not a pipe or device), its size and (for zip-format files) its
    unpacked size within the model-size limit (:mod:`dextr_lib.utils.limits`), and no pickle in it
    referencing allocating constructors such as ``bytearray`` (a 35-byte pickle can ask
    ``torch.load(weights_only=True)`` for 3 GB that way).

    Raises:
        CheckpointError: not a regular file, unreadable, or a crafted pickle.
        LimitError: larger than the model-size limit.
    """
    shown = shown_path(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"cannot read model {shown}: not a regular file")
        check_checkpoint_bytes(st.st_size, shown)
        if st.st_size == 0:
            raise CheckpointError(f"cannot read model {shown}: the file is empty")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
                check_checkpoint_bytes(sum(i.file_size for i in infos), shown)
                for info in infos:
                    if info.filename.endswith(".pkl"):
                        with z.open(info) as f:
                            _scan_pickles(f, shown, 1)
        else:
            # mmap: a crafted length field makes read(n) return what is there, not allocate n.
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                _scan_pickles(m, shown, _LEGACY_PICKLES)
    except (CheckpointError, LimitError):
        raise
    except OSError as e:
        raise CheckpointError(f"cannot read model {shown}: {os_error_cause(e)}") from None
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"cannot read model {shown}: damaged zip archive ({e})") from None


def _scan_pickles(f: IO[bytes], shown: str, count: int) -> None:
    """Look at the opcodes (nothing is executed) of the first ``count`` pickles in ``f``."""
    for _ in range(count):
        try:
            for opcode, arg, _at in pickletools.genops(f):
                if isinstance(arg, str) and any(g in arg for g in _ALLOCATING_GLOBALS) and (
                        opcode.name in ("GLOBAL", "INST") or arg in _ALLOCATING_GLOBALS):
                    raise CheckpointError(
                        f"refusing to read model {shown}: its pickle calls {arg.split()[-1]!r}, "
                        "which no model file needs (a crafted file that allocates memory)"
                    )
        except CheckpointError:
            raise
        except Exception:  # not (or no longer) a pickle: raw tensor data, or damage torch reports
            return


def check_preprocess_values(d: Dict[str, Any], path: str) -> None:
    """Value types of a checkpoint's pre-processing settings (ranges are Preprocess's job)."""
    from ..inference.preprocessing import Preprocess

    kinds = {f.name: str(f.type) for f in dataclasses.fields(Preprocess)}
    for key, value in d.items():
        kind = kinds.get(key)
        if kind is None:
            continue  # unknown keys: Preprocess.from_dict names them
        where = f"{path}: preprocess {key}"
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind in ("int", "float"):
            ok = _finite_number(value) and (kind == "float" or float(value).is_integer())
        elif kind.startswith(("Tuple", "tuple")):
            ok = isinstance(value, (list, tuple)) and len(value) <= 16 and all(_finite_number(v) for v in value)
        else:
            ok = True
        if not ok:
            raise CheckpointError(f"{where} has an invalid value {_short(value)} (expected {kind})")
    if "target_size" in d:
        check_target_size(int(d["target_size"]), path)


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_checkpoint(ckpt: Any, path: str = "<checkpoint>") -> Dict[str, Any]:
    """Check the structure of a loaded checkpoint dict: its format, the types of its parts
    (``meta`` a dict, ``state_dict`` string keys to tensors, pre-processing values of the right
    types and finite) and the size of network input it asks for.

    Raises:
        CheckpointError: the message names the file and the bad part.
        LimitError: a ``target_size`` over the limit.
    """
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a dextr checkpoint: expected a dict with format={FORMAT!r}"
        )
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this dextr "
            f"({__version__}) reads versions up to {FORMAT_VERSION}: upgrade dextr"
        )
    for key, kind in (("arch", str), ("preprocess", dict), ("state_dict", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path} is missing {key!r} (expected a {kind.__name__})")
    if ckpt.get("meta") is not None and not isinstance(ckpt["meta"], dict):
        raise CheckpointError(f"{path}: 'meta' must be a dict, got {type(ckpt['meta']).__name__}")
    for key, value in ckpt["state_dict"].items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: the state_dict must map parameter names to tensors, got "
                f"{_short(key)}: {type(value).__name__}"
            )
    check_preprocess_values(ckpt["preprocess"], path)
    return ckpt
