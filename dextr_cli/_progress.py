"""Progress for long work, fed by the library's ``(done, total)`` callbacks: a Rich bar on a
terminal, plain lines every :data:`PLAIN_PROGRESS_EVERY` seconds otherwise (CI logs, ``nohup``,
SLURM), so a redirected run is never silent for long."""
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.text import Text

from ._console import err_console, esc

#: Seconds between plain progress lines when stderr is not a terminal.
PLAIN_PROGRESS_EVERY = 30.0


class PlainLines:
    """Progress as plain lines, for a stderr that is not a terminal: the first line at once,
    then at most one every :data:`PLAIN_PROGRESS_EVERY` seconds; :meth:`flush` prints the last
    one if it was held back."""

    def __init__(self) -> None:
        self._printed = float("-inf")
        self._line: Optional[str] = None
        self._shown: Optional[str] = None

    def update(self, line: str) -> None:
        self._line = line
        self._print(force=False)

    def flush(self) -> None:
        self._print(force=True)

    def _print(self, force: bool) -> None:
        now = time.monotonic()
        if self._line != self._shown and (force or now - self._printed >= PLAIN_PROGRESS_EVERY):
            err_console.print(self._line, highlight=False)
            self._printed, self._shown = now, self._line


class _RateColumn(ProgressColumn):
    """``12.3 objects/s`` (blank until Rich has measured a speed)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text("" if task.speed is None else f"{task.speed:.1f} {self.unit}/s")


@contextmanager
def progress_bar(description: str, total: Optional[int] = None,
                 rate: Optional[str] = None) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``.

    On a terminal, a Rich bar on stderr that appears at the first update (work that turns out to
    have nothing to report, such as a dataset index read from its cache, shows no bar), with the
    speed in ``rate`` units per second when given (``"objects"``). Without a
    terminal, :class:`PlainLines` of ``description: done/total``, and the last count at the end.
    """
    live = err_console.is_terminal
    plain = PlainLines()
    tasks = []  # the bar's one task, made at the first update
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        *([_RateColumn(rate)] if rate else []), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=err_console, transient=False, disable=not live,
    ) as progress:

        def update(done: int, n: Optional[int] = None) -> None:
            if not tasks:
                tasks.append(progress.add_task(esc(description), total=n if n is not None else total))
            progress.update(tasks[0], completed=done, total=n)
            if not live:
                shown_total = progress.tasks[0].total
                plain.update(f"{description}: {done}/{'?' if shown_total is None else shown_total}")

        try:
            yield update
        finally:
            plain.flush()
