"""Running a ``dextr train``/``dextr finetune`` job and rendering its
:class:`dextr_lib.training.TrainingJob` (Rich progress on a terminal, plain lines otherwise).

Imported only when a job runs, so ``--help`` does not load torch."""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dextr_lib.config import SETTING_FIELDS, load_config, merge_settings, preset_settings
from dextr_lib.training import Callbacks, EpochResult, TrainingInterrupted, TrainingJob
from dextr_lib.training.job import check_nproc, describe_epoch
from dextr_lib.utils import distributed

from .._console import console, err_console, warn
from .._models import download_progress
from .._progress import PlainLines


def run_job(command: str, options: Dict[str, Any]) -> None:
    """Resolve settings (CLI > config ``[train]`` > defaults), create or resume the job, run it."""
    name, resume, config = options["job_name"], options["resume"], options["config"]
    given = {k: v for k, v in options.items() if k in SETTING_FIELDS and v is not None}
    if options["preset"] is not None:  # command line > preset > config [train] > defaults
        preset = {k: v for k, v in preset_settings(options["preset"]).items()
                  if SETTING_FIELDS[k].metadata["command"] in (None, command)}  # finetune keeps its model's
        given = {**preset, **given}
    if resume and options["overwrite"]:
        raise typer.BadParameter("--resume and --overwrite exclude each other", param_hint="--resume")
    if given.get("backbone_weights") is not None and given.get("pretrained") is False:
        raise typer.BadParameter("--backbone-weights and --no-pretrained exclude each other",
                                 param_hint="--backbone-weights")
    cfg = load_config(config)
    if options["nproc"] and options["nproc"] > 1 and distributed.env_world().size == 1:
        check_nproc(options["nproc"], given.get("device", cfg.train.device))
        _launch_torchrun(options["nproc"])
    jobs_root = options["jobs_dir"] or cfg.paths.jobs
    view = _View()
    try:
        if resume:
            with view.indexing_bar():
                job = TrainingJob.resume(name, jobs_root, changes=given, callbacks=view)
        else:
            if command == "train" and cfg.train.from_model is not None:
                raise typer.BadParameter("the config's [train] from_model is for `dextr finetune`", param_hint="--config")
            settings = merge_settings(cfg.train, given)
            if command == "finetune" and settings.from_model is None:
                raise typer.BadParameter("give the starting model: --from CHECKPOINT_OR_MODEL_NAME "
                                         "(or [train] from_model in the config)", param_hint="--from")
            with download_progress(f"Downloading {settings.from_model}") as update, view.indexing_bar():
                view.download = update
                job = TrainingJob.create(settings, name, jobs_root, paths=cfg.paths, models=cfg.models,
                                         overwrite=options["overwrite"], callbacks=view)
    except Exception:
        if not distributed.is_main():
            raise typer.Exit(1)  # the main process shows the error once
        raise
    with job:
        try:
            with view.training(job.settings.num_epochs):
                state = job.run(view)
        except TrainingInterrupted:
            cmd = ["dextr", command, name, "--resume"]
            if options["jobs_dir"] is not None:
                cmd += ["--jobs-dir", str(options["jobs_dir"])]
            if config is not None:
                cmd += ["--config", str(config)]
            view.message(f"Resume with: {shlex.join(cmd)}")
            raise typer.Exit(130)
        finally:
            distributed.shutdown()
    if distributed.is_main():
        _summary(job, state, view)


