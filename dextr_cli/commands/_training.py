"""What ``dextr train`` and ``dextr finetune`` share: their options, the settings merge
(CLI > config ``[train]`` > defaults), the job directory, and the progress display."""
from __future__ import annotations

import dataclasses
import os
import random
import shlex
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typing_extensions import Annotated

from dextr_lib.config import Config, TrainConfig, load_config
from dextr_lib.jobs import JobDir
from dextr_lib.model import DextrModel
from dextr_lib.training import EpochResult, TrainingInterrupted, TrainingState, TrainSettings, training_loop

from .._console import console, err_console
from .._datasets import open_dataset


def _opt(flag: str, help: str, typ: Any = Optional[float], **kw) -> Any:
    return Annotated[typ, typer.Option(flag, help=help, show_default=False, **kw)]


# Hyper-parameter options: None means "not given", so the config's [train] value (or the
# reference default shown in the help) applies.
JobNameArg = Annotated[str, typer.Argument(help="Job name: the folder <jobs dir>/JOB_NAME holds its outputs.",
                                           show_default=False)]
ValImagePatOpt = _opt("--val-image-pat", "Glob of validation images (custom kinds; repeat to unite, @FILE reads a list).", Optional[List[str]])
ValTargetPatOpt = _opt("--val-target-pat", "Glob of validation label images / masks.", Optional[List[str]])
WholeLabelsOpt = _opt("--whole-labels/--regions", "One object per label instead of one per connected region (default: regions).", Optional[bool])
LearningRateOpt = _opt("--learning-rate", "Base learning rate (default: 0.1).", min=0.0)
PretrainedLrFactorOpt = _opt("--pretrained-lr-factor", "LR factor of the pretrained encoder (finetune: of every layer) (default: 0.1).", min=0.0)
LrSchedOpt = _opt("--lr-sched", "LR schedule, stepped per iteration: none, cosine or poly (default: poly).", Optional[str])
LrPolyPowerOpt = _opt("--lr-poly-power", "Power of the poly schedule (default: 0.9).")
OptTypeOpt = _opt("--opt-type", "Optimiser: sgd (momentum 0.9, Nesterov) or adam (default: sgd).", Optional[str])
SgdWeightDecayOpt = _opt("--sgd-weight-decay", "SGD weight decay (default: 1e-4).", min=0.0)
ExtremeRangeOpt = _opt("--extreme-range", "Draw training points within this many crop pixels of each extreme (default: 5).", min=0.0)
NoiseStdOpt = _opt("--noise-std", "Gaussian jitter of the training points, crop pixels (default: 1.0).", min=0.0)
AugHflipOpt = _opt("--aug-hflip/--no-aug-hflip", "Random horizontal flips (default: on).", Optional[bool])
AugRotRangeOpt = _opt("--aug-rot-range", "Random rotation range in degrees (default: 20).", min=0.0)
AugScaleRangeOpt = _opt("--aug-scale-range", "Random crop-box scale 1 +- this; 0: off (default: 0).", min=0.0, max=0.99)
TrainBatchSizeOpt = _opt("--batch-size", "Samples per iteration (default: 4).", Optional[int], min=1)
NumEpochsOpt = _opt("--num-epochs", "Epochs (default: 100).", Optional[int], min=1)
ItersPerEpochOpt = _opt("--iters-per-epoch", "Iterations per epoch; -1: one pass over the objects (default: 1000).", Optional[int], min=-1)
ValEveryOpt = _opt("--val-every-n-epochs", "Validate every N epochs (and always at the end); 0: only at the end (default: 25).", Optional[int], min=0)
NumWorkersOpt = _opt("--num-workers", "Data-loading processes; 0: load in the training process (default: 0).", Optional[int], min=0)
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the job from its checkpoints/last.pt (weights, optimiser, schedule, epoch, RNG).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Delete an existing job of this name and start again.")]
JobsDirOpt = _opt("--jobs-dir", "Folder of job directories (default: \\[paths] jobs, else ./jobs).", Optional[Path], file_okay=False)

#: Options that may change when resuming; the others are the job's.
RESUME_OVERRIDES = {"device", "num_workers", "num_epochs", "val_every_n_epochs"}
NOT_SETTINGS = {"job_name", "config", "resume", "overwrite", "jobs_dir"}


