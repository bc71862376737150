"""Training samples: an object of an :class:`ObjectDataset` turned into a network input and target.

Each sample draws the extreme points the way ``dextr`` 0.1.2 does (a random object pixel within
``extreme_range`` crop pixels of each extreme side, plus Gaussian noise of ``noise_std`` crop
pixels), after a random horizontal flip and rotation of the object, and then applies *exactly* the
inference crop and heatmap of the model's :class:`~dextr_lib.inference.preprocessing.Preprocess`. Flip and
rotation are folded into the crop's sampling grid, so only the crop's pixels are ever resampled.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.geometry import image_to_crop
from ..data.base import ImageTargets, ObjectDataset, ObjectRecord
from ..errors import DatasetError
from ..inference.preprocessing import Preprocess, image_to_tensor


class _ImageCache:
    """A small LRU of decoded ``(rgb, targets)`` per image: decoding dominates per-sample cost."""

    def __init__(self, dataset: ObjectDataset, size: int):
        self.dataset = dataset
        self.size = size
        self._items: "OrderedDict[str, Tuple[np.ndarray, ImageTargets]]" = OrderedDict()

    def get(self, image: str) -> Tuple[np.ndarray, ImageTargets]:
        item = self._items.get(image)
        if item is not None:
            self._items.move_to_end(image)
            return item
        rgb = self.dataset.read_image(image)
        targets = self.dataset.read_targets(image)
        if targets.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{image} is {rgb.shape[1]}x{rgb.shape[0]} px but its targets are "
                f"{targets.shape[1]}x{targets.shape[0]} px"
            )
        item = (rgb, targets)
        if self.size > 0:
            self._items[image] = item
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


class TrainingSamples(torch.utils.data.Dataset):
    """Randomly augmented training samples (a map-style dataset indexed by ``(object, seed)``).

    Args:
        dataset: the objects.
        preprocess: the model's pre-processing profile (crop size, padding, heatmap).
        extreme_range: points are drawn from object pixels within this many crop pixels of each
            extreme side.
        noise_std: Gaussian jitter of the points, in crop pixels.
        hflip: random horizontal flips.
        rot_range: rotations uniform in ``[-rot_range, rot_range]`` degrees.
        scale_range: ``r > 0`` scales the crop box about its centre by a factor uniform in
            ``[1 - r, 1 + r]`` (more or less context than inference); 0 disables it.
        cache_images: decoded images (and their targets) kept in memory, per worker.

    Items: ``dataset[(i, seed)]`` (or ``dataset[i]``, seed ``i``) is a dict with ``input``
    ``(4, T, T)`` float32 (normalised), ``target`` ``(1, T, T)`` float32 in ``[0, 1]``, ``valid``
    ``(1, T, T)`` float32 (0 on ignored pixels) and ``points`` ``(4, 2)`` crop-space ``[y, x]``.
    The seed fixes all of the sample's randomness, so a run is reproducible with any number of
    data-loading workers.
    """

    def __init__(
        self,
        dataset: ObjectDataset,
        preprocess: Preprocess,
        *,
        extreme_range: float = 5.0,
        noise_std: float = 1.0,
        hflip: bool = True,
        rot_range: float = 20.0,
        scale_range: float = 0.0,
        cache_images: int = 256,
    ):
        self.dataset = dataset
        self.preprocess = preprocess
        self.extreme_range = float(extreme_range)
        self.noise_std = float(noise_std)
        self.hflip = bool(hflip)
        self.rot_range = float(rot_range)
        self.scale_range = float(scale_range)
        if not 0.0 <= self.scale_range < 1.0:
            raise ValueError(f"scale_range must be in [0, 1), got {scale_range}")
        self._cache = _ImageCache(dataset, cache_images)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> Dict[str, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng(seed)
        record = self.dataset.objects[index]
        rgb, targets = self._cache.get(record.image)
        return self.make_sample(rgb, targets, record, rng)

    def make_sample(
        self, rgb: np.ndarray, targets: ImageTargets, record: ObjectRecord, rng: np.random.Generator
    ) -> Dict[str, torch.Tensor]:
        """One augmented sample of ``record`` on its decoded image and targets."""
        mask = targets.object_mask(record)
        flip = self.hflip and rng.random() < 0.5
        angle = math.radians(rng.uniform(-self.rot_range, self.rot_range)) if self.rot_range else 0.0
        fwd, inv = augmentation_affine(record.box, flip, angle)
        points = sample_extreme_points(
            mask, record.box, fwd, self.preprocess.target_size, self.extreme_range,
            self.noise_std, rng,
        )
        pp = self.preprocess
        box = pp.boxes(points[None])[0]
        if self.scale_range:
            s = rng.uniform(1.0 - self.scale_range, 1.0 + self.scale_range)
            centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * s
            box = np.concatenate([centre - half, centre + half])
        # The profile's inference quirks (legacy profiles) apply to training crops too.
        crop_box = pp.sampling_boxes(box)
        rgb_crop, mask_crop, ignore_crop = crop_transformed(
            rgb, mask, targets.ignore, crop_box, inv, pp.target_size, pp.interpolation,
            edge_mode=pp.edge_mode,
        )
        rgb_crop = pp.to_8bit(rgb_crop)
        heat = pp.heatmaps(points[None], box[None], torch.device("cpu"))
        return {
            "input": pp.normalize(rgb_crop[None], heat)[0],
            "target": mask_crop,
            "valid": 1.0 - ignore_crop,
            "points": torch.as_tensor(image_to_crop(points[None], box[None], pp.target_size)[0], dtype=torch.float32),
        }


def augmentation_affine(box: Sequence[int], flip: bool, angle: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(forward, inverse)`` 3x3 matrices on continuous ``[y, x, 1]`` coordinates: a horizontal
    flip and a rotation by ``angle`` radians, both about the centre of ``box`` (inclusive pixels)."""
    y0, x0, y1, x1 = box
    cy, cx = (y0 + y1 + 1) / 2.0, (x0 + x1 + 1) / 2.0
    to_origin = np.array([[1, 0, -cy], [0, 1, -cx], [0, 0, 1]], dtype=np.float64)
    back = np.array([[1, 0, cy], [0, 1, cx], [0, 0, 1]], dtype=np.float64)
    f = np.diag([1.0, -1.0 if flip else 1.0, 1.0])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)
    fwd = back @ rot @ f @ to_origin
    return fwd, np.linalg.inv(fwd)


