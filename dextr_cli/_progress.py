"""A Rich progress bar fed by the library's ``(done, total)`` callbacks."""
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

from ._console import err_console, esc


@contextmanager
def progress_bar(description: str, total: int = None) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``; the bar is drawn on stderr and vanishes when not a terminal."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=err_console, transient=False,
    ) as progress:
        task = progress.add_task(esc(description), total=total)

        def update(done: int, total: int = None) -> None:
            progress.update(task, completed=done, total=total)

        yield update
