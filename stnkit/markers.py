"""The pluggy markers of the ``stnkit`` project: a leaf module, so any module can mark hook
implementations without importing the hook specifications (and what they import)."""

from __future__ import annotations

import pluggy

__all__ = ["PROJECT", "hookimpl", "hookspec"]

#: the project name: pluggy's marker name, the plugin manager's and the entry-point group
PROJECT = "stnkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
