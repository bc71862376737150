"""dextr: Deep Extreme Cut (Maninis et al., CVPR 2018) in PyTorch.

Click the four extreme points of an object, get its mask::

    import dextr_lib
    model = dextr_lib.create_model("resunet18", target_size=128)
    masks = model.predict([image], [points])   # points: (4, 2) [y, x]
"""
from .errors import (
    CheckpointError, ChecksumError, ConfigError, DatasetError, DeviceError, DextrError, DownloadError,
    InvalidImageError, InvalidPointsError, InvalidValueError, MismatchError, UnknownNameError,
)
from .version import __version__

# The rest loads on first use (PEP 562), so importing dextr_lib (and the CLI's --help) does not
# import torch until a model, dataset or training function is asked for.
_LAZY = {
    "list_architectures": ("weights.architectures", "list_architectures"),
    "list_models": ("weights.architectures", "list_architectures"),  # the earlier name; "model" means a DextrModel
    "extreme_points_from_mask": ("core.geometry", "extreme_points_from_mask"),
    "DextrModel": ("model", "DextrModel"),
    "create_model": ("model", "create_model"),
    "load_model": ("model", "load_model"),
    "TrainSettings": ("config", "TrainSettings"),
    "TrainingJob": ("training", "TrainingJob"),
    "training_loop": ("training", "training_loop"),
    "list_pretrained": ("weights.zoo", "list_pretrained"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CheckpointError", "ChecksumError", "ConfigError", "DatasetError", "DeviceError", "DextrError",
    "DextrModel", "DownloadError", "InvalidImageError", "InvalidPointsError", "InvalidValueError",
    "MismatchError",
    "UnknownNameError", "__version__", "create_model", "extreme_points_from_mask",
    "list_architectures", "list_models", "list_pretrained", "load_model", "TrainSettings",
    "TrainingJob", "training_loop",
]
