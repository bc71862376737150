"""Model loading for every command's ``--model``/``--from`` option, with download progress."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

import dextr_lib
from dextr_lib.config import Config

from ._console import err_console, esc


@contextmanager
def download_progress(description: str) -> Iterator[Callable[[int, Optional[int]], None]]:
    """Yield ``update(done_bytes, total_bytes)``; the bar (bytes, speed, ETA) appears on stderr
    at the first update, so nothing is drawn when no download happens."""
    progress: Optional[Progress] = None
    task = None

    def update(done: int, total: Optional[int] = None) -> None:
        nonlocal progress, task
        if progress is None:
            progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=err_console,
            )
            progress.start()
            task = progress.add_task(esc(description), total=total)
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if progress is not None:
            progress.stop()


def model_spec(spec: Optional[str], table: str) -> str:
    """The model of the merged settings (``--model``, else the config's ``[table] model``); a
    usage error when neither gives one."""
    if spec is None:
        raise typer.BadParameter(f"no model given; pass --model CKPT or set [{table}] model in the "
                                 "config", param_hint="--model")
    return spec


def load_model(spec: str, cfg: Config, map_location: Any = None, runtime: Optional[str] = None,
               precision: Optional[str] = None) -> dextr_lib.DextrModel:
    """``dextr_lib.load_model`` with the config's cache dir and mirror, a download bar, and a
    note on stderr when a legacy file was converted in memory.

    With ``runtime``/``precision`` the model's runner is made now, so a missing extra or an
    impossible combination fails before any work, and a PyTorch model asked to run in
    onnxruntime/openvino is exported (with a note) before the progress bars start."""
    with download_progress(f"Downloading {spec}") as update:
        model = dextr_lib.load_model(
            spec, map_location=map_location, cache_dir=cfg.paths.models,
            mirror=cfg.models.mirror, on_progress=update, runtime=runtime,
        )
    if model.load_note:
        err_console.print(f"[dim]Note: {esc(model.load_note)} (in memory; `dextr convert` saves it)[/]",
                          highlight=False)
    if precision is not None:
        if model.runtime != "torch" and not model.is_onnx and model.onnx is None:
            with err_console.status(f"Exporting the network to ONNX for {model.runtime} "
                                    "(`dextr export` saves this step)"):
                model.runner(precision=precision)
        else:
            model.runner(precision=precision)
    return model
