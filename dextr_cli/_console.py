"""The app's consoles: results go to stdout, messages and errors to stderr.

Every user-supplied string (paths, names, labels, error messages) printed through Rich goes
through :func:`esc`: Rich would read ``[old]`` in a file name as markup (and drop it) and crash
on ``[/x]``; names that are not valid UTF-8 would crash the encoder."""
from rich.console import Console
from rich.markup import escape

from dextr_lib.utils.fileio import shown_path

console = Console()
err_console = Console(stderr=True)


def esc(value: object) -> str:
    """``value`` as text that Rich prints literally (markup escaped, undecodable bytes shown)."""
    return escape(shown_path(value))


def warn(message: object) -> None:
    """A warning that does not stop the command: one yellow line on stderr."""
    err_console.print(f"[yellow]Warning:[/] {esc(message)}", highlight=False, soft_wrap=True)
