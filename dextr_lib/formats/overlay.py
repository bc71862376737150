"""Overlays for judging a prediction at a glance: the photo, each mask tinted and outlined, and
the four clicked points marked."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import PIL.ImageDraw

from ..core.images import ImageLike, to_rgb_array
from ..errors import MismatchError

#: Distinct, saturated tints (one per object, cycled).
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (255, 40, 40), (40, 140, 255), (40, 220, 60), (255, 200, 0),
    (220, 60, 255), (0, 220, 220), (255, 120, 0), (255, 80, 170),
)


def draw_overlay(
    image: ImageLike,
    masks: Sequence[np.ndarray],
    points: Optional[Sequence[np.ndarray]] = None,
    *,
    alpha: float = 0.45,
    colors: Optional[Sequence[Tuple[int, int, int]]] = None,
) -> np.ndarray:
    """Draw masks and their extreme points over an image.

    Args:
        image: PIL image or array (anything :func:`~dextr_lib.core.images.to_rgb_array` accepts).
        masks: ``(H, W)`` masks, boolean or probabilities (``>= 0.5`` is inside).
        points: per mask, ``(4, 2)`` ``[y, x]`` points to mark (or None).
        alpha: tint opacity inside the masks.
        colors: RGB tint per mask; default :data:`PALETTE`.

    Returns:
        ``(H, W, 3)`` uint8 RGB overlay.
    """
    from skimage.morphology import dilation, disk
    from skimage.segmentation import find_boundaries

    rgb = to_rgb_array(image).astype(np.float32)
    h, w = rgb.shape[:2]
    colors = list(colors or PALETTE)
    # Line and marker sizes scale with the image so they stay visible on large photos.
    line = max(1, round(min(h, w) / 300))
    radius = max(3, round(min(h, w) / 90))
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.shape != (h, w):
            raise MismatchError(f"mask {i} has shape {m.shape}, expected the image's {(h, w)}")
        inside = m >= 0.5 if m.dtype != bool else m
        color = np.array(colors[i % len(colors)], dtype=np.float32)
        rgb[inside] = (1 - alpha) * rgb[inside] + alpha * color
        edge = find_boundaries(inside, mode="inner")
        if line > 1:
            edge = dilation(edge, disk(line - 1))
        rgb[edge] = color
    out = PIL.Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8))
    draw = PIL.ImageDraw.Draw(out)
    for i, pts in enumerate(points or []):
        if pts is None:
            continue
        color = tuple(int(c) for c in colors[i % len(colors)])
        for y, x in np.asarray(pts, dtype=np.float64).reshape(-1, 2):
            cx, cy = x + 0.5, y + 0.5  # pixel centre
            box = [cx - radius, cy - radius, cx + radius, cy + radius]
            # A dark rim under the white ring keeps the marker visible on light and dark photos.
            draw.ellipse([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], fill=(0, 0, 0))
            draw.ellipse(box, fill=color, outline=(255, 255, 255), width=max(1, radius // 3))
    return np.asarray(out)
