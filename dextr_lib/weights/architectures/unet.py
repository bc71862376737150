"""U-Net decoders on torchvision encoders, laid out exactly as in ``dextr`` 0.1.2 so that its
checkpoints load unchanged: nearest x2 upsampling, skip *added*, conv3x3-BN-ReLU per block, and
a head of x2 upsampling, conv3x3, dropout, BN, ReLU and a 1x1 classifier."""
from __future__ import annotations

from typing import Iterator, List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models

from ._registry import register_architecture
from ._utils import BackboneWeights, adapt_input_conv, load_backbone_weights


class DecoderBlock(nn.Module):
    """Upsample ``x`` to the skip's size, add the skip, then conv3x3-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv_bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # Nearest x2 for sizes that divide by 32 (the reference's nn.Upsample), any size otherwise.
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest") + skip
        return F.relu(self.conv_bn(self.conv(x)))


class _Head(nn.Module):
    """The shared final stage; a mixin of attributes so parameter names match the reference."""

    def _build_head(self, in_channels: int) -> None:
        self.final_dec_conv = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.final_dec_drop = nn.Dropout(0.3)
        self.final_dec_bn = nn.BatchNorm2d(64)
        self.final_clf = nn.Conv2d(64, 1, 1)

    def _head(self, x: torch.Tensor, size) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        x = F.relu(self.final_dec_bn(self.final_dec_drop(self.final_dec_conv(x))))
        return self.final_clf(x)


class ResUNet(_Head, nn.Module):
    """U-Net on a torchvision ResNet; skips from ``bn1`` (before its ReLU), layer1..layer3."""

    def __init__(self, base_model: models.ResNet):
        super().__init__()
        base_model.fc = nn.Identity()  # unused classifier: no parameters to carry or train
        self.base_model = base_model
        c1 = base_model.bn1.num_features
        c = [
            _out_channels(base_model.layer1), _out_channels(base_model.layer2),
            _out_channels(base_model.layer3), _out_channels(base_model.layer4),
        ]
        self.line0_conv = nn.Conv2d(c[3], c[2], 1)
        self.decoder3 = DecoderBlock(c[2], c[1])
        self.decoder2 = DecoderBlock(c[1], c[0])
        self.decoder1 = DecoderBlock(c[0], c1)
        self.decoder0 = DecoderBlock(c1, 64)
        self._build_head(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        b = self.base_model
        r2 = x = b.bn1(b.conv1(x))
        x = b.maxpool(b.relu(x))
        r4 = x = b.layer1(x)
        r8 = x = b.layer2(x)
        r16 = x = b.layer3(x)
        x = self.line0_conv(b.layer4(x))
        x = self.decoder3(x, r16)
        x = self.decoder2(x, r8)
        x = self.decoder1(x, r4)
        x = self.decoder0(x, r2)
        return self._head(x, size)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.base_model.parameters()


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    bn = getattr(last, "bn3", None) or last.bn2
    return bn.num_features


class DenseUNet(_Head, nn.Module):
    """U-Net on torchvision's DenseNet; taps before pool0 and transition1..3 (``dextr`` 0.1.2)."""

    _TAPS = ("pool0", "transition1", "transition2", "transition3")

    def __init__(self, base_model: models.DenseNet):
        super().__init__()
        base_model.classifier = nn.Identity()
        self.base_model = base_model
        f = base_model.features
        enc: List[int] = [
            f.norm0.num_features, f.transition1.norm.num_features,
            f.transition2.norm.num_features, f.transition3.norm.num_features,
        ]
        n = f.norm5.num_features
        self.line0_conv = nn.Conv2d(enc[-1], n, 1)
        enc[-1] = n
        enc = enc[::-1]
        blocks = []
        for skip_c, out_c in zip(enc, enc[1:] + enc[-1:]):
            if skip_c != n:
                raise ValueError("decoder input and skip channels must match")
            blocks.append(DecoderBlock(n, out_c))
            n = out_c
        # Stored shallowest-first, as the reference does, so parameter indices match.
        self.decoder_blocks = nn.ModuleList(blocks[::-1])
        self._build_head(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        taps = []
        for name, mod in self.base_model.features.named_children():
            if name in self._TAPS:
                taps.append(x)
            x = mod(x)
        x = F.relu(x)
        taps[-1] = self.line0_conv(taps[-1])
        for block, skip in zip(reversed(self.decoder_blocks), reversed(taps)):
            x = block(x, skip)
        return self._head(x, size)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.base_model.features.parameters()


def _resunet(depth: int, backbone_weights: BackboneWeights) -> ResUNet:
    ctor = getattr(models, f"resnet{depth}")
    weights = getattr(models, f"ResNet{depth}_Weights").IMAGENET1K_V1
    base = ctor(weights=None)
    load_backbone_weights(base, backbone_weights, weights)
    base.conv1 = adapt_input_conv(base.conv1)
    return ResUNet(base)


@register_architecture("resunet18")
def resunet18(*, backbone_weights: BackboneWeights = None) -> ResUNet:
    """U-Net on ResNet-18 (small; for CPU work and tests)."""
    return _resunet(18, backbone_weights)


@register_architecture("resunet34")
def resunet34(*, backbone_weights: BackboneWeights = None) -> ResUNet:
    """U-Net on ResNet-34."""
    return _resunet(34, backbone_weights)


@register_architecture("resunet50")
def resunet50(*, backbone_weights: BackboneWeights = None) -> ResUNet:
    """U-Net on ResNet-50 (as in ``dextr`` 0.1.2)."""
    return _resunet(50, backbone_weights)


@register_architecture("resunet101")
def resunet101(*, backbone_weights: BackboneWeights = None) -> ResUNet:
    """U-Net on ResNet-101 (``dextr`` 0.1.2's published Pascal VOC model)."""
    return _resunet(101, backbone_weights)


@register_architecture("denseunet161")
def denseunet161(*, backbone_weights: BackboneWeights = None) -> DenseUNet:
    """U-Net on DenseNet-161 (as in ``dextr`` 0.1.2)."""
    base = models.densenet161(weights=None)
    load_backbone_weights(base, backbone_weights, models.DenseNet161_Weights.IMAGENET1K_V1)
    base.features.conv0 = adapt_input_conv(base.features.conv0)
    return DenseUNet(base)
