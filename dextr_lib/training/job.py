"""A training job: settings in, a job folder out — the policy around :func:`training_loop`.

:class:`TrainingJob` opens the datasets, creates (or loads) the model, owns the job folder
(:class:`~dextr_lib.training.folder.JobDir`, locked for the job's whole life), writes metrics
and best/last checkpoints at each epoch's end, saves ``last.pt`` on SIGINT/SIGTERM, and applies
the resume rules. It reports through :class:`Callbacks` and never prints::

    from dextr_lib.config import TrainSettings
    from dextr_lib.training import TrainingJob

    settings = TrainSettings(dataset="custom_label", image_pat=["data/images/*.png"],
                             target_pat=["data/labels/*.png"], arch="resunet18", target_size=128,
                             pretrained=False, num_epochs=6, iters_per_epoch=60, seed=0)
    with TrainingJob.create(settings, "peds", "jobs") as job:
        job.run()
    with TrainingJob.resume("peds", "jobs", changes={"num_epochs": 10}) as job:  # extend it
        job.run()

Under ``torchrun`` every process runs the same code; only the main one writes the folder.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ..config import SETTING_FIELDS, ModelsSettings, PathsSettings, TrainSettings, check_dataset
from ..core.images import open_image
from ..data import ObjectDataset, build_dataset
from ..errors import ConfigError, DatasetError, JobError
from ..inference.device import resolve_device
from ..model import DextrModel, create_model, load_model
from ..utils import distributed
from ..utils.fileio import check_clearable
from ..weights.architectures import check_architecture
from .curves import plot_curves
from .folder import JobDir
from .loop import (
    Callbacks, DeferredSignals, EpochResult, TrainingInterrupted, TrainingState, iterations_per_epoch, seed_everything,
    training_loop,
)

PathLike = Union[str, os.PathLike]
_PATTERN_KEYS = ("image_pat", "target_pat", "val_image_pat", "val_target_pat")
_COCO_PATH_KEYS = ("annotations", "images", "val_annotations", "val_images")


def check_nproc(nproc: int, device: Optional[str]) -> None:
    """Refuse ``nproc`` training processes on ``device`` (a ``--device`` string, ``None``: auto)
    that the machine cannot run, before torchrun starts any.

    Raises:
        DeviceError: ``device`` is unknown or not available here (CUDA without a GPU).
        DistributedError: more processes than CPU cores (cpu) or visible GPUs (cuda).
    """
    distributed.check_process_count(nproc, resolve_device(device))


def resolve_settings(settings: TrainSettings) -> TrainSettings:
    """A copy with every file reference absolute (patterns, ``@FILE`` lists, backbone weights,
    a local ``from_model``), so ``config.toml`` works from any folder and compares exactly."""
    def absolute(p: str) -> str:
        if p.startswith("@"):
            return "@" + os.path.abspath(os.path.expanduser(p[1:]))
        return p if os.path.isabs(p) else os.path.abspath(os.path.expanduser(p))

    s = dataclasses.replace(settings, **{k: [absolute(p) for p in getattr(settings, k)] for k in _PATTERN_KEYS})
    if s.backbone_weights is not None:
        s.backbone_weights = absolute(s.backbone_weights)
    if s.from_model is not None and os.path.exists(os.path.expanduser(s.from_model)):
        s.from_model = absolute(s.from_model)
    for key in _COCO_PATH_KEYS:
        if getattr(s, key) is not None:
            setattr(s, key, absolute(getattr(s, key)))
    return s


def open_datasets(
    s: TrainSettings, paths: Optional[PathsSettings] = None, callbacks: Optional[Callbacks] = None,
) -> Tuple[ObjectDataset, Optional[ObjectDataset]]:
    """The training and validation datasets the settings describe (pascal_voc: its train and val
    splits; custom kinds: the ``val_*`` patterns, or no validation).

    Raises:
        ConfigError: missing or contradictory dataset settings (:func:`~dextr_lib.config.check_dataset`).
        DatasetError: bad files.
    """
    check_dataset(s)
    cb = callbacks or Callbacks()
    paths = paths or PathsSettings()
    if s.dataset == "coco":
        return _open_coco(s, cb)
    custom = s.dataset != "pascal_voc"
    common = dict(pascal_voc_root=paths.pascal_voc, sbd_root=paths.sbd,
                  ignore_index=None if s.label_ignore_index < 0 else s.label_ignore_index,
                  min_object_area=s.min_object_area, whole_labels=s.whole_labels,
                  on_progress=cb.indexing, on_warning=cb.warning)
    train = build_dataset(s.dataset, s.image_pat or None, s.target_pat or None, split="train", **common)
    if not custom:
        return train, build_dataset("pascal_voc", split="val", **common)
    if s.val_image_pat:
        return train, build_dataset(s.dataset, s.val_image_pat, s.val_target_pat, split="val", **common)
    return train, None


def _open_coco(s: TrainSettings, cb: Callbacks) -> Tuple[ObjectDataset, Optional[ObjectDataset]]:
    """Training (and validation) objects of COCO instances files (checked by ``check_dataset``)."""
    categories = [n.strip() for item in s.categories for n in item.split(",") if n.strip()] or None
    common = dict(min_object_area=s.min_object_area, categories=categories,
                  on_progress=cb.indexing, on_warning=cb.warning)
    train = build_dataset("coco", annotations=s.annotations, images_dir=s.images, **common)
    val = None
    if s.val_annotations:
        val = build_dataset("coco", annotations=s.val_annotations, images_dir=s.val_images, **common)
    return train, val


def check_image_sizes(dataset: ObjectDataset) -> None:
    """Every image of ``dataset`` has the size of its targets (checked before training starts,
    so a bad validation pair fails now rather than after the first epoch).

    Raises:
        DatasetError: naming the first image whose targets differ in size.
    """
    for image, _ in dataset.image_groups():
        with open_image(image) as im:  # the header only: no pixels decoded
            w, h = im.size
        th, tw = dataset.read_targets(image).shape
        if (th, tw) != (h, w):
            raise DatasetError(f"{image} is {w}x{h} px but its targets are {tw}x{th} px")


class TrainingJob:
    """A job folder with its settings, datasets, model and training state; see the module doc.

    Build one with :meth:`create` or :meth:`resume`, then :meth:`run` it. Use it as a context
    manager (or call :meth:`close`) to release the folder's lock.

    Attributes:
        folder: the :class:`JobDir`. settings: the resolved :class:`TrainSettings`.
        model, train_dataset, val_dataset, state: what :meth:`run` trains from.
        resumed_from: the epoch a resumed job starts after (None for a new job).
    """

    def __init__(self, folder: JobDir, settings: TrainSettings, model: DextrModel,
                 train_dataset: ObjectDataset, val_dataset: Optional[ObjectDataset],
                 state: Optional[TrainingState], paths: PathsSettings, world: distributed.World):
        self.folder = folder
        self.settings = settings
        self.model = model
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.state = state
        self.paths = paths
        self.world = world
        self.resumed_from = state.epoch if state is not None else None
        self.seconds = 0.0  # how long the last run() took

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def finetune(self) -> bool:
        return self.settings.from_model is not None

    def __enter__(self) -> "TrainingJob":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the job folder's lock."""
        self.folder.unlock()

    # -- creation --------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        settings: TrainSettings,
        name: str,
        jobs_dir: PathLike,
        *,
        paths: Optional[PathsSettings] = None,
        models: Optional[ModelsSettings] = None,
        overwrite: bool = False,
        callbacks: Optional[Callbacks] = None,
    ) -> "TrainingJob":
        """A new job ``jobs_dir/name``: settings resolved (a random seed recorded when None;
        fine-tuning: the starting model's arch and sizes), datasets opened and checked, the
        model created after seeding — all before the folder is touched.

        Args:
            settings: what to train; ``from_model`` set means fine-tuning that model.
            paths: ``[paths]`` (pascal_voc, sbd, models cache). models: ``[models]`` (mirror).
            overwrite: replace an existing job of this name (what was removed is logged).

        Raises:
            JobError: a bad name, an existing job without ``overwrite``, a job in use.
            ConfigError, DatasetError, CheckpointError...: bad settings, data or model.
        """
        cb = callbacks or Callbacks()
        world = distributed.init_from_env(settings.device)
        folder = JobDir.named(jobs_dir, name)
        paths = paths or PathsSettings()

        def precheck() -> None:
            if folder.exists() and not overwrite:
                raise JobError(f"job {name!r} already exists at {folder.root}; resume it (--resume), start it again "
                               "(--overwrite), or use another name")
            if folder.exists():  # --overwrite empties it: never with the model it starts from
                check_clearable(folder.root, inputs=[settings.from_model and os.path.expanduser(settings.from_model)])
        _on_main(precheck)
        s = resolve_settings(settings)
        if s.from_model is None:
            check_architecture(s.arch)  # a misspelt --arch fails before the data is indexed
        if s.seed is None:
            s.seed = distributed.broadcast(random.SystemRandom().randrange(2 ** 31))
        warnings: List[str] = []
        main_cb = _Recorder(cb, warnings) if distributed.is_main() else Callbacks()
        train_ds, val_ds = open_datasets(s, paths, main_cb)
        if val_ds is not None:
            check_image_sizes(val_ds)
        seed_everything(s.seed)  # before the model: its random initialisation is part of the run
        if s.from_model is not None:
            model = load_model(s.from_model, map_location="cpu", cache_dir=paths.models,
                               mirror=(models or ModelsSettings()).mirror, on_progress=main_cb.download)
            pp = model.preprocess
            # Record what is really trained, not the [train] defaults.
            s = dataclasses.replace(s, arch=model.arch, target_size=pp.target_size, padding=pp.padding,
                                    blob_sigma=pp.blob_sigma, pretrained=False, backbone_weights=None)
            model.meta = {**model.meta, "finetuned_from": s.from_model}
        else:
            weights = s.backbone_weights or ("imagenet" if s.pretrained else None)
            model = create_model(s.arch, target_size=s.target_size, padding=s.padding,
                                 blob_sigma=s.blob_sigma, backbone_weights=weights)
        if s.corrections and not model.takes_negatives:
            # Negative corrections need their own input channel: zero-initialised, so a
            # fine-tuned model starts from exactly the masks it gave before.
            model.add_negative_channel()

        def make_folder() -> None:
            folder.lock()
            try:
                if folder.exists():
                    if not overwrite:
                        precheck()  # someone else created it meanwhile
                    removed = folder.clear()
                else:
                    removed = []
                folder.prepare()
                folder.write_config(s, paths={"pascal_voc": paths.pascal_voc, "sbd": paths.sbd})
            except BaseException:
                folder.unlock()
                raise
            job_log(f"Job {name}: {'fine-tune ' + s.from_model if s.from_model else 'train'} "
                    f"{s.arch} at {s.target_size} px, seed {s.seed}, in {folder.root}")
            if removed:
                job_log(f"--overwrite removed the previous job's {', '.join(removed)}")
            for w in warnings:
                folder.log(f"Warning: {w}")

        job = cls(folder, s, model, train_ds, val_ds, None, paths, world)
        job_log = job._say_with(cb)
        _on_main(make_folder)
        distributed.barrier()
        return job

    @classmethod
    def resume(
        cls,
        name_or_path: PathLike,
        jobs_dir: Optional[PathLike] = None,
        *,
        changes: Optional[Dict[str, Any]] = None,
        callbacks: Optional[Callbacks] = None,
    ) -> "TrainingJob":
        """Reopen a job to continue it from ``checkpoints/last.pt``.

        Args:
            name_or_path: the job's name under ``jobs_dir``, or its folder.
            changes: settings as given again (e.g. the original command line): values equal to
                the job's are accepted; ``num_epochs`` (larger extends the job; the LR schedule
                then follows the new length), ``val_every_n_epochs``, ``device`` and
                ``num_workers`` may differ; any other difference is refused.

        Nothing on disk changes until the checkpoint, settings and data have loaded (stale
        temporary files of interrupted writes excepted).

        Raises:
            JobError: no such job, nothing to resume, a job in use, refused changes (each
                named with the job's and the given value).
        """
        cb = callbacks or Callbacks()
        folder = (JobDir.named(jobs_dir, str(name_or_path)) if jobs_dir is not None
                  else JobDir(Path(name_or_path).expanduser()))
        env = distributed.env_world()
        device = (changes or {}).get("device")

        def open_folder() -> None:
            if not folder.last_path.is_file():
                raise JobError(f"cannot resume job {folder.name!r}: {folder.last_path} does not exist"
                               + ("" if folder.exists() else f" (no job folder at {folder.root})"))
            folder.lock()
            for p in folder.remove_temporaries():
                cb.warning(f"removed {p.name}, left by an interrupted checkpoint write")
        world = distributed.init_from_env(device)
        _on_main(open_folder)
        try:
            job_cfg = folder.read_config()
            old = job_cfg.train
            s = _apply_changes(old, changes or {})
            model, training = folder.load_last(map_location="cpu")
            state = TrainingState.from_dict(training["state"])
            if state.epoch > s.num_epochs:
                raise JobError(f"job {folder.name!r} has completed {state.epoch} epochs already; "
                               f"--num-epochs {s.num_epochs} would end it before that")
            paths = dataclasses.replace(job_cfg.paths)
            main_cb = cb if distributed.is_main() else Callbacks()
            train_ds, val_ds = open_datasets(s, paths, main_cb)
            if val_ds is not None:
                check_image_sizes(val_ds)
        except BaseException:
            folder.unlock()
            raise
        job = cls(folder, s, model, train_ds, val_ds, state, paths, world)

        def commit() -> None:  # the resume works: now the folder may change
            if s != old:
                folder.write_config(s, paths={"pascal_voc": paths.pascal_voc, "sbd": paths.sbd})
            folder.write_metrics(state.history)
            changed = [f"{k} {getattr(old, k)!r} -> {getattr(s, k)!r}" for k in SETTING_FIELDS
                       if getattr(old, k) != getattr(s, k)]
            job._say_with(cb)(f"Resuming job {folder.name} after epoch {state.epoch} (iteration "
                              f"{state.iteration}), {env.size} process(es)"
                              + (f"; changed: {', '.join(changed)}" if changed else ""))
        _on_main(commit)
        distributed.barrier()
        return job

    # -- running -----------------------------------------------------------------------------
    def run(self, callbacks: Optional[Callbacks] = None) -> TrainingState:
        """Train to ``settings.num_epochs``, writing metrics and checkpoints at each epoch's end.

        Raises:
            TrainingInterrupted: after SIGINT/SIGTERM; ``last.pt`` then holds the last completed
                step, and :meth:`resume` continues exactly from it.
            DistributedError: another process of a torchrun job died.
        """
        with DeferredSignals() as signals:  # from here on, Ctrl-C saves last.pt
            return self._run(callbacks or Callbacks(), signals)

    def _run(self, cb: Callbacks, signals: DeferredSignals) -> TrainingState:
        main = distributed.is_main()
        say = self._say_with(cb)
        s = self.settings
        iters = iterations_per_epoch(s, len(self.train_dataset), self.world.size)
        if main:
            say(f"Training objects: {len(self.train_dataset)}"
                + (f", validation objects: {len(self.val_dataset)}" if self.val_dataset else ", no validation set")
                + f"; {iters} iterations per epoch, global batch {s.batch_size * self.world.size}"
                + (f" ({self.world.size} processes x {s.batch_size})" if self.world.distributed else ""))
            if s.sync_bn and not (self.world.distributed and _cuda(s.device)):
                cb.warning("--sync-bn is ignored: SyncBatchNorm needs CUDA and several processes")
        meta = {"job": self.name, "command": "finetune" if self.finetune else "train", "settings": s.to_dict()}
        timing = {"steps": 0, "t": time.perf_counter()}
        total_iters = iters * s.num_epochs

        job = self

        class JobCallbacks(Callbacks):
            """The job's own work at each step and epoch, then the caller's callbacks."""

            def iteration(self, epoch: int, step: int, steps: int, loss: float, lr: float) -> None:
                cb.iteration(epoch, step, steps, loss, lr)
                timing["steps"] += 1
                if timing["steps"] == 1 and iters > 1:  # the first step warms up (allocations, caches)
                    timing["t"] = time.perf_counter()
                elif timing["steps"] == min(4, iters):  # within the first epoch
                    per_step = (time.perf_counter() - timing["t"]) / max(timing["steps"] - 1, 1)
                    left = total_iters - ((epoch - 1) * iters + step)
                    say(f"Estimated: {_duration(per_step * iters)} per epoch, {_duration(per_step * left)} "
                        f"for the rest of the job ({per_step:.2f} s per iteration; validation not included)")

            def validation(self, done: int, total: int) -> None:
                cb.validation(done, total)

            def epoch_end(self, r: EpochResult, st: TrainingState) -> None:
                # checkpoint first: a resume rewrites metrics.jsonl from its history
                job.folder.save_checkpoint(job.model, {**meta, "state": st.to_dict()}, best=r.is_best)
                job.folder.append_metrics(r.to_dict())
                if r.val_miou is not None:
                    plot_curves(st.history, job.folder.curves_path, title=f"job {job.name}")
                cb.epoch_end(r, st)
                job.folder.log(describe_epoch(r, s.num_epochs))

        t0 = time.perf_counter()
        try:
            self.state = training_loop(
                self.model.net, self.model.preprocess, self.train_dataset, self.val_dataset, s,
                device=s.device, state=self.state, finetune=self.finetune,
                callbacks=JobCallbacks() if main else Callbacks(), signals=signals)
        except TrainingInterrupted as e:
            self.state = e.state
            if main:
                self.folder.save_checkpoint(self.model, {**meta, "state": e.state.to_dict()})
                say(f"Interrupted ({e.signal_name}) at iteration {e.state.iteration}; saved {self.folder.last_path}")
            raise
        finally:
            self.seconds = time.perf_counter() - t0
        return self.state

    def _say_with(self, cb: Callbacks):
        def say(text: str) -> None:
            if distributed.is_main():
                cb.message(text)
                self.folder.log(text)
        return say


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def describe_epoch(r: EpochResult, num_epochs: int) -> str:
    """One line about an epoch, as the log and the CLI show it."""
    val = f", val loss {r.val_loss:.4f}, val mIoU {r.val_miou:.4f}" if r.val_miou is not None else ""
    if r.epoch == 0:
        return f"Epoch 0 (the starting model){val}" + (" (best)" if r.is_best else "")
    return (f"Epoch {r.epoch}/{num_epochs}: loss {r.train_loss:.4f}{val}, lr {r.lr:.2e}, "
            f"{r.seconds:.1f} s, {r.samples_per_s:.1f} samples/s" + (" (best)" if r.is_best else ""))


