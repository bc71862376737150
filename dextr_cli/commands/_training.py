"""What ``dextr train`` and ``dextr finetune`` share: options generated from the library's
settings schema (:class:`dextr_lib.config.TrainSettings`); running and rendering a job is in
:mod:`._training_run`, imported when a job runs (so ``--help`` does not load torch)."""
from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.markup import escape
from typing_extensions import Annotated

from dextr_lib.config import SETTING_FIELDS, TrainSettings

from .._options import ConfigOpt

_OTHER_OPTIONS = [
    ("job_name", str, typer.Argument(help="Job name: the folder <jobs dir>/JOB_NAME holds its outputs.",
                                     show_default=False), inspect.Parameter.empty),
    ("resume", bool, typer.Option("--resume", help="Continue the job from its last checkpoint, last.pt (weights, "
                                  "optimiser, schedule, epoch, RNG). The original command with --resume "
                                  "added works; only options whose value differs are refused."), False),
    ("overwrite", bool, typer.Option("--overwrite", help="Delete an existing job of this name and start again."), False),
    ("jobs_dir", Optional[Path], typer.Option("--jobs-dir", help="Folder of job directories (default: \\[paths] "
                                              "jobs, else ./jobs).", file_okay=False, show_default=False), None),
    ("preset", Optional[str], typer.Option("--preset", help="Start from a named set of settings: "
                                           "cpu-small (a laptop CPU, about 15 minutes) or voc-paper (the "
                                           "paper's, for GPUs); options given here override it.",
                                           show_default=False), None),
    ("nproc", Optional[int], typer.Option("--nproc", min=1, help="Start N training processes on this machine "
                                          "with torchrun (distributed data parallel; gloo on CPU, NCCL on CUDA).",
                                          show_default=False), None),
]


def _option(name: str, f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    meta = f.metadata
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Union else hint
    flag = meta["flag"] or "--" + name.replace("_", "-")
    if base is bool and "/" not in flag:
        flag = f"{flag}/--no-{flag[2:]}"
    default = f.default if f.default is not dataclasses.MISSING else None
    help = meta["help"]
    if meta["choices"]:
        help += f" One of: {', '.join(meta['choices'])}."
    if default not in (None, dataclasses.MISSING) and not isinstance(default, list):
        shown = ("on" if default else "off") if isinstance(default, bool) else default
        help += f" (default: {shown})"
    kw = {k: meta[k] for k in ("min", "max") if meta[k] is not None and base in (int, float)}
    option = typer.Option(*flag.split(" "), help=escape(help), show_default=False, **kw)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[base], option])


def make_command(command: str, doc: str) -> Callable[..., None]:
    """The ``train``/``finetune`` command: one option per :class:`TrainSettings` field (of that
    command), each ``None`` unless given so the config's ``[train]`` value or default applies."""
    hints = typing.get_type_hints(TrainSettings)
    params = [inspect.Parameter("job_name", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=Annotated[str, _OTHER_OPTIONS[0][2]])]
    params += [_option(name, f, hints[name]) for name, f in SETTING_FIELDS.items()
               if f.metadata["command"] in (None, command)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=Annotated[t, o])
               for n, t, o, d in _OTHER_OPTIONS[1:]]
    params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOpt))

    def cmd(**options: Any) -> None:
        from ._training_run import run_job  # torch and the training code: only when a job runs

        run_job(command, options)

    cmd.__name__ = command
    cmd.__doc__ = doc
    cmd.__signature__ = inspect.Signature(params)
    cmd.__annotations__ = {p.name: p.annotation for p in params}
    return cmd


