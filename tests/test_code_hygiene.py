"""Comments, docstrings and recipe comments state invariants and reasons, never a lab notebook.

Dated figures, measured percentages, issue numbers and "used to / as before" stories belong in
docs/ and in git history; the code says why in the present tense.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("stnkit", "plugins", "recipes")

PATTERNS = {
    "a date": re.compile(r"\b20\d\d-\d\d(-\d\d)?\b"),
    "an issue number": re.compile(r"\bissues?\s*#?\d+|(?<![\w&])#\d+\b", re.IGNORECASE),
    "a history story": re.compile(
        r"\b(used to|as before|no longer|previously|formerly|earlier|until now)\b",
        re.IGNORECASE,
    ),
    "a traceback as the reason": re.compile(r"\(a traceback", re.IGNORECASE),
    "a measured percentage": re.compile(r"\d\.\d+\s*%"),
    "a mean ± std figure": re.compile(r"\d\s*(±|\+-)\s*\d"),
    "a speed figure": re.compile(r"\d+\s*(%|x|×)\s*(faster|slower)", re.IGNORECASE),
    "a pointer to the old notebook": re.compile(r"benchmarks\.md"),
}


def _python_text(path: Path) -> Iterator[tuple[int, str]]:
    """Each comment and docstring of a Python file, with its line number."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                value = body[0].value.value
                if isinstance(value, str):
                    for offset, line in enumerate(value.splitlines()):
                        yield body[0].lineno + offset, line
        # attribute docstrings (a string right after an assignment) are docs too
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            value = node.value.value
            if isinstance(value, str):
                yield node.lineno, value


def _yaml_comments(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.lstrip()
        if stripped.startswith("#"):
            yield number, stripped
        elif " #" in line:
            yield number, line[line.index(" #") :]


def _files() -> list[Path]:
    found: list[Path] = []
    for folder in FOLDERS:
        found += sorted((ROOT / folder).rglob("*.py"))
        found += sorted((ROOT / folder).rglob("*.yaml"))
    return [path for path in found if ".venv" not in path.parts and "build" not in path.parts]


def _hits(path: Path) -> list[str]:
    texts = _python_text(path) if path.suffix == ".py" else _yaml_comments(path)
    hits = []
    for number, text in texts:
        for what, pattern in PATTERNS.items():
            if pattern.search(text):
                name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                hits.append(f"{name}:{number}: {what}: {text.strip()[:100]}")
    return hits


def test_the_scan_covers_the_code() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in _files()}
    assert "stnkit/engine.py" in names
    assert "recipes/toy-ridge.yaml" in names
    assert any(name.startswith("plugins/stnkit-cnn/") for name in names)


@pytest.mark.parametrize(
    "text",
    [
        "# measured on 2026-12-02 over three seeds",
        "# centered by default (issue 16)",
        "# the store used to reopen the file",
        "# as before, the lock is taken first",
        "# 48.55% against 46.58%",
        "# 42.71 +- 1.3 against 41.73",
        "# raises a ValueError (a traceback) at build time",
        "# the whole run about 13% faster",
    ],
)
def test_the_patterns_catch_a_lab_notebook(text: str, tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text(f"x = 1  {text}\n")
    assert _hits(path) != []
    recipe = tmp_path / "x.yaml"
    recipe.write_text(f"{text}\nname: x\n")
    assert _hits(recipe) != []


def test_comments_and_docstrings_carry_no_lab_notebook() -> None:
    hits = [hit for path in _files() for hit in _hits(path)]
    assert hits == [], "\n".join(hits)


def test_recipe_headers_are_at_most_three_lines() -> None:
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        header = 0
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header += 1
        assert header <= 3, f"{path.name} opens with {header} comment lines"