def sample_extreme_points(
    mask: np.ndarray,
    box: Sequence[int],
    fwd: np.ndarray,
    target_size: int,
    extreme_range: float,
    noise_std: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Random extreme points of a transformed object, as ``dextr`` 0.1.2 draws them.

    The object's pixel centres are mapped by ``fwd``; with the object's transformed extent scaled
    to ``target_size`` on each axis (the crop's scale), one pixel is drawn at random among those
    within ``extreme_range`` of each extreme side, then jittered by ``noise_std`` (same scale).

    Returns:
        ``(4, 2)`` float64 ``[y, x]`` pixel indices in the transformed image (left, right, top, bottom).
    """
    y0, x0, y1, x1 = box
    ys, xs = np.nonzero(mask[y0:y1 + 1, x0:x1 + 1])
    if len(ys) == 0:
        raise DatasetError("an indexed object has no pixels; its target file changed: delete the dataset cache")
    pts = np.stack([ys + y0 + 0.5, xs + x0 + 0.5], axis=1) @ fwd[:2, :2].T + fwd[:2, 2]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    # Crop pixels per transformed image pixel, per axis (the crop stretches the extent to T).
    unit = np.maximum(hi - lo, 1.0) / target_size
    near = extreme_range * unit
    sides = (
        pts[:, 1] <= lo[1] + near[1],  # left
        pts[:, 1] >= hi[1] - near[1],  # right
        pts[:, 0] <= lo[0] + near[0],  # top
        pts[:, 0] >= hi[0] - near[0],  # bottom
    )
    chosen = np.stack([pts[rng.choice(np.flatnonzero(s))] for s in sides])
    if noise_std:
        chosen = chosen + rng.normal(size=chosen.shape) * noise_std * unit
    return chosen - 0.5  # pixel centres -> pixel indices


def crop_transformed(
    rgb: np.ndarray,
    mask: np.ndarray,
    ignore: Optional[np.ndarray],
    box: np.ndarray,
    inv: np.ndarray,
    size: int,
    interpolation: str,
    edge_mode: str = "zeros",
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop ``box`` (continuous, in transformed coordinates) of the transformed image.

    ``inv`` maps transformed coordinates back to the image. With the identity it samples the same
    grid as :meth:`Preprocess.crop` (``edge_mode`` as its profile field). Only the image region
    under the grid is converted.

    Returns:
        ``(rgb (3, T, T) in [0, 1], mask (1, T, T) in [0, 1], ignore (1, T, T) in {0, 1})``.
    """
    h, w = mask.shape
    t = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    gy = box[0] + t * (box[2] - box[0])
    gx = box[1] + t * (box[3] - box[1])
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    inv_t = torch.as_tensor(inv, dtype=torch.float64)
    sy = inv_t[0, 0] * yy + inv_t[0, 1] * xx + inv_t[0, 2]
    sx = inv_t[1, 0] * yy + inv_t[1, 1] * xx + inv_t[1, 2]
    m = 3  # margin: bicubic reads 2 pixels beyond the sample point
    r0 = max(int(math.floor(float(sy.min()))) - m, 0)
    c0 = max(int(math.floor(float(sx.min()))) - m, 0)
    r1 = min(int(math.ceil(float(sy.max()))) + m, h)
    c1 = min(int(math.ceil(float(sx.max()))) + m, w)
    if r1 <= r0 or c1 <= c0:  # the crop lies outside the image
        z = torch.zeros((1, size, size))
        return torch.zeros((3, size, size)), z, z.clone()
    rh, rw = r1 - r0, c1 - c0
    grid = torch.stack([(sx - c0) / rw * 2 - 1, (sy - r0) / rh * 2 - 1], dim=-1)[None].float()
    img = image_to_tensor(rgb[r0:r1, c0:c1])[None]
    pil = edge_mode == "pil"  # as Preprocess.crop: clamp at the image edge, zero outside it
    rgb_crop = F.grid_sample(img, grid, mode=interpolation, padding_mode="border" if pil else "zeros",
                             align_corners=False)[0]
    if pil:
        inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
        rgb_crop = rgb_crop * inside.to(rgb_crop.dtype)
    planes = [torch.from_numpy(mask[r0:r1, c0:c1].astype(np.float32))]
    if ignore is not None:
        planes.append(torch.from_numpy(ignore[r0:r1, c0:c1].astype(np.float32)))
    sampled = F.grid_sample(torch.stack(planes)[None], grid, mode="bilinear",
                            padding_mode="border" if pil else "zeros", align_corners=False)[0]
    if pil:
        sampled = sampled * inside.to(sampled.dtype)
    mask_crop = sampled[:1].clamp_(0, 1)
    ignore_crop = (sampled[1:2] > 0.5).float() if ignore is not None else torch.zeros_like(mask_crop)
    return rgb_crop, mask_crop, ignore_crop


class SampleStream(torch.utils.data.Sampler):
    """Endless ``(object index, sample seed)`` stream for :class:`TrainingSamples`.

    Sample ``g`` (counting from the start of training, over all processes) is the ``g % N``-th
    object of a random permutation drawn for pass ``g // N`` (re-seeded per pass, as
    ``DistributedSampler.set_epoch`` does); everything depends only on ``seed`` and ``g``, so a
    resumed run (``start`` = samples already seen) continues the same stream exactly.

    With ``world_size`` processes, each step's global batch is ``batch_size * world_size``
    consecutive samples and process ``rank`` takes its ``rank``-th slice of ``batch_size``: the
    processes see disjoint samples, and a job may resume with another number of processes.
    """

    def __init__(self, n: int, seed: int, start: int = 0, *, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1):
        self.n = n
        self.seed = int(seed)
        self.start = int(start)
        self.rank, self.world_size, self.batch_size = int(rank), int(world_size), int(batch_size)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        b, w = self.batch_size, self.world_size
        perm_pass, perm = -1, None
        k = 0
        while True:
            step, j = divmod(k, b)
            g = self.start + step * b * w + self.rank * b + j
            p, pos = divmod(g, self.n)
            if p != perm_pass:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
                perm, perm_pass = torch.randperm(self.n, generator=gen).tolist(), p
            yield perm[pos], int(np.random.SeedSequence([self.seed, g]).generate_state(1)[0])
            k += 1

    def __len__(self) -> int:  # pragma: no cover - endless; DataLoader only needs it for len()
        return 2 ** 62
