"""Find functional dropout calls (``F.dropout(x, p)``) in a module's code, which conversion
cannot swap for a hyperparameter-driven module."""

from __future__ import annotations

import ast
import inspect
import os
import sys
import textwrap
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["DROPOUT_FUNCTIONS", "DropoutCallWatch", "find_functional_dropout"]

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


_TORCH_DIR = os.path.dirname(torch.__file__)
_STNKIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PASS_THROUGH = (os.path.join(_TORCH_DIR, "overrides.py"), os.path.join(_TORCH_DIR, "nn", "functional.py"))


def _direct_caller() -> str | None:
    """``file:line`` of the code that called the dropout function being handled, when that code
    is neither torch's (``nn.Dropout``, attention) nor stnkit's; else ``None``."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in (*_PASS_THROUGH, __file__):
        frame = frame.f_back
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    if filename.startswith(_TORCH_DIR) or filename.startswith(_STNKIT_DIR):
        return None
    return f"{filename}:{frame.f_lineno}"


class DropoutCallWatch(TorchFunctionMode):
    """Records the first functional dropout called from outside torch and stnkit while active:
    the run-time check behind :func:`find_functional_dropout`, for code whose source cannot be
    read."""

    def __init__(self) -> None:
        super().__init__()
        self.found: str | None = None

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if self.found is None and func in DROPOUT_FUNCTIONS:
            site = _direct_caller()
            if site is not None:
                self.found = f"{site}: {getattr(func, '__name__', 'dropout')}(...)"
        return func(*args, **(kwargs or {}))
