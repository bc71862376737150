"""Architecture registry: decorator-registered builders, looked up by name."""
from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List

import torch.nn as nn

from ..errors import UnknownNameError

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable:
    """Register ``fn(*, backbone_weights=None, **kwargs) -> nn.Module`` under ``name``.

    The module maps an ``(N, 4, H, W)`` input to ``(N, 1, H, W)`` logits and exposes
    ``encoder_parameters()`` (the part that ImageNet weights initialise).
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"architecture {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn

    return decorator


def list_architectures(pattern: str = "*") -> List[str]:
    """Registered architecture names matching an fnmatch ``pattern``, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def build_network(name: str, **kwargs) -> nn.Module:
    """Build the network registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown architecture {name!r}; choose one of: {', '.join(list_architectures())}"
        ) from None
    return builder(**kwargs)