def run_job(command: str, options: Dict[str, Any]) -> None:
    """Resolve settings, open the job, build datasets and model, train, and report."""
    name, config = options["job_name"], options["config"]
    cfg = load_config(config)
    jobs_root = options["jobs_dir"] or cfg.paths.jobs
    job = JobDir.open(jobs_root, name, resume=options["resume"], overwrite=options["overwrite"])
    given = {k: v for k, v in options.items() if k not in NOT_SETTINGS and v is not None}
    say = _sayer(job)
    if options["resume"]:
        extra = sorted(set(given) - RESUME_OVERRIDES)
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise typer.BadParameter(f"--resume continues with the job's own settings "
                                     f"({job.config_path}); drop {flags}", param_hint="--resume")
        job_cfg = job.read_config()
        tc = dataclasses.replace(job_cfg.train, **given)
        cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, **{
            k: getattr(job_cfg.paths, k) for k in ("pascal_voc", "sbd")}))
        if given:  # e.g. more epochs: later resumes must see them too
            job.write_config(tc, paths={"pascal_voc": job_cfg.paths.pascal_voc, "sbd": job_cfg.paths.sbd})
        model, training = job.load_last(map_location=tc.device or None)
        state = TrainingState.from_dict(training["state"])
        job.truncate_metrics(state.epoch)
        say(f"Resuming job [bold]{name}[/] at epoch {state.epoch + 1}, iteration {state.iteration}")
        train_ds, val_ds = _datasets(tc, cfg, lambda m: job.log(f"Warning: {m}"))
    else:
        tc = _resolve(cfg.train, given, command)
        warnings: List[str] = []
        train_ds, val_ds = _datasets(tc, cfg, warnings.append)  # data/weights problems surface before the job exists
        model = _make_model(command, tc, cfg)
        job.prepare()
        job.write_config(tc, paths={"pascal_voc": cfg.paths.pascal_voc, "sbd": cfg.paths.sbd})
        for w in warnings:
            job.log(f"Warning: {w}")
        state = None
        say(f"Job [bold]{name}[/]: {command} {model.arch} at {model.preprocess.target_size} px, "
            f"seed {tc.seed}, in {job.root}")
    say(f"Training objects: {len(train_ds)}" + (f", validation objects: {len(val_ds)}" if val_ds else ", no validation set"))
    settings = _settings(tc, finetune=tc.from_model is not None)
    _train(job, model, train_ds, val_ds, settings, tc, state, say, command, options)


def _sayer(job: JobDir) -> Callable[[str], None]:
    def say(markup: str) -> None:
        console.print(markup, highlight=False, soft_wrap=True)
        job.log(Text.from_markup(markup).plain)
    return say


def _resolve(base: TrainConfig, given: Dict[str, Any], command: str) -> TrainConfig:
    if command == "train" and base.from_model is not None and "from_model" not in given:
        raise typer.BadParameter("the config's [train] from_model is for `dextr finetune`", param_hint="--config")
    tc = dataclasses.replace(base, **given)
    if command == "finetune" and tc.from_model is None:
        raise typer.BadParameter("give the starting model: --from CHECKPOINT_OR_MODEL_NAME "
                                 "(or [train] from_model in the config)", param_hint="--from")
    if tc.seed is None:
        tc.seed = random.SystemRandom().randrange(2 ** 31)
    for key in ("image_pat", "target_pat", "val_image_pat", "val_target_pat"):
        # Absolute patterns keep the job's config.toml valid from any working directory.
        setattr(tc, key, [p if p.startswith("@") or os.path.isabs(p) else os.path.abspath(p)
                          for p in getattr(tc, key)])
    if tc.backbone_weights is not None:
        tc.backbone_weights = os.path.abspath(os.path.expanduser(tc.backbone_weights))
    _settings(tc, False)  # bad values fail here, before the job writes anything
    return tc


def _settings(tc: TrainConfig, finetune: bool) -> TrainSettings:
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    values = {k: v for k, v in dataclasses.asdict(tc).items() if k in fields}
    values["new_lr_factor"] = tc.pretrained_lr_factor if finetune else 1.0
    return TrainSettings(**values)


def _make_model(command: str, tc: TrainConfig, cfg: Config) -> DextrModel:
    if command == "finetune":
        from .._models import load_model

        model = load_model(tc.from_model, cfg, map_location="cpu")
        model.meta = {**model.meta, "finetuned_from": tc.from_model}
        return model
    from dextr_lib import create_model

    weights = tc.backbone_weights or ("imagenet" if tc.pretrained else None)
    return create_model(tc.arch, target_size=tc.target_size, padding=tc.padding,
                        blob_sigma=tc.blob_sigma, backbone_weights=weights)


