"""Inference transforms with ``dextr`` 0.1.2's names and pickled state (no behaviour needed)."""
import numpy as np
import torch


class DextrCropWithHeatmapTransform(object):
    def __init__(self, target_size_yx, padding, blob_sigma=10.0, keep_original_mask=False):
        self.padding = padding
        self.blob_sigma = blob_sigma
        self.keep_original_mask = keep_original_mask
        self.target_size_yx = target_size_yx
        self.target_size_nopad_yx = np.array(target_size_yx) - self.padding * 2
        self._rel_padding_yx = padding / self.target_size_nopad_yx


class DextrToTensor(object):
    pass


class DextrNormalize(object):
    def __init__(self):
        self.mean = torch.tensor(np.array([0.485, 0.456, 0.406, 0.008])[:, None, None], dtype=torch.float)
        self.std = torch.tensor(np.array([0.229, 0.224, 0.225, 0.066])[:, None, None], dtype=torch.float)
