"""The guidance channel: 2-D Gaussians at the extreme points, batched in torch."""
from __future__ import annotations

import torch

from ..errors import InvalidValueError


def gaussian_heatmaps(
    points: torch.Tensor, size: int, sigma: float, combine: str = "sum"
) -> torch.Tensor:
    """Render one heatmap per object with a Gaussian blob at each of its points.

    Args:
        points: ``(N, K, 2)`` float tensor of ``[y, x]`` crop pixel indices.
        size: side of the square heatmap in pixels.
        sigma: standard deviation of each Gaussian, in pixels.
        combine: ``"sum"`` adds the blobs, ``"max"`` takes their pixel-wise maximum.

    Returns:
        ``(N, size, size)`` tensor on ``points``' device, each blob peaking at 1 on its point.
    """
    coords = torch.arange(size, device=points.device, dtype=points.dtype)
    # Separable: exp(-(dy^2 + dx^2) / 2s^2) = gy * gx, so build (N, K, size) profiles once.
    gy = torch.exp(-0.5 * ((coords - points[..., 0:1]) / sigma) ** 2)
    gx = torch.exp(-0.5 * ((coords - points[..., 1:2]) / sigma) ** 2)
    if combine == "sum":
        return torch.einsum("nky,nkx->nyx", gy, gx)
    if combine == "max":
        return (gy[..., :, None] * gx[..., None, :]).amax(dim=1)
    raise InvalidValueError(f"combine must be 'sum' or 'max', got {combine!r}")
