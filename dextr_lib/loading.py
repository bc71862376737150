"""From a ``--model`` spec to a checkpoint: zoo names, our files and legacy files, in one place.

A *model spec* is a path to a model file or a zoo name (:mod:`dextr_lib.zoo`). A model file is
one of three formats, told apart here and nowhere else:

* ours (:mod:`dextr_lib.checkpoint`): a dict with ``format = "dextr"``, read with
  ``torch.load(weights_only=True)``;
* an original DEXTR-PyTorch state dict (psp101), possibly wrapped in ``{"state_dict": ...}``;
* a pickled ``dextr`` 0.1.2 model, read by :mod:`dextr_lib.legacy`'s restricted unpickler
  (only when ``weights_only=True`` cannot read the file).

Legacy files become our checkpoint dict in memory; :func:`convert` writes one to disk.
:func:`dextr_lib.load_model` (in :mod:`dextr_lib.model`, beside ``create_model``) builds a
:class:`~dextr_lib.model.DextrModel` from what :func:`resolve_checkpoint` returns; this module
does not know the model class, so the model module can use it without an import cycle.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn

from . import checkpoint as ckpt_io
from . import legacy, zoo
from .architectures import build_network
from .errors import CheckpointError, LimitError
from .preprocessing import Preprocess

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
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
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
    else:
        raise CheckpointError(
            f"model not found: {spec!r} is neither a checkpoint file nor a pretrained model "
            f"name ({', '.join(zoo.list_pretrained())})"
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
    net = build_network(ckpt["arch"])
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{source}: weights do not fit architecture {ckpt['arch']!r}: "
            f"{str(e).splitlines()[0]}"
        ) from None
    return net, preprocess


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
