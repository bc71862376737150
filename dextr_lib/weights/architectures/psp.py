"""Original DEXTR-PyTorch network (Maninis et al.): a DeepLab-v2 ResNet-101 with a PSP head.

The encoder is Caffe-style (the stride of a bottleneck is on its first 1x1 convolution), with
output stride 8: layer3 and layer4 keep the resolution and use dilation 2 and 4. The pyramid
pooling head averages the features to 1x1, 2x2, 3x3 and 6x6 grids, projects each to a quarter
of the channels, upsamples them back (bilinear, ``align_corners=True``, as the original does: with
``False`` the logits of imported models drift by about a unit) and fuses them with the features. Module names follow the
original ``networks/deeplab_resnet.py``, so its state dicts load unchanged. The stride-8 logits
are upsampled to the input size (bilinear, ``align_corners=True``, as its demo does), so the
network maps ``(N, 4, T, T)`` to ``(N, 1, T, T)`` like every other architecture here.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models

from ._registry import register_architecture
from ._utils import BackboneWeights, adapt_input_conv, load_backbone_weights


class CaffeBottleneck(nn.Module):
    """ResNet bottleneck with the stride on ``conv1`` and an optionally dilated ``conv2``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class PSPHead(nn.Module):
    """Pyramid pooling: pooled branches at several grid sizes, fused by a 1x1 bottleneck."""

    def __init__(self, in_channels: int = 2048, mid_channels: int = 512,
                 sizes: Sequence[int] = (1, 2, 3, 6), n_classes: int = 1):
        super().__init__()
        branch = in_channels // len(sizes)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d((s, s)), nn.Conv2d(in_channels, branch, 1, bias=False),
                nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
            )
            for s in sizes
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + branch * len(sizes), mid_channels, 1, bias=False),
            nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True),
        )
        self.relu = nn.ReLU()
        self.final = nn.Conv2d(mid_channels, n_classes, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        size = feats.shape[-2:]
        pooled = [
            F.interpolate(stage(feats), size=size, mode="bilinear", align_corners=True)
            for stage in self.stages
        ]
        fused = self.relu(self.bottleneck(torch.cat(pooled + [feats], dim=1)))
        return self.final(fused)


class PSPResNet(nn.Module):
    """DeepLab-v2 ResNet (output stride 8) with a :class:`PSPHead` as ``layer5``."""

    def __init__(self, blocks: Sequence[int] = (3, 4, 23, 3), in_channels: int = 4,
                 dilations: Sequence[int] = (2, 4)):
        super().__init__()
        self._inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, blocks[0])
        self.layer2 = self._make_layer(128, blocks[1], stride=2)
        self.layer3 = self._make_layer(256, blocks[2], dilation=dilations[0])
        self.layer4 = self._make_layer(512, blocks[3], dilation=dilations[1])
        self.layer5 = PSPHead(2048, 512, (1, 2, 3, 6), 1)

    def _make_layer(self, planes: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        out = planes * CaffeBottleneck.expansion
        downsample = None
        # The original adds a projection to every dilated stage's first block.
        if stride != 1 or self._inplanes != out or dilation > 1:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [CaffeBottleneck(self._inplanes, planes, stride, dilation, downsample)]
        self._inplanes = out
        layers += [CaffeBottleneck(out, planes, dilation=dilation) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.layer5(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        for name, p in self.named_parameters():
            if not name.startswith("layer5."):
                yield p


@register_architecture("psp101")
def psp101(*, backbone_weights: BackboneWeights = None) -> PSPResNet:
    """DeepLab-v2 ResNet-101 + PSP head (original DEXTR-PyTorch; use the ``original`` profile)."""
    net = PSPResNet(in_channels=3)
    if backbone_weights is not None:
        # torchvision's ResNet-101 has the same tensors (its stride sits on conv2 instead).
        tv = models.resnet101(weights=None)
        load_backbone_weights(tv, backbone_weights, models.ResNet101_Weights.IMAGENET1K_V1)
        state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
        net.load_state_dict(state, strict=False)
    net.conv1 = adapt_input_conv(net.conv1)
    return net
