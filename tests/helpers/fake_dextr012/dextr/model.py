"""``DextrModel`` with ``dextr`` 0.1.2's attributes (including its name-mangled transforms)."""
from torchvision.transforms import Compose

from dextr.data_pipeline import dextr_transforms


class DextrModel(object):
    def __init__(self, net, target_size_yx, padding, blob_sigma):
        self.net = net
        self.target_size_yx = target_size_yx
        self.padding = padding
        self.blob_sigma = blob_sigma
        self.__inference_transforms = Compose([
            dextr_transforms.DextrCropWithHeatmapTransform(target_size_yx, padding, blob_sigma),
            dextr_transforms.DextrToTensor(),
            dextr_transforms.DextrNormalize(),
        ])