def _launch_torchrun(nproc: int) -> None:
    """Re-run this very command under torchrun with ``nproc`` processes, and exit with its status."""
    argv, rest = [], iter(sys.argv[1:])
    for a in rest:  # the processes run the command without --nproc (torchrun would misread it)
        if a == "--nproc":
            next(rest, None)
        elif not a.startswith("--nproc="):
            argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "dextr_cli", *argv]
    err_console.print(f"Starting {nproc} training processes: {escape(shlex.join(cmd))}", highlight=False, soft_wrap=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        err_console.print(f"[bold red]Error:[/] the {nproc}-process training ended with exit status {rc} "
                          "(the messages above say which process failed and why)", highlight=False)
    raise typer.Exit(rc)


class _View(Callbacks):
    """Renders a job's callbacks: Rich bars on a terminal; without one, :class:`PlainLines`.
    Nothing is drawn outside the main process."""

    def __init__(self) -> None:
        self.live = err_console.is_terminal
        self.progress: Optional[Progress] = None
        self.task = None
        self.download: Callable[[int, Optional[int]], None] = lambda done, total=None: None
        self._plain = PlainLines()
        self._epoch_start = (None, 0.0, 0)
        self.num_epochs = 0

    def message(self, text: str) -> None:
        console.print(escape(text), highlight=False, soft_wrap=True)

    def warning(self, text: str) -> None:
        warn(text)

    def _bar(self, columns) -> Progress:
        return Progress(*columns, console=err_console, transient=True, disable=not self.live)

    def indexing_bar(self):
        return _Bar(self, [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn()])

    def training(self, num_epochs: int):
        self.num_epochs = num_epochs
        return _Bar(self, [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} it/s"),
                           TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()])

    def _update(self, description: str, done: int, total: int, **fields: str) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task(description, total=total, **fields)
        self.progress.update(self.task, description=description, completed=done, total=total, **fields)
        if not self.live:
            extra = "".join(f", {k} {v}" for k, v in fields.items() if k != "speed")
            self._plain.update(f"{description}: {done}/{total}{extra}")

    def indexing(self, done: int, total: int) -> None:
        self._update("Indexing dataset", done, total)

    def iteration(self, epoch: int, step: int, steps: int, loss: float, lr: float) -> None:
        key, t0, i0 = self._epoch_start
        if key != epoch:
            self._epoch_start = (epoch, time.perf_counter(), step - 1)
            key, t0, i0 = self._epoch_start
        speed = (step - i0) / max(time.perf_counter() - t0, 1e-9)
        self._update(f"Epoch {epoch}/{self.num_epochs}", step, steps, loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                     speed=f"{speed:.2f}")

    def validation(self, done: int, total: int) -> None:
        self._update("Validating", done, total, loss="-", lr="-", speed="-")

    def epoch_end(self, result: EpochResult, state) -> None:
        line = describe_epoch(result, self.num_epochs)
        self.message(line)


class _Bar:
    """``with``: a Progress the view feeds while the block runs (disabled when not a terminal)."""

    def __init__(self, view: _View, columns):
        self.view, self.columns = view, columns

    def __enter__(self):
        if distributed.is_main():
            self.view.progress = self.view._bar(self.columns)
            self.view.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.view.progress is not None:
            self.view.progress.stop()
        self.view.progress, self.view.task = None, None


def _fmt(v: Optional[float], digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _summary(job: TrainingJob, st, view: _View) -> None:
    rows = job.folder.read_metrics()
    table = Table(title=f"Job {escape(job.name)}")
    for col in ("epoch", "train loss", "val loss", "val mIoU", "lr", "seconds", "samples/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["epoch"]), _fmt(r.get("train_loss")), _fmt(r.get("val_loss")),
                      _fmt(r.get("val_miou")), "-" if r.get("lr") is None else f"{r['lr']:.2e}",
                      f"{r['seconds']:.1f}", _fmt(r.get("samples_per_s"), 1),
                      style="green" if r.get("is_best") else None)
    console.print(table)
    best = f"best val mIoU {st.best_miou:.4f} -> {job.folder.best_path}" if st.best_miou is not None else "no validation"
    total = sum(r.get("seconds") or 0.0 for r in rows) + sum(r.get("val_seconds") or 0.0 for r in rows)
    took = f"{job.seconds / 60:.1f} min"
    if job.resumed_from is not None:
        took = f"{took} (this resumed part; {total / 60:.1f} min of training and validation in all)"
    text = f"Done in {took}: {best}; last checkpoint {job.folder.last_path}"
    view.message(text)
    job.folder.log(text)
