"""The commands our documentation shows: the ```bash blocks of README.md and of every docs/*.md page,
and the "Examples:" of every command's ``--help`` (and those pages' ```python blocks).
tests/test_docs.py runs them all; ``python tests/helpers/doc_commands.py`` lists them.

A shown command is one logical line: continuation lines (``\\`` at the end) are joined; blank
lines and comment-only lines are dropped; trailing ``# comments`` stay (bash ignores them).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"


def doc_pages() -> List[Path]:
    """The documentation's pages: README.md, then docs/*.md by name."""
    return [README] + sorted(DOCS.glob("*.md"))


def page_name(path: Path) -> str:
    """A page as the tests name it: its path in the repository (``docs/serve.md``)."""
    return path.relative_to(REPO).as_posix()


def relative_links(path: Path) -> List[str]:
    """The targets of a page's Markdown links and images that point into the repository (no
    URL, no ``#anchor``), relative to the page's folder."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8"))
    return [t.split("#")[0] for t in targets if "://" not in t and not t.startswith(("#", "mailto:"))]


def shell_lines(block: str) -> List[str]:
    """The logical command lines of a bash code block."""
    lines = []
    for line in block.replace("\\\n", " ").splitlines():
        line = " ".join(line.split())
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def page_commands(path: Path = README) -> List[str]:
    """Every command of a page's ```bash blocks, in document order."""
    text = path.read_text(encoding="utf-8")
    return [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in shell_lines(block)]


def page_python_blocks(path: Path = README) -> List[str]:
    """A page's ```python blocks, in document order."""
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def help_examples() -> Dict[str, List[str]]:
    """``{command name: [example lines]}``: the ``dextr ...`` lines after "Examples:" in each
    command's help, in the order the app registers the commands."""
    import typer.main

    from dextr_cli.app import app

    group = typer.main.get_command(app)
    examples = {}
    for name, cmd in group.commands.items():
        doc = cmd.help or ""
        tail = doc.split("Examples:", 1)[1] if "Examples:" in doc else ""
        examples[name] = [" ".join(ln.split()) for ln in tail.splitlines() if ln.strip().startswith("dextr ")]
    return examples


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    for page in doc_pages():
        print(f"# {page_name(page)}")
        print("\n".join(page_commands(page)))
    for name, lines in help_examples().items():
        print(f"# dextr {name} --help")
        print("\n".join(lines))
