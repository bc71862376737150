"""Architecture registry: decorator-registered builders, looked up by name."""
from __future__ import annotations

import fnmatch
import importlib
from typing import Callable, Dict, List

import torch.nn as nn

from ...errors import UnknownNameError

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}

#: The modules of this package whose builders are registered on first use of the registry.
_BUILTIN_FAMILIES = ("unet", "psp", "deeplab")
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True  # first: their own register_architecture calls come back here
        for family in _BUILTIN_FAMILIES:
            importlib.import_module(f"{__package__}.{family}")


def register_architecture(name: str) -> Callable:
    """Register ``fn(*, backbone_weights=None, **kwargs) -> nn.Module`` under ``name``.

    The module maps an ``(N, 4, H, W)`` input to ``(N, 1, H, W)`` logits and exposes
    ``encoder_parameters()`` (the part that ImageNet weights initialise).
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _load_builtins()  # a built-in name is taken even before anything was built
        if name in _BUILDERS:
            raise ValueError(f"architecture {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn

    return decorator


def list_architectures(pattern: str = "*") -> List[str]:
    """Registered architecture names matching an fnmatch ``pattern``, sorted."""
    _load_builtins()
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def build_network(name: str, **kwargs) -> nn.Module:
    """Build the network registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
    """
    return _BUILDERS[check_architecture(name)](**kwargs)


def check_architecture(name: str) -> str:
    """``name`` when an architecture is registered under it.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the valid names.
    """
    _load_builtins()
    if name not in _BUILDERS:
        raise UnknownNameError.of("architecture", name, list_architectures())
    return name
