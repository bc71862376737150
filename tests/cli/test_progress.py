"""Progress of long work: plain lines when stderr is not a terminal, and no bar for work that
reported nothing (a dataset index read from its cache)."""
from dextr_cli import _progress
from dextr_cli._progress import progress_bar


def test_plain_lines_without_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(_progress.err_console, "_force_terminal", False)
    with progress_bar("Evaluating", 10) as update:
        for done in range(1, 11):
            update(done)  # well within PLAIN_PROGRESS_EVERY: the first line, then the last
    assert capsys.readouterr().err.splitlines() == ["Evaluating: 1/10", "Evaluating: 10/10"]

    monkeypatch.setattr(_progress, "PLAIN_PROGRESS_EVERY", 0.0)  # a slow run: a line each time
    with progress_bar("Indexing dataset") as update:
        update(1, 3)
        update(2, 3)
        update(3, 3)
    assert capsys.readouterr().err.splitlines() == [f"Indexing dataset: {k}/3" for k in (1, 2, 3)]


def test_work_that_reports_nothing_shows_nothing(capsys, monkeypatch):
    for terminal in (False, True):
        monkeypatch.setattr(_progress.err_console, "_force_terminal", terminal)
        with progress_bar("Indexing dataset"):
            pass  # e.g. the index came from its cache
        assert "Indexing" not in capsys.readouterr().err