def _datasets(tc: TrainConfig, cfg: Config, on_warning: Callable[[str], None]):
    common = dict(ignore_index=tc.label_ignore_index, min_object_area=tc.min_object_area,
                  paths=cfg.paths, whole_labels=tc.whole_labels, on_warning=on_warning)
    train = open_dataset(tc.dataset, tc.image_pat or None, tc.target_pat or None, split="train", **common)
    if tc.dataset == "pascal_voc":
        return train, open_dataset("pascal_voc", None, None, split="val", **common)
    if tc.val_image_pat or tc.val_target_pat:
        if not (tc.val_image_pat and tc.val_target_pat):
            raise typer.BadParameter("give both --val-image-pat and --val-target-pat", param_hint="--val-image-pat")
        return train, open_dataset(tc.dataset, tc.val_image_pat, tc.val_target_pat, split="val", **common)
    return train, None


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _train(job, model, train_ds, val_ds, settings, tc, state, say, command, options) -> None:
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} it/s"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=err_console, transient=True,
    )
    task = None
    tracker: Dict[str, Any] = {"epoch": None, "t": 0.0, "i": 0}

    def on_iteration(i: int, n: int, loss: float, lr: float) -> None:
        nonlocal task
        epoch = state_now["epoch"] + 1
        if tracker["epoch"] != epoch:
            tracker.update(epoch=epoch, t=time.perf_counter(), i=i - 1)
        speed = (i - tracker["i"]) / max(time.perf_counter() - tracker["t"], 1e-9)
        desc = f"Epoch {epoch}/{settings.num_epochs}"
        if task is None:
            task = progress.add_task(desc, total=n, loss="-", lr="-", speed="-")
        progress.update(task, completed=i, total=n, description=desc,
                        loss=f"{loss:.4f}", lr=f"{lr:.2e}", speed=f"{speed:.2f}")

    state_now = {"epoch": state.epoch if state else 0}
    training_meta = {"job": job.name, "command": command, "settings": settings.to_dict()}

    def on_epoch_end(r: EpochResult, st: TrainingState) -> None:
        state_now["epoch"] = st.epoch
        job.append_metrics(r.to_dict())
        job.save_checkpoint(model, {**training_meta, "state": st.to_dict()}, best=r.is_best)
        val = f", val loss {_fmt(r.val_loss)}, val mIoU {_fmt(r.val_miou)}" if r.val_miou is not None else ""
        say(f"Epoch {r.epoch}/{settings.num_epochs}: loss {r.train_loss:.4f}{val}, lr {r.lr:.2e}, "
            f"{r.seconds:.1f} s, {r.samples_per_s:.1f} samples/s" + (" [green](best)[/]" if r.is_best else ""))

    t0 = time.perf_counter()
    # `kill` (SIGTERM) saves last.pt like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with progress:
            final = training_loop(model, train_ds, val_ds, settings, device=tc.device, state=state,
                                  on_iteration=on_iteration, on_epoch_end=on_epoch_end)
    except TrainingInterrupted as e:
        job.save_checkpoint(model, {**training_meta, "state": e.state.to_dict()})
        cmd = ["dextr", command, job.name, "--resume"]
        if options["jobs_dir"] is not None:
            cmd += ["--jobs-dir", str(options["jobs_dir"])]
        if options["config"] is not None:
            cmd += ["--config", str(options["config"])]
        say(f"[yellow]Interrupted[/] at iteration {e.state.iteration}; saved {job.last_path}. "
            f"Resume with: [bold]{shlex.join(cmd)}[/]")
        raise typer.Exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _summary(job, final, time.perf_counter() - t0, say)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _summary(job: JobDir, st: TrainingState, seconds: float, say) -> None:
    rows = job.read_metrics()
    table = Table(title=f"Job {job.name}")
    for col in ("epoch", "train loss", "val loss", "val mIoU", "lr", "seconds", "samples/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["epoch"]), _fmt(r["train_loss"]), _fmt(r.get("val_loss")),
                      _fmt(r.get("val_miou")), f"{r['lr']:.2e}", f"{r['seconds']:.1f}",
                      f"{r['samples_per_s']:.1f}", style="green" if r.get("is_best") else None)
    console.print(table)
    best = f"best val mIoU {st.best_miou:.4f} -> {job.best_path}" if st.best_miou is not None else "no validation"
    say(f"Done in {seconds / 60:.1f} min: {best}; last checkpoint {job.last_path}")
