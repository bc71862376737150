"""The package's layering: each layer imports only the layers below it, no import cycle among
dextr_lib's modules, no CLI imports in it.

The layers are dextr_lib's subpackages (and its few top-level modules). Formats and data are pure
data, never a model; inference and weights never read annotation files; only workflows,
evaluation, training and serving join models with files. Every import counts, including the ones
inside functions (imports inside functions are how cycles used to be hidden)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import pytest

LIB = Path(__file__).resolve().parents[2] / "dextr_lib"

_BASE = {"errors", "version", "utils"}
#: The layers each layer may import, besides itself. A new subpackage or top-level module must be
#: given a place here: the test fails on a layer it does not know.
ALLOWED: Dict[str, Set[str]] = {
    "errors": set(),
    "version": set(),
    "utils": {"errors", "version"},
    "config": _BASE,
    "core": _BASE,
    "formats": _BASE | {"core"},
    "data": _BASE | {"config", "core", "formats"},  # config: the dataset kinds
    "inference": _BASE | {"core"},
    "weights": _BASE | {"core", "inference"},
    "model": _BASE | {"core", "inference", "weights"},
    "evaluation": _BASE | {"core", "formats", "data", "inference", "model"},
    "workflows": _BASE | {"core", "formats", "inference", "weights", "model", "evaluation"},
    "training": _BASE | {"config", "core", "formats", "data", "inference", "weights", "model", "evaluation"},
    "serving": _BASE | {"core", "formats", "inference", "model", "workflows"},
    "dextr_lib": {"errors", "version"},  # the package itself; the rest loads lazily by name
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> Set[str]:
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = {target}
    for alias in node.names:  # `from . import zoo` imports the submodule dextr_lib.weights.zoo
        out.add(f"{target}.{alias.name}")
    return out


def _graph(all_imports: bool) -> Dict[str, Set[str]]:
    files = {_module_name(p): p for p in LIB.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = ast.walk(tree) if all_imports else tree.body
        deps: Set[str] = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom):
                deps |= _resolve(mod, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[mod] = {d for d in deps if d in files and d != mod and not mod.startswith(d + ".")}
    return graph


def _find_cycle(graph: Dict[str, Set[str]]):
    state: Dict[str, int] = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


@pytest.mark.parametrize("all_imports", [False, True], ids=["module-level", "including-function-level"])
def test_no_import_cycle(all_imports):
    # A package __init__ importing its own submodules is not a cycle, so edges into a package's
    # __init__ from inside it were dropped above.
    cycle = _find_cycle(_graph(all_imports))
    assert cycle is None, " -> ".join(cycle)


def test_find_cycle_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _violations(graph: Dict[str, Set[str]]):
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            src, dst = _layer(mod), _layer(dep)
            if src != dst and dst not in ALLOWED.get(src, set()):
                yield f"{mod} imports {dep}: layer {src!r} may import only {sorted(ALLOWED.get(src, ()))}"


def test_every_module_is_in_a_known_layer():
    unknown = sorted({_layer(m) for m in _graph(all_imports=True)} - set(ALLOWED))
    assert not unknown, f"give these layers a place in ALLOWED: {unknown}"


def test_layers_import_only_the_layers_below_them():
    problems = list(_violations(_graph(all_imports=True)))
    assert not problems, "\n".join(problems)


def test_layer_check_sees_a_format_calling_a_model():
    graph = {"dextr_lib.formats.coco": {"dextr_lib.model"}, "dextr_lib.model": set()}
    assert [v.split(":")[0] for v in _violations(graph)] == [
        "dextr_lib.formats.coco imports dextr_lib.model"]


def test_public_names_resolve():
    import dextr_lib

    for name in dextr_lib.__all__:
        assert getattr(dextr_lib, name) is not None, name


def test_library_never_imports_the_cli():
    for path in LIB.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in ("typer", "rich", "dextr_cli"), f"{path}: {name}"


#: The layers of plain data: they load without torch (a points file, a COCO file or a report is
#: read and written without the 1-2 s and hundreds of MB that importing torch costs).
TORCH_FREE = ("dextr_lib.config", "dextr_lib.core", "dextr_lib.formats", "dextr_lib.data",
              "dextr_lib.evaluation.report", "dextr_lib.evaluation.metrics", "dextr_lib.evaluation.matching",
              "dextr_lib.evaluation.baselines", "dextr_lib.workflows.points")


def test_data_layers_load_without_torch():
    modules = sorted(m for m in _graph(all_imports=False) if m.startswith(TORCH_FREE))
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "    assert 'torch' not in sys.modules, m + ' imported torch'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=LIB.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(modules) > 15  # the selection above still names the layers
