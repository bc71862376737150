"""Losses for training DEXTR."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def balanced_bce_with_logits(
    logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Class-balanced binary cross-entropy, balanced per sample (DEXTR, ``dextr`` 0.1.2).

    With ``p`` the foreground share of a sample's (valid) target, foreground pixels are weighted
    ``1 - p`` and background pixels ``p``, so both classes contribute equally whatever the object's
    size. The weighted per-pixel losses are averaged over all pixels of the batch, as in 0.1.2.

    Args:
        logits: ``(N, 1, H, W)`` network outputs.
        target: ``(N, 1, H, W)`` target in ``[0, 1]`` (soft at resampled edges).
        valid: optional ``(N, 1, H, W)`` weights, 0 on ignored pixels (they count for nothing,
            neither in the loss nor in the foreground share).

    Returns:
        Scalar loss.
    """
    n = len(target)
    if valid is None:
        share = target.reshape(n, -1).mean(dim=1)
    else:
        share = (target * valid).reshape(n, -1).sum(dim=1) / valid.reshape(n, -1).sum(dim=1).clamp_min(1.0)
    share = share.view(n, 1, 1, 1)
    # bg weight p, fg weight 1 - p, interpolated for soft targets.
    weight = share + (1.0 - 2.0 * share) * target
    if valid is not None:
        weight = weight * valid
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)
