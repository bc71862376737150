"""Changes to a built network's input: the negative-click channel.

A model that takes negative correction clicks reads them as a fifth input channel. A 4-channel
network gets it by :func:`add_negative_channel`: its first convolution gains one input channel
whose kernels start at zero, so until it is fine-tuned the network computes exactly what it did
(the pattern of timm's ``adapt_input_conv`` and SMP's ``patch_first_conv`` for a new guidance
channel).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from ..errors import CheckpointError

#: Input channels of a network that takes negative clicks: RGB, the click heatmap, negatives.
NEGATIVE_IN_CHANNELS = 5


def input_conv(net: nn.Module) -> Tuple[str, nn.Conv2d]:
    """The convolution that reads the network input, found without knowing the architecture:
    the first ``Conv2d`` in module order, which for every registered architecture is the stem.

    Returns:
        ``(name, conv)``: its dotted name in ``net`` and the module.

    Raises:
        CheckpointError: the network has no ``Conv2d``.
    """
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise CheckpointError(f"{type(net).__name__} has no Conv2d to take a click channel")


def input_channels(net: nn.Module) -> int:
    """How many input channels ``net`` reads (4: RGB and the click heatmap; 5: and negatives)."""
    return input_conv(net)[1].in_channels


def add_negative_channel(net: nn.Module) -> nn.Module:
    """Give a 4-channel network a fifth input channel for negative clicks, in place.

    The first convolution is replaced by one with an extra input channel whose kernels are
    zero and the other weights copied, on the same device and dtype (the meta device too), so
    the network's output is unchanged whatever the fifth channel holds until it is trained.

    Args:
        net: a network reading ``(N, 4, T, T)`` inputs.

    Returns:
        ``net``, now reading ``(N, 5, T, T)``.

    Raises:
        CheckpointError: ``net`` does not read 4 channels (it may have the channel already).

    Example:
        >>> net = add_negative_channel(build_network("resunet18"))
    """
    name, conv = input_conv(net)
    if conv.in_channels != NEGATIVE_IN_CHANNELS - 1:
        raise CheckpointError(
            f"the network's first convolution ({name}) reads {conv.in_channels} channels; "
            f"a negative-click channel is added to a {NEGATIVE_IN_CHANNELS - 1}-channel network"
        )
    w = conv.weight
    new = nn.Conv2d(
        conv.in_channels + 1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        device=w.device, dtype=w.dtype,
    )
    new.train(conv.training)
    if w.device.type != "meta":
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:, : conv.in_channels] = w
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    parent_name, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, attr, new)
    return net
