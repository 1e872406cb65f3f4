"""stnkit: tune hyperparameters while training, with Self-Tuning Networks.

Public API::

    from stnkit import hookimpl        # mark plugin hook implementations
    recipe = stnkit.load_recipe("recipes/toy-ridge.yaml", overrides=["train.epochs=3"])
    result = stnkit.run(recipe)        # or stnkit.run("recipe.yaml")
    record = stnkit.open_run(result.path)
    stnkit.resume(result.path)         # continue a stopped or crashed run from its checkpoint
"""

from __future__ import annotations

from stnkit import errors
from stnkit._version import __version__
from stnkit.hookspecs import hookimpl
from stnkit.recipe import Recipe, load_recipe
from stnkit.runner import RunResult, resume, run, validate
from stnkit.store.reader import RunRecord, open_run

__all__ = [
    "Recipe",
    "RunRecord",
    "RunResult",
    "__version__",
    "errors",
    "hookimpl",
    "load_recipe",
    "open_run",
    "resume",
    "run",
    "validate",
]