def _apply_changes(old: TrainSettings, changes: Dict[str, Any]) -> TrainSettings:
    unknown = sorted(set(changes) - set(SETTING_FIELDS))
    if unknown:
        raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
    given = resolve_settings(dataclasses.replace(old, **changes))
    refused = [f"--{k.replace('_', '-')} (job: {getattr(old, k)!r}, given: {getattr(given, k)!r})"
               for k in changes
               if getattr(given, k) != getattr(old, k) and not SETTING_FIELDS[k].metadata["resume"]]
    if refused:
        raise JobError("--resume continues the job with its own settings; these differ from the job's "
                       f"config.toml: {'; '.join(refused)}. Drop them, or start a new job")
    return given


def _cuda(device: Optional[str]) -> bool:
    return torch.cuda.is_available() and (device is None or device.startswith(("cuda", "auto")))


class _Recorder(Callbacks):
    """Forwards to ``inner`` and keeps the warnings, for the log of a folder made later."""

    def __init__(self, inner: Callbacks, warnings: List[str]):
        self.inner, self.warnings = inner, warnings

    def warning(self, text: str) -> None:
        self.warnings.append(text)
        self.inner.warning(text)

    def indexing(self, done: int, total: int) -> None:
        self.inner.indexing(done, total)

    def download(self, done: int, total: Optional[int]) -> None:
        self.inner.download(done, total)


def _on_main(fn) -> None:
    """Run ``fn`` in the main process only; if it fails, every process fails (none waits forever
    for a main process that has given up)."""
    error: Optional[BaseException] = None
    if distributed.is_main():
        try:
            fn()
        except BaseException as e:  # whatever it is, the others must hear of it
            error = e
    failed = distributed.broadcast(None if error is None else str(error) or type(error).__name__)
    if error is not None:
        raise error
    if failed is not None:
        raise JobError(f"the main process stopped: {failed}")
