"""The package's import graph has no circle, the plugin markers sit in a leaf module, and the
recipe schema is known only to the modules that turn recipes into runs.

Imports are read from the source, so the checks hold however the modules happen to be imported
at run time. The circle check follows module-level imports outside ``if TYPE_CHECKING:``; the
recipe check counts every import, in functions and type-checking blocks too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stnkit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node.test):
            pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
    return found


def _edges(name: str, path: Path, known: set[str]) -> set[str]:
    """The stnkit modules ``name`` imports when it is imported (packages count as their
    ``__init__``; ``from package import module`` counts the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in names:
            if target in known and target != name:
                targets.add(target)
    # importing a.b.c imports a and a.b first
    parts = name.split(".")
    targets |= {".".join(parts[:i]) for i in range(1, len(parts))} & known
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _edges(name, path, known) for name, path in modules.items()}
    # a package's own __init__ importing its submodules is how packages expose their API; the
    # submodule importing its parent package is then not a circle that can bite, so the edge
    # from a submodule to its enclosing packages is left out
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    return graph


def test_the_walk_sees_the_imports() -> None:
    graph = _graph()
    assert "stnkit.errors" in graph["stnkit.recipe"]
    assert "stnkit.markers" in graph["stnkit.hookspecs"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_the_import_graph_has_no_circle() -> None:
    assert _cycles(_graph()) == []


def test_the_markers_module_is_a_leaf() -> None:
    assert _graph()["stnkit.markers"] == set()


@pytest.mark.parametrize("module", ["stnkit.markers", "stnkit.hookspecs", "stnkit.engine", "stnkit.cli"])
def test_a_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_plugins_keep_their_marker_import() -> None:
    import stnkit
    from stnkit.hookspecs import hookimpl as from_specs
    from stnkit.markers import hookimpl

    assert stnkit.hookimpl is hookimpl is from_specs


# Every stnkit module that imports stnkit.recipe, and why. Components (response models, the
# optimizer factory, kinds, data, models) read settings objects made by the builder instead.
RECIPE_IMPORTERS = {
    "stnkit": "the public API re-exports load_recipe and Recipe",
    "stnkit.build": "the builder: stage-2 validation and the settings objects made from a recipe",
    "stnkit.cli": "the command line loads the recipe files it is given",
    "stnkit.runner": "run() and validate() take a Recipe or a recipe file; resume parses the stored one",
    "stnkit.tuner": "the Python entry point writes its run as a recipe",
    "stnkit.analysis.replay": "a replay is a new recipe made from a run file's stored one",
    "stnkit.tune.driver": "a study loads the recipe file it searches over",
    "stnkit.tune.worker": "a trial's recipe is the study's stored one with sampled values",
}


def _imports_recipe(name: str, path: Path) -> bool:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            if any(alias.name == "stnkit.recipe" for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "stnkit.recipe" or (base == "stnkit" and any(a.name == "recipe" for a in node.names)):
                return True
    return False


def test_only_the_front_ends_and_the_builder_import_the_recipe_schema() -> None:
    importers = {
        name for name, path in _modules().items() if name != "stnkit.recipe" and _imports_recipe(name, path)
    }
    assert importers == set(RECIPE_IMPORTERS)


def test_the_recipe_check_sees_every_form_of_import(tmp_path: Path) -> None:
    forms = [
        "import stnkit.recipe",
        "from stnkit.recipe import Recipe",
        "from stnkit import recipe",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stnkit.recipe import Recipe",
        "def f():\n    from stnkit.recipe import load_recipe",
    ]
    for i, source in enumerate(forms):
        path = tmp_path / f"m{i}.py"
        path.write_text(source + "\n", encoding="utf-8")
        assert _imports_recipe("stnkit.m", path), source
    relative = tmp_path / "rel.py"
    relative.write_text("from ..recipe import Recipe\n", encoding="utf-8")
    assert _imports_recipe("stnkit.response.rel", relative)
    clean = tmp_path / "clean.py"
    clean.write_text("from stnkit.settings import TrainSettings\n", encoding="utf-8")
    assert not _imports_recipe("stnkit.m", clean)


def test_response_models_and_the_optimizer_factory_import_without_the_schema() -> None:
    code = (
        "import sys\n"
        "import stnkit.response.stn, stnkit.response.delta_stn, stnkit.response.fixed, stnkit.optim\n"
        "assert 'stnkit.recipe' not in sys.modules, sorted(sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def _constant(node: ast.expr) -> bool:
    """A value that cannot change: literals, and tuples and arithmetic of them."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Tuple):
        return all(_constant(element) for element in node.elts)
    if isinstance(node, ast.BinOp):
        return _constant(node.left) and _constant(node.right)
    if isinstance(node, ast.UnaryOp):
        return _constant(node.operand)
    return False


def _allowed_module_value(node: ast.expr) -> bool:
    if _constant(node):
        return True
    # a type variable, and the context variable the ambient state lives in (never rebound)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in {"TypeVar", "ContextVar"}
    )


def _module_state(source: str) -> list[str]:
    """Where a module keeps mutable state of its own: ``global``/``nonlocal`` statements anywhere,
    and module-level assignments of anything but a constant, a TypeVar or a ContextVar."""
    tree = ast.parse(source)
    found = [
        f"line {node.lineno}: {type(node).__name__.lower()} {', '.join(node.names)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Global | ast.Nonlocal)
    ]
    statements: list[ast.stmt] = list(tree.body)
    while statements:
        node = statements.pop(0)
        if isinstance(node, ast.If | ast.Try):
            statements.extend([*node.body, *node.orelse])
            continue
        if not isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            continue
        value = node.value
        if isinstance(node, ast.AugAssign) or (value is not None and not _allowed_module_value(value)):
            found.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return found


def test_distributed_keeps_no_mutable_module_state() -> None:
    assert _module_state((PACKAGE / "distributed.py").read_text()) == []


def test_the_module_state_check_sees_globals_and_mutable_values() -> None:
    source = """
from contextvars import ContextVar
from typing import TypeVar
T = TypeVar("T")
_SIZE = 25 * 2**20
__all__ = ("a", "b")
_CURRENT: ContextVar[int | None] = ContextVar("current", default=None)
_WORLD = World()
_SLICE: Slice | None = None
_NAMES = ["a"]
SEEN: dict[str, int] = {}
def setup() -> None:
    global _WORLD
    _WORLD = World(1)
"""
    found = _module_state(source)
    assert found == [
        "line 13: global _WORLD",
        "line 8: _WORLD = World()",
        "line 10: _NAMES = ['a']",
        "line 11: SEEN: dict[str, int] = {}",
    ]
