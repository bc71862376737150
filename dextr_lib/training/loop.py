"""The training loop: steps, epochs, validation and resumable state — no files, no printing.

:func:`training_loop` trains a plain ``nn.Module`` (with the :class:`Preprocess` its samples are
made with) and reports through a :class:`Callbacks` object, the one hook style of training;
saving checkpoints and metrics is the caller's business (:class:`~dextr_lib.training.TrainingJob`
does it in its ``epoch_end``). ``epoch_end`` receives the :class:`TrainingState`, whose
:meth:`~TrainingState.to_dict` is plain data loadable with ``torch.load(weights_only=True)``.

Under ``torchrun`` (see :mod:`dextr_lib.utils.distributed`) the loop trains the model with
DistributedDataParallel: every process draws its own slice of each global batch, gradients are
averaged, and validation is split over the processes and summed over all objects.
"""
from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

from ..config import TrainSettings
from ..core.geometry import extreme_points_from_mask
from ..data import ObjectDataset
from ..evaluation.metrics import iou
from ..inference.device import module_device, resolve_device
from ..inference.preprocessing import Preprocess, image_to_tensor
from ..utils import distributed
from .corrections import rounds_for_step, simulate_corrections
from .losses import balanced_bce_with_logits
from .optim import make_optimizer, set_lr
from .samples import SampleStream, TrainingSamples


@dataclass
class EpochResult:
    """What one epoch produced (one ``metrics.jsonl`` line). Epoch 0 is the starting model's
    validation before fine-tuning (no training values)."""

    epoch: int
    train_loss: Optional[float]
    lr: Optional[float]  # the new-layer group's LR at the end of the epoch
    seconds: float  # training time of the epoch (validation not included)
    samples_per_s: Optional[float]  # training samples per second, all processes (loading included)
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
    samples_seen: Optional[int] = None  # training samples drawn, all processes (None: old checkpoints)
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


class Callbacks:
    """What a training run reports (as detectron2's ``HookBase``): override the methods you want
    (all do nothing here). :func:`training_loop` calls :meth:`iteration`, :meth:`validation` and
    :meth:`epoch_end`; a :class:`~dextr_lib.training.TrainingJob` also the others. Only the main
    process of a torchrun job calls them."""

    def message(self, text: str) -> None:
        """A status line (also written to the job's ``log.txt``)."""

    def warning(self, text: str) -> None:
        """A problem that does not stop the job (also in ``log.txt``)."""

    def indexing(self, done: int, total: int) -> None:
        """Dataset indexing progress (images)."""

    def download(self, done: int, total: Optional[int]) -> None:
        """Download progress (bytes) of a model-zoo model to fine-tune."""

    def iteration(self, epoch: int, step: int, steps: int, loss: float, lr: float) -> None:
        """After each optimiser step: ``epoch`` (1-based), ``step`` of ``steps`` in it, the mean
        loss of the step and the new-layer group's learning rate."""

    def validation(self, done: int, total: int) -> None:
        """Validation progress (objects of this process)."""

    def epoch_end(self, result: EpochResult, state: TrainingState) -> None:
        """After an epoch and its validation, with the resumable ``state`` (the network holds
        the matching weights); a job's metrics line and checkpoints are written by then."""


class TrainingInterrupted(Exception):
    """Raised at a step boundary after SIGINT (Ctrl-C) or SIGTERM, with the state of the last
    completed step (the network holds the matching weights), so the caller can save it."""

    def __init__(self, state: TrainingState, signal_name: str = "SIGINT"):
        super().__init__(f"training interrupted ({signal_name})")
        self.state = state
        self.signal_name = signal_name


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
    """Seed Python, NumPy and torch (CPU and CUDA): call it before creating the model."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class DeferredSignals:
    """While active, SIGINT and SIGTERM only set :attr:`received`; the loop stops at the next
    step boundary, so no half-done step is ever saved. A second signal interrupts at once
    (``KeyboardInterrupt``). Only the main thread can own signals; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "DeferredSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _ignore_sigint_in_worker(_: int) -> None:
    # Ctrl-C reaches the whole process group: loader workers leave stopping to the main process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class ValidationResult:
    loss: float
    miou: float
    n_objects: int


