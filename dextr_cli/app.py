"""The ``dextr`` root command: global options, command registration and the error boundary."""
from __future__ import annotations

import os
import re
import sys
import warnings
from typing import List, Optional

import typer
from typer._click.exceptions import UsageError  # typer 0.29 vendors click; BadParameter's base
from typer.core import TyperGroup
from typing_extensions import Annotated

from dextr_lib import DextrError, __version__
from dextr_lib.config import load_config
from dextr_lib.errors import ConfigError, DextrWarning
from dextr_lib.utils.cpuload import auto_thread_count
from dextr_lib.utils.fileio import os_error_cause, shown_path
from dextr_lib.utils.limits import reset_limits, set_limits

from ._console import err_console, esc, warn


def _one_line(e: BaseException) -> str:
    """The message of an error the boundary reports (OS errors: the file and the cause)."""
    if isinstance(e, DextrError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory: the input is too large for this machine (see --help for size limits)"
    assert isinstance(e, OSError)
    where = " ".join(shown_path(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {os_error_cause(e)}" if where else os_error_cause(e)


_DEBUG = "dextr_debug"
_EXTRA_ARGS = re.compile(r"^Got unexpected extra argument(?:s|\(s\))? \((.*)\)$", re.S)


def _debug_requested(ctx: typer.Context) -> bool:
    """``--debug`` anywhere (root or command), or ``$DEXTR_DEBUG`` set to anything but 0/false/no."""
    env = os.environ.get("DEXTR_DEBUG", "").strip().lower()
    return bool(ctx.meta.get(_DEBUG) or ctx.params.get("debug")) or env not in ("", "0", "false", "no", "off")


def _set_debug(ctx: typer.Context, value: bool) -> None:
    if value:
        ctx.meta[_DEBUG] = True  # meta is shared by the whole context chain


def _build_debug_option():
    """The ``--debug`` flag every command accepts, built by Typer itself so its help renders
    like the command's own options."""
    probe = typer.Typer()

    @probe.command()
    def _probe(debug: Annotated[bool, typer.Option(
        "--debug", help="Show the full traceback on errors (also $DEXTR_DEBUG=1).", is_eager=True,
        expose_value=False, callback=_set_debug)] = False) -> None:
        """Never run."""

    return typer.main.get_command(probe).params[0]


_DEBUG_OPTION = _build_debug_option()


_THREADS = "dextr_threads"


def _set_threads(ctx: typer.Context, value: Optional[int]) -> None:
    if value is not None:
        ctx.meta[_THREADS] = value  # applied once parsing has succeeded (see _with_threads)


def _build_threads_option():
    """``--threads N``, accepted by every command like ``--debug``."""
    probe = typer.Typer()

    @probe.command()
    def _probe(threads: Annotated[Optional[int], typer.Option(
        "--threads", min=0, help="CPU threads for torch; 0: auto, the cores not already busy "
        "(default: $DEXTR_THREADS, else \\[cpu] threads, else auto).", show_default=False,
        is_eager=True, expose_value=False, callback=_set_threads)] = None) -> None:
        """Never run."""

    return typer.main.get_command(probe).params[0]


_THREADS_OPTION = _build_threads_option()


def _apply_threads(ctx: typer.Context) -> None:
    """Set torch's threads for a command about to run: its ``--threads``, else $DEXTR_THREADS,
    else the ``[cpu] threads`` of the config the command reads, else auto. Called after parsing;
    it never imports torch itself (``--help`` and usage errors stay fast)."""
    threads = ctx.meta.get(_THREADS)
    env = os.environ.get("DEXTR_THREADS", "").strip()
    if threads is None and env:
        if not env.isdigit():
            raise ConfigError(f"$DEXTR_THREADS must be a number of threads (0: auto), got {env!r}")
        threads = int(env)
    if threads is None:
        try:
            threads = load_config(ctx.params.get("config")).cpu.threads
        except DextrError:  # the command itself reports a broken or missing config
            threads = 0
    if "torch" in sys.modules:
        from dextr_lib.inference.device import set_threads

        set_threads(threads)
        return
    # torch is not loaded yet (a usage error or a command without a network may never load it):
    # pass the number through the variable torch reads when it starts.
    if os.environ.get("OMP_NUM_THREADS"):
        return
    if not threads:  # auto: fewer only where other processes over-fill the CPUs (see auto_threads)
        cpus = os.cpu_count() or 1
        threads = auto_thread_count(cpus)
        threads = threads if threads < cpus else 0  # 0: torch's own default
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _with_threads(cmd) -> None:
    """Make ``cmd`` set the threads (:func:`_apply_threads`) before its body runs."""
    run = cmd.invoke

    def invoke(ctx):
        _apply_threads(ctx)
        return run(ctx)

    cmd.invoke = invoke


def _glob_hint(message: str) -> Optional[str]:
    """For click's "Got unexpected extra arguments (a b c)" where they name existing files: the
    shell expanded an unquoted glob. One line that says so, instead of the whole file list."""
    m = _EXTRA_ARGS.match(message)
    extra: List[str] = m.group(1).split() if m else []
    if not any(os.path.exists(a) for a in extra):
        return None
    shown = " ".join(extra[:3]) + (" ..." if len(extra) > 3 else "")
    return (f"got {len(extra)} unexpected extra argument{'s' if len(extra) > 1 else ''} ({shown}): "
            "the shell expanded a glob pattern; quote the pattern, e.g. --target-pat 'labels/*.png'")


#: Help's value column in words, as click writes it, instead of Python types.
_VALUE_WORDS = {"int": "INT", "float": "FLOAT", "str": "TEXT", "file": "FILE", "dir": "DIR",
                "path": "PATH", "Path": "FILE"}


def _range_words(param) -> str:
    """A short range under the value word: ``>=1``, ``<=5``, ``0-1`` (Typer writes
    ``[0.0<=x<=0.99]`` beside it, too wide for 80 columns)."""
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is None and high is None:
        return ""
    if high is None:
        return f"\n>={low:g}"
    if low is None:
        return f"\n<={high:g}"
    return f"\n{low:g}-{high:g}"


def _plain_metavars(cmd, ctx) -> None:
    """Metavars that read well at 80 columns: ``TEXT``/``INT``/``FILE`` instead of
    ``<list[str]>``/``<int range>``, nothing for flags (not ``<bool>``), and arguments as
    ``JOB_NAME``/``NAMES...`` in the usage line (not ``{job_name}``). Explicit metavars stay."""
    help_option = cmd.get_help_option(ctx)
    for param in [*cmd.params, *([help_option] if help_option is not None else [])]:
        if not hasattr(param, "display_type"):  # not built by Typer (none today)
            continue
        label = param.display_type(ctx).strip("<>")
        label = label[5:-1] if label.startswith("list[") else label
        word = _VALUE_WORDS.get(label.replace(" range", ""), label)
        if param.param_type_name == "argument":
            name = param.metavar or param.name.upper()
            usage = (name if param.required else f"[{name}]") + ("..." if param.nargs != 1 else "")
            param.metavar = name
            # Typer writes a required argument as {NAME} and shows Python types; instance
            # attributes override the two methods for this parameter only.
            param._usage_display_name = lambda usage=usage: usage
            param.display_type_rich = lambda ctx, word=word: word
        elif param.metavar is None:
            param.metavar = "" if getattr(param, "is_flag", False) else word + _range_words(param)
            param._get_number_range_help_str = lambda: None  # now in the metavar


class _ErrorBoundary(TyperGroup):
    """Turns library errors, and OS errors (unreadable or unwritable files, a full disk), into
    one clear line and exit code 1 (``--debug``: full traceback)."""

    def get_command(self, ctx, cmd_name):
        # `--debug` is accepted after any command too (`dextr predict ... --debug`), and its
        # help lists it; the root option `dextr --debug COMMAND` keeps working.
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and _DEBUG_OPTION not in cmd.params:
            cmd.params.extend([_THREADS_OPTION, _DEBUG_OPTION])
            _plain_metavars(cmd, ctx)
            _with_threads(cmd)
        return cmd

    def format_help(self, ctx, formatter):
        _plain_metavars(self, ctx)  # the root's own options
        return super().format_help(ctx, formatter)

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (DextrError, OSError, MemoryError) as e:
            if _debug_requested(ctx):
                raise
            err_console.print(f"[bold red]Error:[/] {esc(_one_line(e))} [dim](--debug: traceback)[/]",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except UsageError as e:
            hint = _glob_hint(e.message)
            if hint is not None:
                e.message = hint
            raise
        except KeyboardInterrupt:
            err_console.print("Interrupted.")
            raise typer.Exit(130) from None


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """dextr's own warnings as one yellow line on stderr; others as Python prints them."""
    if issubclass(category, DextrWarning):
        warn(str(message))
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


app = typer.Typer(
    name="dextr",
    cls=_ErrorBoundary,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="DEXTR (Deep Extreme Cut): object masks from four extreme-point clicks.\n\n"
    "Click an object's left-most, right-most, top and bottom pixels; dextr returns its mask.",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dextr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors (also $DEXTR_DEBUG=1; accepted after any command too).")] = False,
    max_pixels: Annotated[Optional[int], typer.Option(
        "--max-pixels", min=1, help="Refuse images with more pixels (default: 100000000; also "
        "$DEXTR_MAX_PIXELS).", show_default=False)] = None,
    max_objects: Annotated[Optional[int], typer.Option(
        "--max-objects", min=1, help="Refuse more objects on one image (default: 1000; also "
        "$DEXTR_MAX_OBJECTS).", show_default=False)] = None,
    max_labels: Annotated[Optional[int], typer.Option(
        "--max-labels", min=1, help="Refuse label images with more distinct labels (default: 1000; "
        "also $DEXTR_MAX_LABELS).", show_default=False)] = None,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """DEXTR (Deep Extreme Cut): object masks from four extreme-point clicks."""
    reset_limits()  # each invocation starts from the defaults and the environment
    set_limits(max_pixels=max_pixels, max_objects=max_objects, max_labels=max_labels)


def _register() -> None:
    from .commands import convert, download, evaluate, export, finetune, points_from_mask, predict, serve, train

    app.command("predict")(predict.predict)
    app.command("points-from-mask")(points_from_mask.points_from_mask)
    app.command("serve")(serve.serve)
    app.command("train")(train.train)
    app.command("finetune")(finetune.finetune)
    app.command("eval")(evaluate.evaluate_command)
    app.command("download")(download.download)
    app.command("convert")(convert.convert)
    app.command("export")(export.export)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
