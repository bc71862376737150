"""Pre-processing profiles: how points and an image become the network's input, and how its
output becomes a full-size mask. A profile is stored in every checkpoint and applied by
``predict`` and by training, so a model is never paired with the wrong pre-processing."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import geometry
from .errors import UnknownNameError
from .heatmaps import gaussian_heatmaps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Heatmap statistics measured on Pascal VOC 2012 by the ``dextr`` 0.1.2 authors.
HEATMAP_MEAN = 0.008
HEATMAP_STD = 0.066


@dataclass(frozen=True)
class Preprocess:
    """One pre-processing profile.

    Attributes:
        name: profile name (``"dextr"`` is the ``dextr`` 0.1.2 profile).
        target_size: side of the square crop fed to the network, in pixels.
        padding: margin between the extreme points and the crop edge. With
            ``padding_mode="crop"`` it is in crop pixels (the box grows by
            ``padding / (target_size - 2 * padding)`` of its size); with ``"image"`` it is in image
            pixels (original DEXTR's ``relax``).
        padding_mode: ``"crop"`` or ``"image"``.
        blob_sigma: standard deviation of each point's Gaussian, in crop pixels.
        heatmap_combine: ``"sum"`` or ``"max"`` of the four Gaussians.
        mean, std: per-channel normalisation of ``[R, G, B, heatmap]``; RGB is first scaled to
            ``[0, 1]`` and the heatmap peaks at 1.
        interpolation: resampling of the image crop, ``"bilinear"`` or ``"bicubic"``.
        clip_to_box: zero the pasted-back mask outside the box through the points.
        threshold: default probability threshold for binary masks.
        point_origin: ``"center"``: a point ``[y, x]`` stands for its pixel's centre
            ``(y + 0.5, x + 0.5)``, and Gaussians sit on crop pixel centres. ``"corner"``: the
            point is used as a continuous coordinate as it is and the Gaussian centre is the
            crop coordinate itself (``dextr`` 0.1.2 and original DEXTR; imported models only).
        heatmap_snap: truncate Gaussian centres to whole crop pixels (original DEXTR's demo).
        crop_box_truncate: truncate the image crop's box to whole pixels (toward zero) while the
            heatmap and paste-back keep the exact box (``dextr`` 0.1.2's quirk).
        paste_interpolation: resampling of the output back into the image, ``"bilinear"`` or
            ``"bicubic"`` (original DEXTR).
        uint8_resample: truncate the resampled crop, the probabilities and the pasted-back
            mask to 8-bit levels, as ``dextr`` 0.1.2's PIL uint8 resampling does.
        edge_mode: how samples near an edge read: ``"zeros"`` blends the image crop with zeros
            past the image edge (and paste-back clamps to the crop's edge); ``"pil"`` clamps to
            the edge pixels inside and gives 0 for sample points outside, in both the image crop
            and the paste-back (PIL's transform, ``dextr`` 0.1.2).
    """

    name: str = "dextr"
    target_size: int = 512
    padding: float = 10.0
    padding_mode: str = "crop"
    blob_sigma: float = 10.0
    heatmap_combine: str = "sum"
    mean: Tuple[float, ...] = IMAGENET_MEAN + (HEATMAP_MEAN,)
    std: Tuple[float, ...] = IMAGENET_STD + (HEATMAP_STD,)
    interpolation: str = "bilinear"
    clip_to_box: bool = False
    threshold: float = 0.5
    point_origin: str = "center"
    heatmap_snap: bool = False
    crop_box_truncate: bool = False
    paste_interpolation: str = "bilinear"
    uint8_resample: bool = False
    edge_mode: str = "zeros"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if int(self.target_size) != self.target_size or self.target_size < 16:
            raise ValueError(f"target_size must be an integer >= 16, got {self.target_size}")
        object.__setattr__(self, "target_size", int(self.target_size))
        if self.padding_mode not in ("crop", "image"):
            raise ValueError(f"padding_mode must be 'crop' or 'image', got {self.padding_mode!r}")
        if self.padding < 0 or (
            self.padding_mode == "crop" and 2 * self.padding >= self.target_size
        ):
            raise ValueError(
                f"padding must be >= 0 and leave room in the crop: got {self.padding} for a "
                f"{self.target_size} px crop"
            )
        if self.blob_sigma <= 0:
            raise ValueError(f"blob_sigma must be > 0, got {self.blob_sigma}")
        if self.heatmap_combine not in ("sum", "max"):
            raise ValueError(f"heatmap_combine must be 'sum' or 'max', got {self.heatmap_combine!r}")
        if len(self.mean) != 4 or len(self.std) != 4 or min(self.std) <= 0:
            raise ValueError("mean and std need 4 values (R, G, B, heatmap), std > 0")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.point_origin not in ("center", "corner"):
            raise ValueError(f"point_origin must be 'center' or 'corner', got {self.point_origin!r}")
        if self.edge_mode not in ("zeros", "pil"):
            raise ValueError(f"edge_mode must be 'zeros' or 'pil', got {self.edge_mode!r}")
        if self.paste_interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                f"paste_interpolation must be 'bilinear' or 'bicubic', got {self.paste_interpolation!r}"
            )

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Preprocess":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown pre-processing settings: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "Preprocess":
        return dataclasses.replace(self, **changes)

    # -- geometry ------------------------------------------------------------------------------
    def boxes(self, points: np.ndarray) -> np.ndarray:
        """``(N, 4, 2)`` points -> ``(N, 4)`` continuous crop boxes ``[y0, x0, y1, x1]``."""
        if self.padding_mode == "crop":
            boxes = geometry.relaxed_boxes(points, self.padding, self.target_size)
            # relaxed_boxes puts points on pixel centres; "corner" takes them as they are.
            return boxes - 0.5 if self.point_origin == "corner" else boxes
        return geometry.pixel_relaxed_boxes(points, self.padding)

    def sampling_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """The boxes the image (and target) crops are read from: ``boxes`` itself, or truncated
        to whole pixels with ``crop_box_truncate`` (heatmaps and paste-back keep ``boxes``)."""
        return np.trunc(boxes) if self.crop_box_truncate else boxes

    def crop(self, images: torch.Tensor, boxes: np.ndarray, mode: str | None = None) -> torch.Tensor:
        """Resample ``target_size`` square crops of ``boxes`` from one image.

        Args:
            images: ``(C, H, W)`` float tensor (one image shared by all boxes), or
                ``(N, C, H, W)`` (one image per box).
            boxes: ``(N, 4)`` continuous boxes; parts outside the image read as zeros.
            mode: resampling mode, default the profile's ``interpolation``.

        Returns:
            ``(N, C, target_size, target_size)`` tensor.
        """
        n = len(boxes)
        if images.dim() == 3:
            images = images.unsqueeze(0).expand(n, -1, -1, -1)
        _, c, h, w = images.shape
        theta = _crop_theta(boxes, h, w).to(images.device, images.dtype)
        t = self.target_size
        grid = F.affine_grid(theta, [n, c, t, t], align_corners=False)
        pil = self.edge_mode == "pil"
        out = F.grid_sample(
            images, grid, mode=mode or self.interpolation, padding_mode="border" if pil else "zeros",
            align_corners=False,
        )
        if pil:  # normalised [-1, 1) covers the image's pixels [0, W) exactly
            inside = ((grid >= -1) & (grid < 1)).all(dim=-1)
            out = out * inside[:, None].to(out.dtype)
        return out

    def heatmaps(self, points: np.ndarray, boxes: np.ndarray, device: torch.device) -> torch.Tensor:
        """``(N, T, T)`` guidance heatmaps for ``(N, 4, 2)`` image-space points."""
        if self.point_origin == "corner":
            lo = boxes[:, None, :2]
            in_crop = (points - lo) / (boxes[:, None, 2:] - lo) * self.target_size
        else:
            in_crop = geometry.image_to_crop(points, boxes, self.target_size)
        if self.heatmap_snap:
            in_crop = np.trunc(in_crop)
        pts = torch.as_tensor(in_crop, dtype=torch.float32, device=device)
        return gaussian_heatmaps(pts, self.target_size, self.blob_sigma, self.heatmap_combine)

    def normalize(self, rgb: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        """Stack ``(N, 3, T, T)`` RGB in ``[0, 1]`` and ``(N, T, T)`` heatmaps into a normalised
        ``(N, 4, T, T)`` network input."""
        x = torch.cat([rgb, heatmap.unsqueeze(1)], dim=1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 4, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 4, 1, 1)
        return (x - mean) / std

    def make_inputs(self, image: torch.Tensor, points: np.ndarray) -> Tuple[torch.Tensor, np.ndarray]:
        """Network inputs for several objects on one image.

        Args:
            image: ``(3, H, W)`` float tensor in ``[0, 1]`` (see :func:`image_to_tensor`).
            points: ``(N, 4, 2)`` validated ``[y, x]`` points.

        Returns:
            ``(inputs, boxes)``: ``(N, 4, T, T)`` float tensor on ``image``'s device, and the
            ``(N, 4)`` crop boxes needed by :meth:`paste`.
        """
        boxes = self.boxes(points)
        rgb = self.crop(image, self.sampling_boxes(boxes))
        if self.uint8_resample:
            rgb = torch.floor(rgb * 255.0 + 1e-3).div_(255.0)
        heat = self.heatmaps(points, boxes, image.device)
        return self.normalize(rgb, heat), boxes

    def paste(
        self,
        probs: torch.Tensor,
        boxes: np.ndarray,
        image_size: Sequence[int],
        points: np.ndarray | None = None,
    ) -> List[torch.Tensor]:
        """Resample crop-space probability maps back into full-size masks.

        Args:
            probs: ``(N, T, T)`` probabilities.
            boxes: ``(N, 4)`` the crop boxes they came from.
            image_size: ``(H, W)`` of the image.
            points: ``(N, 4, 2)`` points, needed when ``clip_to_box`` is set.

        Returns:
            ``N`` tensors of shape ``(H, W)``, zero outside each crop box, on ``probs``' device.
        """
        h, w = int(image_size[0]), int(image_size[1])
        out = []
        for i, box in enumerate(boxes):
            full = probs.new_zeros((h, w))
            y0, x0, y1, x1 = (float(v) for v in box)
            r0, c0 = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
            r1, c1 = min(int(np.ceil(y1)), h), min(int(np.ceil(x1)), w)
            if r1 > r0 and c1 > c0:
                # Pixel centres of the window, in the crop's normalised [-1, 1] coordinates.
                ys = (torch.arange(r0, r1, device=probs.device, dtype=probs.dtype) + 0.5 - y0) / (y1 - y0)
                xs = (torch.arange(c0, c1, device=probs.device, dtype=probs.dtype) + 0.5 - x0) / (x1 - x0)
                grid = torch.stack(torch.meshgrid(xs * 2 - 1, ys * 2 - 1, indexing="xy"), dim=-1)
                src = probs[i][None, None]
                if self.uint8_resample:
                    src = torch.floor(src * 255.0).div_(255.0)
                window = F.grid_sample(
                    src, grid[None], mode=self.paste_interpolation,
                    padding_mode="border", align_corners=False,
                )
                if self.edge_mode == "pil":  # pixels whose centre falls outside the crop read 0
                    window = window * ((grid >= -1) & (grid < 1)).all(dim=-1)[None, None].to(window.dtype)
                if self.uint8_resample:
                    window = torch.floor(window * 255.0 + 1e-3).div_(255.0)
                # Bicubic overshoots a little: keep probabilities in [0, 1].
                full[r0:r1, c0:c1] = window[0, 0].clamp(0.0, 1.0)
            if self.clip_to_box:
                if points is None:
                    raise ValueError("clip_to_box needs the points")
                lo = np.floor(points[i].min(axis=0)).astype(int)
                hi = np.ceil(points[i].max(axis=0)).astype(int) + 1
                keep = torch.zeros_like(full, dtype=torch.bool)
                keep[max(lo[0], 0):max(hi[0], 0), max(lo[1], 0):max(hi[1], 0)] = True
                full = full * keep
            out.append(full)
        return out


def _crop_theta(boxes: np.ndarray, h: int, w: int) -> torch.Tensor:
    """Affine matrices mapping a crop's normalised coords to the image's (align_corners=False)."""
    b = torch.as_tensor(np.asarray(boxes), dtype=torch.float64)
    y0, x0, y1, x1 = b.unbind(dim=1)
    sy, sx = y1 - y0, x1 - x0
    theta = torch.zeros((len(b), 2, 3), dtype=torch.float64)
    theta[:, 0, 0] = sx / w
    theta[:, 0, 2] = (2 * x0 + sx) / w - 1
    theta[:, 1, 1] = sy / h
    theta[:, 1, 2] = (2 * y0 + sy) / h - 1
    return theta


def image_to_tensor(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 tensor in ``[0, 1]`` on ``device``.

    The uint8 data is moved first, so a GPU receives a quarter of the bytes."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).to(device, non_blocking=True)
    return t.permute(2, 0, 1).float().div_(255.0)


#: Named profiles. ``dextr`` is the ``dextr`` 0.1.2 package's profile and the default.
PROFILES: Dict[str, Preprocess] = {"dextr": Preprocess()}

#: Models imported from ``dextr`` 0.1.2 files: its profile with its coordinate conventions
#: (points as continuous coordinates, image crop box truncated to whole pixels).
PROFILES["dextr012"] = Preprocess(
    name="dextr012", point_origin="corner", crop_box_truncate=True, uint8_resample=True,
    edge_mode="pil",
)

#: Original DEXTR-PyTorch (Maninis et al.): 50 px relax in image pixels, zero padding past the
#: image, 512x512 bicubic resize, Gaussians of full width at half maximum 10 (std 10 / 2.3548)
#: combined by max and scaled to 0-255, raw 0-255 RGB, bicubic paste-back, zero outside the
#: points' box, threshold 0.8.
PROFILES["original"] = Preprocess(
    name="original", target_size=512, padding=50.0, padding_mode="image",
    blob_sigma=10.0 / (2.0 * float(np.sqrt(2.0 * np.log(2.0)))), heatmap_combine="max",
    mean=(0.0, 0.0, 0.0, 0.0), std=(1 / 255.0,) * 4, interpolation="bicubic", clip_to_box=True,
    threshold=0.8, point_origin="corner", heatmap_snap=True, paste_interpolation="bicubic",
)


def get_profile(name: str, **overrides: Any) -> Preprocess:
    """A registered profile by name, with optional field overrides."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown pre-processing profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}"
        ) from None
    return base.replace(**overrides) if overrides else base
