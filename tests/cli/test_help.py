"""``--help`` reads well at 80 columns: no option name cut short, no Python types, plain usage."""
from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from dextr_cli.app import app

runner = CliRunner()
COMMANDS = list(typer.main.get_command(app).commands)
PYTHON_TYPES = re.compile(r"<(list\[|bool>|str>|int|float|file>|dir>|path>|Path>)")


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_at_80_columns(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = runner.invoke(app, [command, "--help"] if command else ["--help"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in r.stdout, "\n".join(line for line in lines if "…" in line)  # nothing cut
    assert not PYTHON_TYPES.search(r.stdout), PYTHON_TYPES.search(r.stdout).group(0)
    usage = next(line for line in lines if "Usage:" in line)
    assert "{" not in usage and "[OPTIONS]" in usage
    if command:
        assert "--debug" in r.stdout and "--threads" in r.stdout
    # Rich markup would take "dextr[onnx]" for a tag and show "pip install 'dextr'"
    flat = " ".join(line.strip(" │") for line in lines)
    assert "'dextr'" not in flat, "an extra's [name] was eaten by markup: escape it as \\["
    if command:
        # Rich keeps a description's single line breaks: one line per paragraph, or it wraps raggedly
        source = typer.main.get_command(app).commands[command].help or ""
        for paragraph in source.split("\n\n"):
            prose = [ln for ln in paragraph.splitlines() if ln.strip() and not ln.startswith("  ")]
            assert len(prose) <= 1 or max(map(len, prose)) <= 76, paragraph


def test_square_brackets_in_help_are_shown_not_taken_for_markup():
    """Rich reads "[cpu]" in "[cpu] threads" or "dextr[onnx]" as a markup tag and drops it from
    the help; the help text has to escape it as "\\[cpu]"."""
    group = typer.main.get_command(app)
    ctx = group.make_context("dextr", ["--help"], resilient_parsing=True)
    unescaped = re.compile(r"(?<!\\)\[[^\]\s]+\]")
    for name in ["", *COMMANDS]:
        cmd = group if not name else group.get_command(ctx, name)  # with --threads and --debug
        texts = [cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params)]
        found = [m.group(0) for t in texts for m in unescaped.finditer(t)]
        assert not found, f"dextr {name}: {found}"
    r = runner.invoke(app, ["download", "--help"], env={"COLUMNS": "200"})
    assert "else [cpu] threads" in r.stdout and "[paths] models" in r.stdout


def test_values_and_ranges_in_words(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    lines = runner.invoke(app, ["predict", "--help"]).stdout.splitlines()
    i = next(i for i, line in enumerate(lines) if "--batch-size" in line)
    assert " INT " in lines[i] and "range" not in lines[i] and "[x>=1]" not in lines[i]
    assert ">=1" in lines[i + 1]  # the range, under the value word
    prob = next(line for line in lines if "--prob " in line)
    assert "Write the probability" in prob and "bool" not in prob  # a flag shows no value
    assert "[OPTIONS] SRC DST" in runner.invoke(app, ["convert", "--help"]).stdout
    assert "[OPTIONS] [NAMES]..." in runner.invoke(app, ["download", "--help"]).stdout
    assert "[OPTIONS] MASK_OR_LABEL_IMAGE..." in runner.invoke(app, ["points-from-mask", "--help"]).stdout
