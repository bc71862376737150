"""Network architectures, registered by name (see :func:`list_architectures`).

The built-in families (:mod:`.unet`, :mod:`.psp`, :mod:`.deeplab`) register themselves when the
registry is first used, not when this package is imported: they import torchvision (about 160 MB
of memory and a second of start-up), which a model run by ONNX Runtime or OpenVINO never needs.
"""
from ._registry import build_network, check_architecture, list_architectures, register_architecture

__all__ = ["build_network", "check_architecture", "list_architectures", "register_architecture"]
