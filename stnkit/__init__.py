"""stnkit: tune hyperparameters while training, with Self-Tuning Networks.

Public API::

    from stnkit import hookimpl        # mark plugin hook implementations
    recipe = stnkit.load_recipe("recipes/toy-ridge.yaml", overrides=["train.epochs=3"])
    stnkit.validate(recipe)            # every check a run makes before its run file exists
    result = stnkit.run(recipe)        # or stnkit.run("recipe.yaml")
    result = stnkit.Tuner(model, hyperparameters={"dropout": 0.1}, train=train, valid=valid).fit()
    record = stnkit.open_run(result.path)
    stnkit.resume(result.path)         # continue a stopped or crashed run from its checkpoint

The names load on first use: ``python -m stnkit`` takes over Ctrl-C and SIGTERM before torch
and the rest are imported (see :mod:`stnkit.interrupts`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stnkit._version import __version__

if TYPE_CHECKING:
    from stnkit import errors
    from stnkit.markers import hookimpl
    from stnkit.recipe import Recipe, load_recipe
    from stnkit.runner import RunResult, resume, run, validate
    from stnkit.store.reader import RunRecord, open_run
    from stnkit.tuner import FitResult, Tuner

__all__ = [
    "FitResult",
    "Recipe",
    "RunRecord",
    "RunResult",
    "Tuner",
    "__version__",
    "errors",
    "hookimpl",
    "load_recipe",
    "open_run",
    "resume",
    "run",
    "validate",
]

_WHERE = {
    "errors": "stnkit.errors",
    "hookimpl": "stnkit.markers",
    "Recipe": "stnkit.recipe",
    "load_recipe": "stnkit.recipe",
    "RunResult": "stnkit.runner",
    "resume": "stnkit.runner",
    "run": "stnkit.runner",
    "validate": "stnkit.runner",
    "RunRecord": "stnkit.store.reader",
    "open_run": "stnkit.store.reader",
    "FitResult": "stnkit.tuner",
    "Tuner": "stnkit.tuner",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'stnkit' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if name == "errors" else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
