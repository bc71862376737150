"""Choosing a torch device from a user's string."""
from __future__ import annotations

from typing import Optional, Union

import torch

from .errors import DeviceError


def resolve_device(spec: Optional[Union[str, torch.device]] = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available, else MPS, else CPU; otherwise check ``spec``.

    Raises:
        DeviceError: unparseable spec, or CUDA/MPS requested where it is not available.
    """
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"unknown device {spec!r}; use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available here; use the 'cpu' device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError(f"device {spec!r} requested but MPS is not available here; use the 'cpu' device")
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device {spec!r}; use cpu, cuda, cuda:N, mps or auto")
    return dev
