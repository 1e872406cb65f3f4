"""``"package.module:name"`` targets: how a recipe names a user's own class or function."""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

__all__ = ["import_target"]

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _search_working_directory() -> None:
    here = os.getcwd()
    if not any(os.path.abspath(entry or ".") == here for entry in sys.path):
        sys.path.append(here)


def import_target(spec: str) -> Any:
    """The object ``spec`` names: ``module:attribute`` (the attribute may be dotted, ``Outer.Inner``).

    The working directory is searched after the installed packages, as ``python -m`` would, so
    the ``stnkit`` script finds a project's own modules when it runs from the project's root.
    Raises ``ValueError`` with a message fit for a recipe location (pydantic validators turn it
    into ``data.target: ...``); the cause of a failed import is kept in the message.
    """
    if not _TARGET.match(spec):
        raise ValueError(f"must be 'package.module:name', not {spec!r}")
    module_name, _, attribute = spec.partition(":")
    _search_working_directory()
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import {module_name!r} ({error}); run from the project's root "
            "or put its folder on PYTHONPATH"
        ) from None
    except Exception as error:  # the user's module fails while loading
        raise ValueError(f"importing {module_name!r} failed: {type(error).__name__}: {error}") from None
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError as error:
            raise ValueError(str(error) if module_name == "stnkit.live" else f"{spec!r}: {error}") from None
    return value
