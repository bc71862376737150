"""The ``dextr`` root command: global options, command registration and the error boundary."""
from __future__ import annotations

import os
import warnings
from typing import Optional

import typer
from typer.core import TyperGroup
from typing_extensions import Annotated

from dextr_lib import DextrError, __version__
from dextr_lib.errors import DextrWarning
from dextr_lib.fileio import os_error_cause, shown_path
from dextr_lib.limits import reset_limits, set_limits

from ._console import err_console, esc


def _one_line(e: BaseException) -> str:
    """The message of an error the boundary reports (OS errors: the file and the cause)."""
    if isinstance(e, DextrError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory: the input is too large for this machine (see --help for size limits)"
    assert isinstance(e, OSError)
    where = " ".join(shown_path(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {os_error_cause(e)}" if where else os_error_cause(e)


class _ErrorBoundary(TyperGroup):
    """Turns library errors, and OS errors (unreadable or unwritable files, a full disk), into
    one clear line and exit code 1 (``--debug``: full traceback)."""

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (DextrError, OSError, MemoryError) as e:
            if ctx.params.get("debug") or os.environ.get("DEXTR_DEBUG"):
                raise
            err_console.print(f"[bold red]Error:[/] {esc(_one_line(e))}", highlight=False, soft_wrap=True)
            err_console.print("[dim](run with --debug for the full traceback)[/]", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("Interrupted.")
            raise typer.Exit(130) from None


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """dextr's own warnings as one yellow line on stderr; others as Python prints them."""
    if issubclass(category, DextrWarning):
        err_console.print(f"[yellow]Warning:[/] {esc(str(message))}", highlight=False, soft_wrap=True)
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
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
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
    from .commands import (
        convert, download, evaluate, export, finetune, points_from_mask, predict, serve, train,
    )

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
