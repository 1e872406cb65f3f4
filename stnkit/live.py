"""Objects of this Python session that a recipe can name: ``target: "stnkit.live:<key>"``.

:class:`stnkit.Tuner` hands the user's model, DataLoaders and loss to the very components a
recipe names (``model: {name: module}``, ``data: {name: loaders}``) by putting them here and
writing their keys into the recipe it builds. A recipe thus stays the one description of a run,
whichever front end made it: the run file stores it, and the same engine trains it. The objects
live only as long as the session; a run file made this way is resumed and replayed from Python,
where the session puts its objects back under the stored keys.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

__all__ = ["MODULE", "forget", "key_of", "put", "target"]

MODULE = "stnkit.live"

_objects: dict[str, Any] = {}
_counter = itertools.count(1)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def put(kind: str, value: Any, key: str | None = None) -> str:
    """Keep ``value`` under ``key`` (a fresh ``<kind>_<n>`` if none) and return its target string."""
    if key is None:
        key = f"{kind}_{next(_counter)}"
    if not _KEY.match(key):
        raise ValueError(f"a live object's key must be a Python identifier, not {key!r}")
    _objects[key] = value
    return f"{MODULE}:{key}"


def target(key: str) -> str:
    return f"{MODULE}:{key}"


def key_of(spec: str) -> str | None:
    """The key of a ``stnkit.live:<key>`` target, ``None`` for any other target."""
    module, _, key = spec.partition(":")
    return key if module == MODULE and _KEY.match(key) else None


def forget(key: str) -> None:
    _objects.pop(key, None)


def __getattr__(name: str) -> Any:
    try:
        return _objects[name]
    except KeyError:
        raise AttributeError(
            f"{MODULE}:{name} is an object of the Python session that made this run (stnkit.Tuner), "
            "not importable from here: resume or replay the run from Python with the same objects "
            "(Tuner(...).fit(resume=path), result.replay(model_factory))"
        ) from None
