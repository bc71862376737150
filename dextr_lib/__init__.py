"""dextr: Deep Extreme Cut (Maninis et al., CVPR 2018) in PyTorch.

Click the four extreme points of an object, get its mask::

    import dextr_lib
    model = dextr_lib.create_model("resunet18", target_size=128)
    masks = model.predict([image], [points])   # points: (4, 2) [y, x]
"""
from .architectures import list_architectures
from .errors import (
    CheckpointError,
    ChecksumError,
    ConfigError,
    DatasetError,
    DeviceError,
    DextrError,
    DownloadError,
    InvalidImageError,
    InvalidPointsError,
    InvalidValueError,
    MismatchError,
    UnknownNameError,
)
from .geometry import extreme_points_from_mask
from .model import DextrModel, create_model, load_model
from .version import __version__
from .config import TrainSettings
from .training import TrainingJob, training_loop
from .zoo import list_pretrained

#: The earlier name of :func:`list_architectures`, kept as an alias ("model" means a DextrModel).
list_models = list_architectures

__all__ = [
    "CheckpointError", "ChecksumError", "ConfigError", "DatasetError", "DeviceError", "DextrError",
    "DextrModel", "DownloadError", "InvalidImageError", "InvalidPointsError", "InvalidValueError",
    "MismatchError",
    "UnknownNameError", "__version__", "create_model", "extreme_points_from_mask",
    "list_architectures", "list_models", "list_pretrained", "load_model", "TrainSettings",
    "TrainingJob", "training_loop",
]
