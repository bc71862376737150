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

import os
from typing import Any, Dict, Optional, Union

import torch

from .errors import CheckpointError
from .fileio import atomic_open
from .version import __version__

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
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a dextr checkpoint loadable with "
            f"weights_only=True ({first})"
        ) from None
    return validate_checkpoint(ckpt, path)


def validate_checkpoint(ckpt: Any, path: str = "<checkpoint>") -> Dict[str, Any]:
    """Check the structure of a loaded checkpoint dict."""
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
    return ckpt