def validate(
    net: torch.nn.Module,
    preprocess: Preprocess,
    dataset: ObjectDataset,
    *,
    batch_size: int = 8,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> ValidationResult:
    """Loss and mean IoU on a dataset, with the paper's extreme points of each ground-truth mask.

    The loss is the training loss on the crops; the IoU compares the full-size pasted-back mask
    (thresholded at the profile's threshold) with the ground truth, ignored pixels excluded —
    as ``dextr eval``. Under torchrun each process takes every ``world``-th image and the sums
    are all-reduced, so the mean is over all objects.

    Args:
        net: the network, ``(N, 4, T, T)`` inputs to ``(N, 1, T, T)`` logits, on its device.
        preprocess: its crop, heatmap and paste-back settings.
    """
    world = distributed.current()
    pp = preprocess
    dev = module_device(net)
    was_training = net.training
    net.eval()
    iou_sum, loss_sum, n_obj, done = 0.0, 0.0, 0, 0
    groups = dataset.image_groups()[world.rank::world.size]
    total = sum(len(idx) for _, idx in groups)
    try:
        with torch.no_grad():
            for image, idx in groups:
                rgb = dataset.read_image(image)
                targets = dataset.read_targets(image)
                img_t = image_to_tensor(rgb, dev)
                for s in range(0, len(idx), batch_size):
                    recs = [dataset.objects[i] for i in idx[s:s + batch_size]]
                    masks = [targets.object_mask(r) for r in recs]
                    points = np.stack([extreme_points_from_mask(m) for m in masks]).astype(np.float64)
                    x, boxes = pp.make_inputs(img_t, points)
                    logits = net(x.contiguous(memory_format=torch.channels_last)).float()
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
                        iou_sum += iou(full.cpu().numpy() >= pp.threshold, m, targets.ignore)
                    n_obj += len(recs)
                    done += len(recs)
                    if on_progress is not None:
                        on_progress(done, total)
    finally:
        net.train(was_training)
    iou_sum, loss_sum, n = distributed.all_reduce_sum([iou_sum, loss_sum, n_obj])
    n = int(n)
    return ValidationResult(loss_sum / max(n, 1), iou_sum / n if n else float("nan"), n)


def iterations_per_epoch(s: TrainSettings, n_objects: int, world_size: int = 1) -> int:
    """Optimiser steps per epoch (``iters_per_epoch``, or one pass over the objects for -1)."""
    if s.iters_per_epoch != -1:
        return s.iters_per_epoch
    return max(n_objects // (s.batch_size * world_size), 1)


def training_loader(
    dataset: ObjectDataset, preprocess: Preprocess, s: TrainSettings, *, start: int = 0,
    world: Optional[distributed.World] = None,
) -> torch.utils.data.DataLoader:
    """The endless loader of augmented training batches that :func:`training_loop` draws from:
    ``s.batch_size`` samples per batch, from sample ``start`` of the seeded stream (this
    process's slice under torchrun), made by ``s.num_workers`` processes (0: this one)."""
    world = world or distributed.current()
    samples = TrainingSamples(
        dataset, preprocess, extreme_range=s.extreme_range, noise_std=s.noise_std,
        hflip=s.aug_hflip, rot_range=s.aug_rot_range, scale_range=s.aug_scale_range,
    )
    return torch.utils.data.DataLoader(
        samples, batch_size=s.batch_size,
        sampler=SampleStream(len(samples), s.seed or 0, start=start, rank=world.rank,
                             world_size=world.size, batch_size=s.batch_size),
        num_workers=s.num_workers, persistent_workers=False,
        worker_init_fn=_ignore_sigint_in_worker if s.num_workers else None,
    )


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Dict[str, torch.Tensor],
               device: torch.device, inputs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One optimiser step on a batch of :func:`training_loader`; returns the (detached) loss.

    ``inputs`` replaces the batch's ``input`` (the batch with simulated corrections,
    :func:`~dextr_lib.training.corrections.simulate_corrections`)."""
    if inputs is None:
        inputs = batch["input"].to(device, non_blocking=True)
    x = inputs.contiguous(memory_format=torch.channels_last)
    target = batch["target"].to(device, non_blocking=True)
    valid = batch["valid"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    loss = balanced_bce_with_logits(net(x).float(), target, valid)
    loss.backward()
    optimizer.step()
    return loss.detach()


def training_loop(
    net: torch.nn.Module,
    preprocess: Preprocess,
    train_dataset: ObjectDataset,
    val_dataset: Optional[ObjectDataset] = None,
    settings: Optional[TrainSettings] = None,
    *,
    device: Optional[str] = None,
    state: Optional[TrainingState] = None,
    finetune: bool = False,
    callbacks: Optional[Callbacks] = None,
    signals: Optional[DeferredSignals] = None,
    **overrides: Any,
) -> TrainingState:
    """Train the network ``net`` in place (moved to ``device``).

    Seed first (:func:`seed_everything`, before creating the model) for a reproducible run; a
    new run (no ``state``) re-seeds with ``settings.seed`` before its first step.

    Args:
        net: the network to train (a model's ``net``; under torchrun its SyncBatchNorm layers
            are converted in place, so the model still saves it).
        preprocess: the crop, heatmap and paste-back settings of its samples.
        train_dataset, val_dataset: :class:`ObjectDataset` objects (validation optional).
        settings: a :class:`~dextr_lib.config.TrainSettings`; keyword ``overrides`` replace single
            fields (``training_loop(net, pp, ds, None, num_epochs=2, batch_size=8)``).
        device: ``cpu``, ``cuda``... (default: CUDA when available; under torchrun with CUDA,
            the process's ``LOCAL_RANK`` GPU).
        state: a :class:`TrainingState` to resume from (``net`` must hold the matching weights).
        finetune: every layer is trained already: validate the starting model first (epoch 0, so
            "best" may be the start) and let the new layers learn at the encoder's rate.
        callbacks: a :class:`Callbacks` receiving ``iteration``, ``validation`` and
            ``epoch_end``.
        signals: an active :class:`DeferredSignals` of the caller (default: the loop defers
            SIGINT/SIGTERM itself while it runs).

    Returns:
        The final :class:`TrainingState`.

    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM (deferred to the end of the running step),
            carrying the state of that step; the network holds the matching weights.
        DistributedError: another process of a torchrun job died.
    """
    s = dataclasses.replace(settings or TrainSettings(), **overrides)
    world = distributed.current()
    iters = iterations_per_epoch(s, len(train_dataset), world.size)
    total_iters = iters * s.num_epochs
    dev = _device(device, world)
    cb = callbacks or Callbacks()
    net.to(dev)
    net.to(memory_format=torch.channels_last)  # ~30% faster CPU convolutions
    trained = _parallel(net, s, world, dev)
    optimizer = make_optimizer(net, s, finetune=finetune)
    st = state or TrainingState()
    if st.samples_seen is None:
        st.samples_seen = st.iteration * s.batch_size
    if st.optimizer is not None:
        optimizer.load_state_dict(st.optimizer)
    loader = training_loader(train_dataset, preprocess, s, start=st.samples_seen, world=world)
    batches: Iterator = iter(loader)
    # Seed (or restore) only now: creating the loader's iterator draws from torch's RNG, and the
    # head's dropout must see the same random stream in a resumed run as in an uninterrupted one.
    if st.rng is not None:
        restore_rng(st.rng)
    else:
        seed_everything(s.seed or 0)

    def snapshot() -> TrainingState:
        st.optimizer = optimizer.state_dict()
        st.rng = capture_rng()
        return st

    def run_validation() -> ValidationResult:
        v = validate(net, preprocess, val_dataset, batch_size=max(s.batch_size, 8), on_progress=cb.validation)
        net.train()
        return v

    net.train()
    try:
        with contextlib.nullcontext(signals) if signals is not None else DeferredSignals() as signals:
            if finetune and val_dataset is not None and st.iteration == 0 and not st.history:
                t0 = time.perf_counter()
                v = run_validation()
                st.best_miou = v.miou
                result = EpochResult(0, None, None, 0.0, None, v.loss, v.miou, time.perf_counter() - t0, True)
                st.history.append(result.to_dict())
                cb.epoch_end(result, snapshot())
            epoch_start = time.perf_counter()
            epoch_first_iter = st.iteration
            stops = 0.0
            while st.iteration < total_iters:
                # Stop between steps only, all processes at the same step (they agreed on
                # `stops` at the end of the previous one), so the saved state is one step's.
                stop = stops if world.distributed else signals.received is not None
                if stop:
                    raise TrainingInterrupted(snapshot(), signals.received or "a signal to another process")
                set_lr(optimizer, s, st.iteration, total_iters)
                batch = next(batches)
                inputs = None
                if s.corrections:  # RITM's iterative training: clicks on the current model's errors
                    rounds = rounds_for_step(s.corrections, s.seed or 0, st.iteration)
                    inputs = simulate_corrections(net, batch, preprocess, rounds, dev)
                try:
                    loss = train_step(trained, optimizer, batch, dev, inputs)
                except RuntimeError as e:
                    if world.distributed:  # a gradient all-reduce failed: a peer is gone
                        raise distributed.lost_process_error(e) from None
                    raise
                st.iteration += 1
                st.samples_seen += s.batch_size * world.size
                # One small all-reduce per step: the mean loss, and whether any process was asked
                # to stop (all stop at the same step, so the saved state is one consistent step).
                loss_sum, stops = distributed.all_reduce_sum([loss.item(), signals.received is not None])
                loss_value = loss_sum / world.size
                st.epoch_loss_sum += loss_value
                in_epoch = st.iteration - st.epoch * iters
                cb.iteration(st.epoch + 1, in_epoch, iters, loss_value, optimizer.param_groups[-1]["lr"])
                if in_epoch == iters:
                    distributed.broadcast_buffers(net)  # validate and save one model
                    st.epoch += 1
                    seconds = time.perf_counter() - epoch_start
                    n_steps = st.iteration - epoch_first_iter
                    result = EpochResult(
                        epoch=st.epoch, train_loss=st.epoch_loss_sum / iters,
                        lr=optimizer.param_groups[-1]["lr"], seconds=seconds,
                        samples_per_s=n_steps * s.batch_size * world.size / max(seconds, 1e-9),
                    )
                    last = st.epoch == s.num_epochs
                    due = s.val_every_n_epochs and st.epoch % s.val_every_n_epochs == 0
                    if val_dataset is not None and (due or last):
                        t0 = time.perf_counter()
                        v = run_validation()
                        result.val_loss, result.val_miou = v.loss, v.miou
                        if st.best_miou is None or v.miou > st.best_miou:
                            st.best_miou, result.is_best = v.miou, True
                        result.val_seconds = time.perf_counter() - t0
                    st.epoch_loss_sum = 0.0
                    st.history.append(result.to_dict())
                    cb.epoch_end(result, snapshot())
                    epoch_start = time.perf_counter()
                    epoch_first_iter = st.iteration
    finally:
        del batches
    return snapshot()


def _device(device: Optional[str], world: distributed.World) -> torch.device:
    if world.distributed and torch.cuda.is_available() and (device is None or device in ("cuda", "auto")):
        return torch.device("cuda", world.local_rank)
    return resolve_device(device) if device is None or isinstance(device, str) else device


def _parallel(net: torch.nn.Module, s: TrainSettings, world: distributed.World, dev: torch.device):
    """The module to train: ``net``, or its DistributedDataParallel wrapper under torchrun
    (checkpoints keep saving ``net``: unwrapped, no ``module.`` prefix)."""
    if not world.distributed:
        return net
    if s.sync_bn and dev.type == "cuda":
        # in place below the root (a network is never a bare BatchNorm): ``net`` is still the
        # module the caller's model holds and saves
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[dev.index] if dev.type == "cuda" else None)
