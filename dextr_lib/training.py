"""Training DEXTR: the loop, its optimiser and schedule, validation, and resumable state.

:func:`training_loop` never prints; it reports through callbacks. Checkpointing is the caller's
business (see :mod:`dextr_lib.jobs`): ``on_epoch_end`` receives everything needed, including
:func:`TrainingState.to_dict`, a plain dict loadable with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .datasets import ObjectDataset
from .datasets.samples import SampleStream, TrainingSamples
from .device import resolve_device
from .errors import ConfigError
from .geometry import extreme_points_from_mask
from .losses import balanced_bce_with_logits
from .metrics import iou
from .model import DextrModel
from .preprocessing import image_to_tensor

LR_SCHEDULES = ("none", "cosine", "poly")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainSettings:
    """Every hyper-parameter of a training run (the defaults are ``dextr`` 0.1.2's)."""

    learning_rate: float = 0.1
    pretrained_lr_factor: float = 0.1  # encoder parameters' LR factor
    new_lr_factor: float = 1.0  # new layers' LR factor (fine-tuning: the pretrained factor)
    lr_sched: str = "poly"
    lr_poly_power: float = 0.9
    opt_type: str = "sgd"
    sgd_weight_decay: float = 1e-4
    extreme_range: float = 5.0
    noise_std: float = 1.0
    aug_hflip: bool = True
    aug_rot_range: float = 20.0
    aug_scale_range: float = 0.0
    batch_size: int = 4
    num_epochs: int = 100
    iters_per_epoch: int = 1000
    val_every_n_epochs: int = 25
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.lr_sched in LR_SCHEDULES, f"lr_sched must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_sched!r}"),
            (self.opt_type in OPTIMIZERS, f"opt_type must be one of {', '.join(OPTIMIZERS)}, got {self.opt_type!r}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.num_epochs >= 1, f"num_epochs must be >= 1, got {self.num_epochs}"),
            (self.iters_per_epoch >= 1 or self.iters_per_epoch == -1,
             f"iters_per_epoch must be >= 1 (or -1: one pass over the objects), got {self.iters_per_epoch}"),
            (self.val_every_n_epochs >= 0, f"val_every_n_epochs must be >= 0, got {self.val_every_n_epochs}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.extreme_range >= 0 and self.noise_std >= 0, "extreme_range and noise_std must be >= 0"),
            (0 <= self.aug_scale_range < 1, f"aug_scale_range must be in [0, 1), got {self.aug_scale_range}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def lr_factor(schedule: str, iteration: int, total_iters: int, power: float = 0.9) -> float:
    """Learning-rate multiplier at ``iteration`` (0-based) of ``total_iters``.

    ``none``: 1; ``cosine``: ``(1 + cos(pi * t)) / 2``; ``poly``: ``(1 - t) ** power``, with
    ``t = iteration / total_iters`` clamped to ``[0, 1]``.
    """
    t = min(max(iteration / max(total_iters, 1), 0.0), 1.0)
    if schedule == "none":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "poly":
        return (1.0 - t) ** power
    raise ConfigError(f"unknown lr schedule {schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")


def make_optimizer(model: DextrModel, s: TrainSettings) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, Nesterov, weight decay) or Adam, with an encoder and a new-layer group."""
    enc_ids = {id(p) for p in model.net.encoder_parameters()}
    params = [p for p in model.net.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in enc_ids], "lr": s.learning_rate * s.pretrained_lr_factor, "name": "encoder"},
        {"params": [p for p in params if id(p) not in enc_ids], "lr": s.learning_rate * s.new_lr_factor, "name": "new"},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["initial_lr"] = g["lr"]
    if s.opt_type == "sgd":
        return torch.optim.SGD(groups, lr=s.learning_rate, momentum=0.9, nesterov=True,
                               weight_decay=s.sgd_weight_decay)
    return torch.optim.Adam(groups, lr=s.learning_rate)


@dataclass
class EpochResult:
    """What one epoch produced (one ``metrics.jsonl`` line)."""

    epoch: int  # 1-based
    train_loss: float
    lr: float  # the new-layer group's LR at the end of the epoch
    seconds: float  # training time of the epoch (validation not included)
    samples_per_s: float  # training samples per second (data loading included)
    val_loss: Optional[float] = None
    val_miou: Optional[float] = None
    val_seconds: Optional[float] = None
    is_best: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainingState:
    """Resumable progress: counters plus optimiser and RNG state (weights live in the model)."""

    iteration: int = 0  # optimiser steps done
    epoch: int = 0  # completed epochs
    epoch_loss_sum: float = 0.0  # loss summed over the current, unfinished epoch
    best_miou: Optional[float] = None
    history: List[Dict[str, Any]] = field(default_factory=list)
    optimizer: Optional[Dict[str, Any]] = None
    rng: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (ints, floats, lists, tensors) for a ``weights_only`` checkpoint."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainingState":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def capture_rng() -> Dict[str, Any]:
    """RNG states of torch, NumPy and Python as weights_only-safe data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [int(py_state[0]), list(py_state[1]), py_state[2]],
    }


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


@dataclass
class ValidationResult:
    loss: float
    miou: float
    ious: List[float]


def validate(
    model: DextrModel,
    dataset: ObjectDataset,
    *,
    batch_size: int = 8,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> ValidationResult:
    """Loss and mean IoU on a dataset, with the paper's extreme points of each ground-truth mask.

    The loss is the training loss on the crops; the IoU compares the full-size pasted-back mask
    (thresholded at the profile's threshold) with the ground truth, ignored pixels excluded.
    """
    pp = model.preprocess
    dev = model.device
    was_training = model.net.training
    model.net.eval()
    ious: List[float] = []
    loss_sum, n_obj, done = 0.0, 0, 0
    total = len(dataset)
    try:
        with torch.no_grad():
            for image, idx in dataset.image_groups():
                rgb = dataset.read_image(image)
                targets = dataset.read_targets(image)
                img_t = image_to_tensor(rgb, dev)
                for s in range(0, len(idx), batch_size):
                    recs = [dataset.objects[i] for i in idx[s:s + batch_size]]
                    masks = [targets.object_mask(r) for r in recs]
                    points = np.stack([extreme_points_from_mask(m) for m in masks]).astype(np.float64)
                    x, boxes = pp.make_inputs(img_t, points)
                    logits = model.net(x.contiguous(memory_format=torch.channels_last)).float()
                    gt = torch.from_numpy(np.stack(masks).astype(np.float32)).to(dev)[:, None]
                    crop_boxes = pp.sampling_boxes(boxes)
                    tgt = pp.crop(gt, crop_boxes, mode="bilinear").clamp_(0, 1)
                    valid = None
                    if targets.ignore is not None:
                        ign = torch.from_numpy(targets.ignore.astype(np.float32)).to(dev)[None]
                        valid = 1.0 - (pp.crop(ign, crop_boxes, mode="bilinear") > 0.5).float()
                    for j in range(len(recs)):
                        loss_sum += float(balanced_bce_with_logits(
                            logits[j:j + 1], tgt[j:j + 1], None if valid is None else valid[j:j + 1]))
                    probs = torch.sigmoid(logits[:, 0])
                    for m, full in zip(masks, pp.paste(probs, boxes, rgb.shape[:2], points)):
                        ious.append(iou(full.cpu().numpy() >= pp.threshold, m, targets.ignore))
                    n_obj += len(recs)
                    done += len(recs)
                    if on_progress is not None:
                        on_progress(done, total)
    finally:
        model.net.train(was_training)
    return ValidationResult(loss_sum / max(n_obj, 1), float(np.mean(ious)) if ious else float("nan"), ious)


class TrainingInterrupted(Exception):
    """Raised (from KeyboardInterrupt) with the state at the last completed iteration."""

    def __init__(self, state: TrainingState):
        super().__init__("training interrupted")
        self.state = state


def training_loop(
    model: DextrModel,
    train_dataset: ObjectDataset,
    val_dataset: Optional[ObjectDataset] = None,
    settings: Optional[TrainSettings] = None,
    *,
    device: Optional[str] = None,
    state: Optional[TrainingState] = None,
    on_iteration: Optional[Callable[[int, int, float, float], None]] = None,
    on_epoch_end: Optional[Callable[[EpochResult, TrainingState], None]] = None,
    on_validation_progress: Optional[Callable[[int, int], None]] = None,
    **overrides: Any,
) -> TrainingState:
    """Train ``model`` in place (the seed's training API).

    Args:
        model: the :class:`DextrModel` to train; its ``preprocess`` defines the crops.
        train_dataset, val_dataset: :class:`ObjectDataset` objects (validation optional).
        settings: hyper-parameters; keyword ``overrides`` replace single fields
            (``training_loop(model, ds, None, num_epochs=2, batch_size=8)``).
        device: ``cpu``, ``cuda``... (default: CUDA when available).
        state: a :class:`TrainingState` to resume from (the model must hold the matching weights).
        on_iteration: ``(iteration within the epoch, iterations per epoch, loss, lr)`` after each step.
        on_epoch_end: ``(EpochResult, TrainingState)`` after each epoch (and its validation).
        on_validation_progress: ``(done, total)`` while validating.

    Returns:
        The final :class:`TrainingState`.

    Raises:
        TrainingInterrupted: on KeyboardInterrupt, carrying the state of the last completed step
            (the model holds the matching weights), so the caller can save it.
    """
    s = dataclasses.replace(settings or TrainSettings(), **overrides)
    iters = s.iters_per_epoch if s.iters_per_epoch != -1 else max(len(train_dataset) // s.batch_size, 1)
    total_iters = iters * s.num_epochs
    dev = resolve_device(device) if device is None or isinstance(device, str) else device
    model.to(dev)
    model.net.to(memory_format=torch.channels_last)  # ~30% faster CPU convolutions
    optimizer = make_optimizer(model, s)
    st = state or TrainingState()
    if st.optimizer is not None:
        optimizer.load_state_dict(st.optimizer)
    samples = TrainingSamples(
        train_dataset, model.preprocess, extreme_range=s.extreme_range, noise_std=s.noise_std,
        hflip=s.aug_hflip, rot_range=s.aug_rot_range, scale_range=s.aug_scale_range,
    )
    loader = torch.utils.data.DataLoader(
        samples, batch_size=s.batch_size,
        sampler=SampleStream(len(samples), s.seed, start=st.iteration * s.batch_size),
        num_workers=s.num_workers, persistent_workers=False,
    )
    batches = iter(loader)
    # Seed (or restore) only now: creating the loader's iterator draws from torch's RNG, and the
    # head's dropout must see the same random stream in a resumed run as in an uninterrupted one.
    if st.rng is not None:
        restore_rng(st.rng)
    else:
        seed_everything(s.seed)

    def snapshot() -> TrainingState:
        st.optimizer = optimizer.state_dict()
        st.rng = capture_rng()
        return st

    model.net.train()
    epoch_start = time.perf_counter()
    epoch_first_iter = st.iteration
    try:
        while st.iteration < total_iters:
            fac = lr_factor(s.lr_sched, st.iteration, total_iters, s.lr_poly_power)
            for g in optimizer.param_groups:
                g["lr"] = g["initial_lr"] * fac
            batch = next(batches)
            x = batch["input"].to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
            target = batch["target"].to(dev, non_blocking=True)
            valid = batch["valid"].to(dev, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = balanced_bce_with_logits(model.net(x).float(), target, valid)
            loss.backward()
            optimizer.step()
            st.iteration += 1
            loss_value = loss.item()
            st.epoch_loss_sum += loss_value
            in_epoch = st.iteration - st.epoch * iters
            if on_iteration is not None:
                on_iteration(in_epoch, iters, loss_value, optimizer.param_groups[-1]["lr"])
            if in_epoch == iters:
                st.epoch += 1
                seconds = time.perf_counter() - epoch_start
                n_steps = st.iteration - epoch_first_iter
                result = EpochResult(
                    epoch=st.epoch, train_loss=st.epoch_loss_sum / iters,
                    lr=optimizer.param_groups[-1]["lr"], seconds=seconds,
                    samples_per_s=n_steps * s.batch_size / max(seconds, 1e-9),
                )
                val_start = time.perf_counter()
                last = st.epoch == s.num_epochs
                due = s.val_every_n_epochs and st.epoch % s.val_every_n_epochs == 0
                if val_dataset is not None and (due or last):
                    v = validate(model, val_dataset, batch_size=max(s.batch_size, 8),
                                 on_progress=on_validation_progress)
                    result.val_loss, result.val_miou = v.loss, v.miou
                    if st.best_miou is None or v.miou > st.best_miou:
                        st.best_miou, result.is_best = v.miou, True
                    model.net.train()
                    result.val_seconds = time.perf_counter() - val_start
                st.epoch_loss_sum = 0.0
                st.history.append(result.to_dict())
                if on_epoch_end is not None:
                    on_epoch_end(result, snapshot())
                epoch_start = time.perf_counter()
                epoch_first_iter = st.iteration
    except KeyboardInterrupt:
        raise TrainingInterrupted(snapshot()) from None
    finally:
        del batches
    return snapshot()
