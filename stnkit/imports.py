"""``"package.module:name"`` targets: how a recipe names a user's own class or function."""

from __future__ import annotations

import importlib
import re
from typing import Any

__all__ = ["import_target"]

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def import_target(spec: str) -> Any:
    """The object ``spec`` names: ``module:attribute`` (the attribute may be dotted, ``Outer.Inner``).

    Raises ``ValueError`` with a message fit for a recipe location (pydantic validators turn it
    into ``data.target: ...``); the cause of a failed import is kept in the message.
    """
    if not _TARGET.match(spec):
        raise ValueError(f"must be 'package.module:name', not {spec!r}")
    module_name, _, attribute = spec.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r} ({error}); is its folder on PYTHONPATH?") from None
    except Exception as error:  # the user's module fails while loading
        raise ValueError(f"importing {module_name!r} failed: {type(error).__name__}: {error}") from None
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError as error:
            raise ValueError(str(error) if module_name == "stnkit.live" else f"{spec!r}: {error}") from None
    return value
