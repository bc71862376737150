"""Pre-processing: how points and an image become the network's input, and how its output
becomes a full-size mask.

Words: a :class:`Preprocess` holds a model's *pre-processing settings*; it is stored in every
checkpoint and applied by ``predict`` and by training, so a model is never paired with the wrong
pre-processing. A *profile* is a named starting set of those settings (:data:`PROFILES`,
:func:`get_profile`: ``dextr``, ``dextr012``, ``original``); ``Preprocess.name`` says which
profile a model's settings came from."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core import geometry
from ..errors import CorrectionError, InvalidPointsError, InvalidValueError, MismatchError, UnknownNameError
from .heatmaps import gaussian_heatmaps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Heatmap statistics measured on Pascal VOC 2012 by the ``dextr`` 0.1.2 authors.
HEATMAP_MEAN = 0.008
HEATMAP_STD = 0.066

#: Correction clicks of several objects: one ``(k, 2)`` float64 ``[y, x]`` array per object.
Corrections = List[np.ndarray]

#: How to get a model whose network takes negative clicks (said by every refusal of one).
NEGATIVE_CHANNEL_HINT = (
    "make one with `dextr finetune JOB --from MODEL --corrections N ...`, which adds the "
    "negative-click input channel, or correct with positive clicks only"
)


@dataclass(frozen=True)
class Preprocess:
    """A model's pre-processing settings, made from a named profile (:func:`get_profile`).

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
            ``[0, 1]`` and the heatmap peaks at 1. The negative-click heatmap, where there is
            one, is normalised like the heatmap.
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
        integer_points: truncate the points to whole pixels (toward zero) before anything else,
            as original DEXTR's demo casts its clicks with ``astype(int)``.
        resampler: ``"torch"``: the image crop and the paste-back are sampled over the continuous
            box with ``grid_sample`` (``interpolation``, ``paste_interpolation``, ``edge_mode``
            apply). ``"opencv"``: original DEXTR's ``cv2.resize`` steps, reproduced in torch: the
            box is whole pixels, zero-padded past the image, resized with OpenCV's bicubic
            (its float32 weights, edge pixels repeated) and rounded to 8-bit levels, and the
            probabilities are resized back with the same bicubic. Needs
            ``padding_mode="image"`` with a whole ``padding``.
        negative_clicks: the network takes a fifth input channel, a heatmap of negative
            correction clicks (made like the extreme points' one). Positive corrections join
            the extreme points' heatmap, so every model takes those.
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
    integer_points: bool = False
    resampler: str = "torch"
    negative_clicks: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if int(self.target_size) != self.target_size or self.target_size < 16:
            raise InvalidValueError(f"target_size must be an integer >= 16, got {self.target_size}")
        object.__setattr__(self, "target_size", int(self.target_size))
        if self.padding_mode not in ("crop", "image"):
            raise InvalidValueError(f"padding_mode must be 'crop' or 'image', got {self.padding_mode!r}")
        if self.padding < 0 or (
            self.padding_mode == "crop" and 2 * self.padding >= self.target_size
        ):
            raise InvalidValueError(
                f"padding must be >= 0 and leave room in the crop: got {self.padding} for a "
                f"{self.target_size} px crop"
            )
        if self.blob_sigma <= 0:
            raise InvalidValueError(f"blob_sigma must be > 0, got {self.blob_sigma}")
        if self.heatmap_combine not in ("sum", "max"):
            raise InvalidValueError(f"heatmap_combine must be 'sum' or 'max', got {self.heatmap_combine!r}")
        if len(self.mean) != 4 or len(self.std) != 4 or min(self.std) <= 0:
            raise InvalidValueError("mean and std need 4 values (R, G, B, heatmap), std > 0")
        if self.interpolation not in ("bilinear", "bicubic"):
            raise InvalidValueError(
                f"interpolation must be 'bilinear' or 'bicubic', got {self.interpolation!r}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.point_origin not in ("center", "corner"):
            raise InvalidValueError(f"point_origin must be 'center' or 'corner', got {self.point_origin!r}")
        if self.edge_mode not in ("zeros", "pil"):
            raise InvalidValueError(f"edge_mode must be 'zeros' or 'pil', got {self.edge_mode!r}")
        if self.paste_interpolation not in ("bilinear", "bicubic"):
            raise InvalidValueError(
                f"paste_interpolation must be 'bilinear' or 'bicubic', got {self.paste_interpolation!r}"
            )
        if self.resampler not in ("torch", "opencv"):
            raise InvalidValueError(f"resampler must be 'torch' or 'opencv', got {self.resampler!r}")
        if self.resampler == "opencv" and (
            self.padding_mode != "image" or self.padding != int(self.padding)
        ):
            raise InvalidValueError("resampler 'opencv' crops whole pixels: it needs padding_mode='image' "
                             f"and a whole padding, got {self.padding_mode!r} and {self.padding}")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Preprocess":
        """The inverse of :meth:`to_dict`. Settings a stored profile lacks (written before they
        existed) take the value of the registered profile of the same name, else the default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InvalidValueError(f"unknown pre-processing settings: {sorted(unknown)}")
        base = PROFILES.get(d.get("name", "dextr"))
        if base is not None:
            d = {**{k: getattr(base, k) for k in known - set(d)}, **d}
        return cls(**d)

    def replace(self, **changes: Any) -> "Preprocess":
        return dataclasses.replace(self, **changes)

    @property
    def in_channels(self) -> int:
        """Channels of the network input: RGB, the heatmap, and the negative-click heatmap
        where the network takes one."""
        return 5 if self.negative_clicks else 4

    # -- geometry ------------------------------------------------------------------------------
    def snap_points(self, points: np.ndarray) -> np.ndarray:
        """The points as the profile uses them: truncated to whole pixels with ``integer_points``."""
        return np.trunc(points) if self.integer_points else points

    def boxes(self, points: np.ndarray) -> np.ndarray:
        """``(N, 4, 2)`` points -> ``(N, 4)`` continuous crop boxes ``[y0, x0, y1, x1]``."""
        points = self.snap_points(points)
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
        _, _, h, w = images.shape
        theta = _crop_theta(boxes, h, w).to(images.device, images.dtype)
        grid = _crop_grid(theta, self.target_size)
        pil = self.edge_mode == "pil"
        out = F.grid_sample(
            images, grid, mode=mode or self.interpolation, padding_mode="border" if pil else "zeros",
            align_corners=False,
        )
        if pil:  # normalised [-1, 1) covers the image's pixels [0, W) exactly
            inside = ((grid >= -1) & (grid < 1)).all(dim=-1)
            out = out * inside[:, None].to(out.dtype)
        return out

    def to_8bit(self, rgb: torch.Tensor) -> torch.Tensor:
        """A resampled crop (floats in ``[0, 1]``) on the 8-bit levels the profile's reference
        produces: truncated (``uint8_resample``, PIL), rounded and saturated (``resampler
        "opencv"``), or unchanged. Training crops go through it too."""
        if self.uint8_resample:
            return torch.floor(rgb * 255.0 + 1e-3).div_(255.0)
        if self.resampler == "opencv":
            return torch.round(rgb * 255.0).clamp_(0.0, 255.0).div_(255.0)
        return rgb

    def heatmaps(self, points: np.ndarray, boxes: np.ndarray, device: torch.device,
                 extra: Optional[Corrections] = None) -> torch.Tensor:
        """``(N, T, T)`` guidance heatmaps.

        Args:
            points: ``(N, K, 2)`` image-space ``[y, x]`` points (the extreme points).
            boxes: ``(N, 4)`` crop boxes.
            extra: ``N`` ``(k, 2)`` arrays of more points of each object (positive
                corrections), combined with ``points``' blobs as the profile says; ``None`` or
                all empty leaves the heatmaps exactly as without them.
        """
        heat = self._blobs(points, boxes, device)
        for i, more in enumerate(extra or ()):
            if len(more):
                blobs = self._blobs(more[None], boxes[i:i + 1], device)[0]
                heat[i] = heat[i] + blobs if self.heatmap_combine == "sum" else torch.maximum(heat[i], blobs)
        return heat

    def _blobs(self, points: np.ndarray, boxes: np.ndarray, device: torch.device) -> torch.Tensor:
        """``(N, T, T)`` Gaussians at ``(N, K, 2)`` image-space points in their crops."""
        points = self.snap_points(points)
        if self.point_origin == "corner":
            lo = boxes[:, None, :2]
            if self.heatmap_snap:  # original DEXTR's arithmetic, so its truncation lands alike
                in_crop = self.target_size * (points - lo) * (1.0 / (boxes[:, None, 2:] - lo))
            else:
                in_crop = (points - lo) / (boxes[:, None, 2:] - lo) * self.target_size
        else:
            in_crop = geometry.image_to_crop(points, boxes, self.target_size)
        if self.heatmap_snap:
            in_crop = np.trunc(in_crop)
        pts = torch.as_tensor(in_crop, dtype=torch.float32, device=device)
        return gaussian_heatmaps(pts, self.target_size, self.blob_sigma, self.heatmap_combine)

    def normalize(self, rgb: torch.Tensor, heatmap: torch.Tensor,
                  negative: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Stack ``(N, 3, T, T)`` RGB in ``[0, 1]``, ``(N, T, T)`` heatmaps and, for a network
        with :attr:`negative_clicks`, ``(N, T, T)`` negative-click heatmaps (``None``: none
        clicked) into a normalised ``(N, C, T, T)`` network input, ``C`` = :attr:`in_channels`."""
        n, _, t, _ = rgb.shape
        mean = torch.tensor(self.mean, dtype=rgb.dtype, device=rgb.device).view(1, 4, 1, 1)
        std = torch.tensor(self.std, dtype=rgb.dtype, device=rgb.device).view(1, 4, 1, 1)
        # (x - mean) / std written straight into the input: no concatenated copy to subtract from
        x = torch.empty((n, self.in_channels, t, t), dtype=rgb.dtype, device=rgb.device)
        torch.sub(rgb, mean[:, :3], out=x[:, :3])
        torch.sub(heatmap.unsqueeze(1), mean[:, 3:], out=x[:, 3:4])
        x[:, :4].div_(std)
        if self.negative_clicks:
            if negative is None:
                x[:, 4:].fill_(-self.mean[3] / self.std[3])
            else:
                x[:, 4:] = (negative.unsqueeze(1) - self.mean[3]) / self.std[3]
        return x

    def check_negatives(self, negative: Optional[Corrections]) -> None:
        """Refuse negative clicks (``None`` or per-object ``(k, 2)`` arrays) for a network
        without :attr:`negative_clicks`.

        Raises:
            CorrectionError: saying how to get a model that takes them.
        """
        if negative is not None and not self.negative_clicks and any(len(c) for c in negative):
            raise CorrectionError(f"this model takes no negative clicks: {NEGATIVE_CHANNEL_HINT}")

    def check_corrections(self, points: np.ndarray, boxes: np.ndarray,
                          positive: Optional[Corrections], negative: Optional[Corrections]) -> None:
        """Refuse corrections this model cannot use.

        Args:
            points: ``(N, 4, 2)`` extreme points; boxes: their ``(N, 4)`` crop boxes.
            positive, negative: ``None`` or ``N`` ``(k, 2)`` ``[y, x]`` arrays.

        Raises:
            CorrectionError: a negative click for a network without :attr:`negative_clicks`,
                or a click outside its object's crop (the crop is the four extreme points'; a
                click there could not reach the network).
        """
        self.check_negatives(negative)
        # A point's pixel centre (its corner, for "corner" profiles) must fall inside the box.
        shift = 0.5 if self.point_origin == "center" else 0.0
        for kind, clicks in (("positive", positive), ("negative", negative)):
            for i, c in enumerate(clicks or ()):
                if not len(c):
                    continue
                at = self.snap_points(c) + shift
                lo, hi = boxes[i, :2], boxes[i, 2:]
                outside = ((at < lo) | (at >= hi)).any(axis=1)
                if outside.any():
                    y, x = c[int(np.argmax(outside))]
                    raise CorrectionError(
                        f"the {kind} correction at [y={y:g}, x={x:g}] lies outside the object's "
                        f"crop (y {lo[0]:.0f}..{hi[0]:.0f}, x {lo[1]:.0f}..{hi[1]:.0f}), which the "
                        "four extreme points define: move an extreme point to take that part in "
                        "instead"
                    )

    def make_inputs(self, image: torch.Tensor, points: np.ndarray,
                    positive: Optional[Corrections] = None,
                    negative: Optional[Corrections] = None) -> Tuple[torch.Tensor, np.ndarray]:
        """Network inputs for several objects on one image.

        Args:
            image: ``(3, H, W)`` float tensor in ``[0, 1]`` (see :func:`image_to_tensor`).
            points: ``(N, 4, 2)`` validated ``[y, x]`` points.
            positive, negative: ``None`` or ``N`` ``(k, 2)`` ``[y, x]`` correction clicks per
                object (:func:`as_corrections`); positive ones join the extreme points'
                heatmap, negative ones make the fifth channel of a :attr:`negative_clicks`
                network.

        Returns:
            ``(inputs, boxes)``: ``(N, C, T, T)`` float tensor on ``image``'s device
            (``C`` = :attr:`in_channels`), and the ``(N, 4)`` crop boxes needed by :meth:`paste`.

        Raises:
            CorrectionError: see :meth:`check_corrections`.
        """
        boxes = self.boxes(points)
        self.check_corrections(points, boxes, positive, negative)
        if self.resampler == "opencv":
            rgb = torch.stack([_opencv_crop_resize(image, box, self.target_size) for box in boxes])
        else:
            rgb = self.to_8bit(self.crop(image, self.sampling_boxes(boxes)))
        heat = self.heatmaps(points, boxes, image.device, positive)
        neg = None
        if self.negative_clicks and negative is not None and any(len(c) for c in negative):
            neg = torch.zeros_like(heat)
            for i, c in enumerate(negative):
                if len(c):
                    neg[i] = self._blobs(c[None], boxes[i:i + 1], image.device)[0]
        return self.normalize(rgb, heat, neg), boxes

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
        if points is not None:
            points = self.snap_points(points)
        out = []
        for i, box in enumerate(boxes):
            full = probs.new_zeros((h, w))
            if self.resampler == "opencv":
                _opencv_paste(probs[i], box, full)
            else:
                self._paste_grid(probs[i], box, full)
            if self.clip_to_box:
                if points is None:
                    raise InvalidValueError("clip_to_box needs the points")
                lo = np.floor(points[i].min(axis=0)).astype(int)
                hi = np.ceil(points[i].max(axis=0)).astype(int) + 1
                keep = torch.zeros_like(full, dtype=torch.bool)
                keep[max(lo[0], 0):max(hi[0], 0), max(lo[1], 0):max(hi[1], 0)] = True
                full = full * keep
            out.append(full)
        return out

    def _paste_grid(self, prob: torch.Tensor, box: np.ndarray, full: torch.Tensor) -> None:
        """Resample one ``(T, T)`` map into ``full`` (in place) over ``box`` with ``grid_sample``."""
        h, w = full.shape
        y0, x0, y1, x1 = (float(v) for v in box)
        r0, c0 = max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0)
        r1, c1 = min(int(np.ceil(y1)), h), min(int(np.ceil(x1)), w)
        if r1 <= r0 or c1 <= c0:
            return
        # Pixel centres of the window, in the crop's normalised [-1, 1] coordinates.
        ys = (torch.arange(r0, r1, device=prob.device, dtype=prob.dtype) + 0.5 - y0) / (y1 - y0)
        xs = (torch.arange(c0, c1, device=prob.device, dtype=prob.dtype) + 0.5 - x0) / (x1 - x0)
        grid = torch.stack(torch.meshgrid(xs * 2 - 1, ys * 2 - 1, indexing="xy"), dim=-1)
        src = prob[None, None]
        if self.uint8_resample:
            src = torch.floor(src * 255.0).div_(255.0)
        window = F.grid_sample(
            src, grid[None], mode=self.paste_interpolation, padding_mode="border", align_corners=False,
        )
        if self.edge_mode == "pil":  # pixels whose centre falls outside the crop read 0
            window = window * ((grid >= -1) & (grid < 1)).all(dim=-1)[None, None].to(window.dtype)
        if self.uint8_resample:
            window = torch.floor(window * 255.0 + 1e-3).div_(255.0)
        # Bicubic overshoots a little: keep probabilities in [0, 1].
        full[r0:r1, c0:c1] = window[0, 0].clamp(0.0, 1.0)


def _opencv_cubic_taps(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray]:
    """``cv2.resize``'s ``INTER_CUBIC`` sampling of ``src`` samples at ``dst`` outputs.

    Returns:
        ``(dst, 4)`` int64 source indices, clamped into ``[0, src)`` (OpenCV repeats the edge
        sample), and ``(dst, 4)`` float32 weights (Keys kernel, a = -0.75), computed with the same
        float32 steps as OpenCV.
    """
    scale = 1.0 / (dst / src)  # OpenCV keeps the inverse scale and inverts it
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f)
    x = f - s
    a, one = np.float32(-0.75), np.float32(1.0)
    x1, omx = x + one, one - x
    c0 = ((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a
    c1 = ((a + 2) * x - (a + 3)) * x * x + one
    c2 = ((a + 2) * omx - (a + 3)) * omx * omx + one
    c3 = one - c0 - c1 - c2
    idx = np.clip(s.astype(np.int64)[:, None] + np.arange(-1, 3), 0, src - 1)
    return idx, np.stack([c0, c1, c2, c3], axis=1).astype(np.float32)


def _opencv_resize_rows_cols(
    src: torch.Tensor, taps_y: Tuple[torch.Tensor, torch.Tensor], taps_x: Tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Separable resampling of ``(..., H, W)`` with 4-tap indices and weights, columns first as
    OpenCV does (the order decides the last float bits)."""
    (ry, wy), (rx, wx) = taps_y, taps_x
    cols = sum(src.index_select(-1, rx[:, k]) * wx[:, k] for k in range(4))
    return sum(cols.index_select(-2, ry[:, k]) * wy[:, k, None] for k in range(4))


def _opencv_crop_resize(image: torch.Tensor, box: np.ndarray, size: int) -> torch.Tensor:
    """Original DEXTR's crop of ``image`` to the whole-pixel ``box`` (zeros past the image) and
    ``cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)`` of its 8-bit pixels.

    OpenCV (4.x) resamples 8-bit images with float weights, rounds to the nearest level and
    saturates to ``0..255``; taps past the crop repeat its edge pixel.

    Args:
        image: ``(C, H, W)`` float tensor in ``[0, 1]`` holding 8-bit levels.
        box: ``[y0, x0, y1, x1]`` whole-pixel box (``y1``/``x1`` exclusive).

    Returns:
        ``(C, size, size)`` float tensor in ``[0, 1]`` on 8-bit levels.
    """
    _, h, w = image.shape
    y0, x0, y1, x1 = (int(v) for v in box)
    dev = image.device
    taps, window = [], []
    for lo, length, bound in ((y0, y1 - y0, h), (x0, x1 - x0, w)):
        idx, wts = _opencv_cubic_taps(length, size)
        idx = idx + lo  # image coordinates; past the image the zero padding reads 0
        wts = wts * ((idx >= 0) & (idx < bound))
        idx = np.clip(idx, 0, bound - 1)
        first = int(idx.min())
        window.append(slice(first, int(idx.max()) + 1))
        taps.append((torch.as_tensor(idx - first, device=dev), torch.as_tensor(wts, device=dev)))
    levels = torch.round(image[:, window[0], window[1]].float() * 255.0)
    out = _opencv_resize_rows_cols(levels, taps[0], taps[1])
    return torch.round(out).clamp_(0, 255).to(image.dtype).div_(255.0)


def _opencv_paste(prob: torch.Tensor, box: np.ndarray, full: torch.Tensor) -> None:
    """Original DEXTR's ``crop2fullmask``: ``cv2.resize`` of the ``(T, T)`` map to the box's size
    (float bicubic, edge repeated), written into ``full`` (in place) where the box meets it."""
    h, w = full.shape
    y0, x0, y1, x1 = (int(v) for v in box)
    r0, c0, r1, c1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if r1 <= r0 or c1 <= c0:
        return
    t = prob.shape[-1]
    taps = []
    for lo, length, a, b in ((y0, y1 - y0, r0, r1), (x0, x1 - x0, c0, c1)):
        idx, wts = _opencv_cubic_taps(t, length)
        taps.append((torch.as_tensor(idx[a - lo:b - lo], device=prob.device),
                     torch.as_tensor(wts[a - lo:b - lo], device=prob.device, dtype=prob.dtype)))
    window = _opencv_resize_rows_cols(prob, taps[0], taps[1])
    # Bicubic overshoots a little; the original thresholds as is, clamping keeps every threshold's mask.
    full[r0:r1, c0:c1] = window.clamp_(0.0, 1.0)


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


def _crop_grid(theta: torch.Tensor, t: int) -> torch.Tensor:
    """``F.affine_grid(theta, [N, C, t, t], align_corners=False)`` for ``_crop_theta``'s
    axis-aligned matrices, bit for bit, built from one row and one column of coordinates instead
    of a matrix product per pixel (a tenth of the time at 512 px)."""
    base = torch.linspace(-1, 1, t, dtype=theta.dtype, device=theta.device) * (t - 1) / t  # as ATen
    xs = base * theta[:, 0, 0, None] + theta[:, 0, 2, None]  # (N, t): the same for every row
    ys = base * theta[:, 1, 1, None] + theta[:, 1, 2, None]  # (N, t): the same for every column
    n = theta.shape[0]
    return torch.stack((xs[:, None, :].expand(n, t, t), ys[:, :, None].expand(n, t, t)), dim=-1)


def as_corrections(clicks: Any, n: int, name: str = "positive") -> Optional[Corrections]:
    """Validate correction clicks of ``n`` objects.

    Args:
        clicks: ``None``, or one entry per object, each a ``(k, 2)`` array-like of ``[y, x]``
            points (``k`` may be 0: ``[]`` or ``np.zeros((0, 2))``). With ``n == 1`` a single
            ``(k, 2)`` array (``k >= 1``) is taken as the object's clicks.
        n: the number of objects.
        name: the argument's name in error messages.

    Returns:
        ``None`` (no clicks), or ``n`` ``(k, 2)`` float64 arrays.

    Raises:
        MismatchError: not one entry per object.
        InvalidPointsError: an entry that is not ``(k, 2)`` finite numbers.
    """
    if clicks is None:
        return None
    if isinstance(clicks, np.ndarray) and clicks.dtype != object and clicks.ndim == 2 and n == 1:
        clicks = [clicks]
    if isinstance(clicks, (str, bytes)) or not isinstance(clicks, (Sequence, np.ndarray)):
        raise InvalidPointsError(f"{name} must be a list with one (k, 2) [y, x] array per object, "
                                 f"got {type(clicks).__name__}")
    if len(clicks) != n:
        raise MismatchError(f"{name} has {len(clicks)} entries for {n} objects; give one (k, 2) "
                            "[y, x] array per object (an empty one for an object without clicks)")
    out = []
    for i, c in enumerate(clicks):
        try:
            a = np.asarray(c, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidPointsError(f"{name}[{i}] must be numbers, a (k, 2) array of [y, x] "
                                     "points") from None
        if a.size == 0:
            a = a.reshape(0, 2)
        if a.ndim != 2 or a.shape[1] != 2:
            raise InvalidPointsError(f"{name}[{i}] must have shape (k, 2) as k [y, x] points, "
                                     f"got shape {a.shape}")
        if not np.isfinite(a).all():
            raise InvalidPointsError(f"{name}[{i}] contains NaN or infinite coordinates")
        out.append(a)
    return out


def image_to_tensor(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 tensor in ``[0, 1]`` on ``device``.

    The uint8 data is moved first, so a GPU receives a quarter of the bytes."""
    rgb = np.ascontiguousarray(rgb)
    if not rgb.flags.writeable:  # e.g. np.asarray(PIL image): torch would warn about sharing it
        rgb = rgb.copy()
    t = torch.from_numpy(rgb).to(device, non_blocking=True)
    return t.permute(2, 0, 1).float().div_(255.0)


#: Named profiles. ``dextr`` is the ``dextr`` 0.1.2 package's profile and the default.
PROFILES: Dict[str, Preprocess] = {"dextr": Preprocess()}

#: Models imported from ``dextr`` 0.1.2 files: its profile with its coordinate conventions
#: (points as continuous coordinates, image crop box truncated to whole pixels).
PROFILES["dextr012"] = Preprocess(
    name="dextr012", point_origin="corner", crop_box_truncate=True, uint8_resample=True,
    edge_mode="pil",
)

#: Original DEXTR-PyTorch (Maninis et al.), its ``demo.py``: clicks truncated to whole pixels,
#: 50 px relax in image pixels, zero padding past the image, ``cv2.resize`` to 512x512 bicubic on
#: 8-bit pixels, Gaussians of full width at half maximum 10 (std 10 / 2.3548) at truncated crop
#: pixels, combined by max and scaled to 0-255, raw 0-255 RGB, ``cv2.resize`` bicubic paste-back,
#: zero outside the points' box, threshold 0.8.
PROFILES["original"] = Preprocess(
    name="original", target_size=512, padding=50.0, padding_mode="image",
    blob_sigma=10.0 / (2.0 * float(np.sqrt(2.0 * np.log(2.0)))), heatmap_combine="max",
    mean=(0.0, 0.0, 0.0, 0.0), std=(1 / 255.0,) * 4, interpolation="bicubic", clip_to_box=True,
    threshold=0.8, point_origin="corner", heatmap_snap=True, paste_interpolation="bicubic",
    integer_points=True, resampler="opencv",
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
