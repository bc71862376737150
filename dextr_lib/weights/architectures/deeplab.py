"""torchvision's DeepLabV3-ResNet101 with a 4-channel input (``dextr`` 0.1.2's ``deeplab3``)."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models
from torchvision.models import segmentation

from ._registry import register_architecture
from ._utils import BackboneWeights, adapt_input_conv, load_backbone_weights


class DeepLab3(nn.Module):
    """Wraps torchvision's model so ``forward`` returns the ``out`` logits tensor."""

    def __init__(self, net: segmentation.DeepLabV3):
        super().__init__()
        # Attribute names match torchvision's so ``dextr`` 0.1.2 state dicts load as they are.
        self.backbone = net.backbone
        self.classifier = net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.backbone(x)["out"])
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()


@register_architecture("deeplab3")
def deeplab3(*, backbone_weights: BackboneWeights = None) -> DeepLab3:
    """DeepLabV3 with a ResNet-101 backbone (output stride 8)."""
    net = segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=1, aux_loss=False)
    load_backbone_weights(net.backbone, backbone_weights, models.ResNet101_Weights.IMAGENET1K_V1)
    net.backbone.conv1 = adapt_input_conv(net.backbone.conv1)
    return DeepLab3(net)
