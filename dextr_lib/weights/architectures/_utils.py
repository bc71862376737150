"""Helpers shared by the architecture builders."""
from __future__ import annotations

import os
from typing import Optional, Union

import torch
import torch.nn as nn

from ...errors import CheckpointError, DownloadError

BackboneWeights = Optional[Union[str, os.PathLike]]


def adapt_input_conv(conv: nn.Conv2d, in_channels: int = 4) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs: the RGB kernels are kept as they are and
    each extra (heatmap) channel's kernel starts as the mean of the RGB kernels, so a pretrained
    encoder sees the Gaussian blobs as a bright, colourless pattern."""
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=conv.bias is not None,
    )
    with torch.no_grad():
        w = conv.weight
        new.weight[:, : w.shape[1]] = w
        new.weight[:, w.shape[1]:] = w.mean(dim=1, keepdim=True)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def load_backbone_weights(module: nn.Module, spec: BackboneWeights, imagenet_weights) -> None:
    """Initialise a torchvision encoder (still 3-channel) in place.

    Args:
        module: the torchvision model to initialise.
        spec: ``None`` (random), ``"imagenet"`` (torchvision's weights, downloaded into
            torchvision's own cache), or a path to a state dict saved from the same torchvision
            model.
        imagenet_weights: the torchvision ``WeightsEnum`` member for ``"imagenet"``.
    """
    if spec is None:
        return
    if str(spec) == "imagenet":
        try:
            state = imagenet_weights.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # urllib and socket errors vary by platform
            raise DownloadError(
                f"could not download ImageNet weights for the encoder ({imagenet_weights.url}): "
                f"{e}. Offline? Pass --backbone-weights PATH with a downloaded copy, or "
                "--no-pretrained to start from random weights"
            ) from None
    else:
        path = os.fspath(spec)
        if not os.path.exists(path):
            raise CheckpointError(f"backbone weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"cannot read backbone weights {path}: {e}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    # Classifier heads are dropped from our encoders; anything else missing means a wrong file.
    missing = [k for k in missing if not k.startswith(("fc.", "classifier."))]
    if missing:
        raise CheckpointError(
            f"backbone weights {spec} do not fit the encoder: {len(missing)} missing keys "
            f"(first: {missing[:3]})"
        )
