"""Progress for long work, fed by the library's ``(done, total)`` callbacks: a Rich bar on a
terminal, plain lines every :data:`PLAIN_PROGRESS_EVERY` seconds otherwise (CI logs, ``nohup``,
SLURM), so a redirected run is never silent for long."""
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

from ._console import err_console, esc

#: Seconds between plain progress lines when stderr is not a terminal.
PLAIN_PROGRESS_EVERY = 30.0


@contextmanager
def progress_bar(description: str, total: Optional[int] = None) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``.

    On a terminal, a Rich bar on stderr that appears at the first update (work that turns out to
    have nothing to report, such as a dataset index read from its cache, shows no bar). Without a
    terminal, a plain ``description: done/total`` line at the first update, then at most every
    :data:`PLAIN_PROGRESS_EVERY` seconds, and the last count at the end.
    """
    live = err_console.is_terminal
    state = {"task": None, "printed": float("-inf"), "line": None, "shown": None}

    def plain(force: bool = False) -> None:
        now = time.monotonic()
        if state["line"] != state["shown"] and (force or now - state["printed"] >= PLAIN_PROGRESS_EVERY):
            err_console.print(state["line"], highlight=False)
            state["printed"], state["shown"] = now, state["line"]

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=err_console, transient=False, disable=not live,
    ) as progress:

        def update(done: int, n: Optional[int] = None) -> None:
            if state["task"] is None:
                state["task"] = progress.add_task(esc(description), total=n if n is not None else total)
            progress.update(state["task"], completed=done, total=n)
            if not live:
                shown_total = n if n is not None else progress.tasks[0].total
                state["line"] = f"{description}: {done}/{'?' if shown_total is None else shown_total}"
                plain()

        try:
            yield update
        finally:
            if not live and state["line"] is not None:
                plain(force=True)
