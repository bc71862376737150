"""Network architectures, registered by name (see :func:`list_architectures`)."""
from . import deeplab, psp, unet  # noqa: F401  (registers the builders)
from ._registry import build_network, list_architectures, register_architecture

__all__ = ["build_network", "list_architectures", "register_architecture"]
