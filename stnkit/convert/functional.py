"""Find functional dropout calls (``F.dropout(x, p)``) in a module's code, which conversion
cannot swap for a hyperparameter-driven module."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DROPOUT_FUNCTIONS", "find_functional_dropout"]

DROPOUT_FUNCTIONS: frozenset[Any] = frozenset(
    {
        F.dropout,
        F.dropout1d,
        F.dropout2d,
        F.dropout3d,
        F.alpha_dropout,
        F.feature_alpha_dropout,
        torch.dropout,
        torch.feature_dropout,
        torch.alpha_dropout,
        torch.feature_alpha_dropout,
    }
)


def _resolve(node: ast.expr, namespace: dict[str, Any]) -> Any:
    """The object a ``name`` or ``name.attr.attr`` expression names in ``namespace``; ``None``
    for anything else (``self.drop``, calls, subscripts)."""
    if isinstance(node, ast.Name):
        if node.id == "self":
            return None
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, namespace)
        return None if base is None else getattr(base, node.attr, None)
    return None


def _own_classes(module: nn.Module) -> list[type[Any]]:
    """The classes of ``module``'s submodules that are not torch's own, each with its bases."""
    seen: list[type[Any]] = []
    for sub in module.modules():
        for cls in type(sub).__mro__:
            if cls.__module__.startswith("torch") or cls in seen or cls is object:
                continue
            if cls.__module__.startswith("stnkit."):
                continue
            seen.append(cls)
    return seen


def find_functional_dropout(module: nn.Module) -> str | None:
    """``"file:line: F.dropout(...) in Class.method"`` for the first functional dropout call in
    the code of ``module``'s own (non-torch) classes, or ``None``. Code whose source cannot be
    read (built in a REPL, compiled) is not checked."""
    for cls in _own_classes(module):
        try:
            source = textwrap.dedent(inspect.getsource(cls))
            filename = inspect.getsourcefile(cls) or "?"
            _, first = inspect.getsourcelines(cls)
        except (OSError, TypeError):
            continue
        python_module = sys.modules.get(cls.__module__)
        namespace = dict(vars(python_module)) if python_module is not None else {}
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            target = _resolve(node.func, namespace)
            if target is not None and any(target is f for f in DROPOUT_FUNCTIONS):
                call = ast.unparse(node.func)
                return f"{filename}:{first + node.lineno - 1}: {call}(...) in {cls.__qualname__}"
    return None
