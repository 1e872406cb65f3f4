"""The search space of a baseline search, read from the recipe through the kinds' interface.

Each tuned hyperparameter (``tune: true``) contributes the :class:`~stnkit.hyper.SearchRange` its
kind declares (or the recipe's ``search:`` override). A trial's recipe is the study's recipe with
``response: fixed`` and each searched hyperparameter's ``init`` set to the sampled value.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from stnkit.errors import Problem, RecipeError, UsageError
from stnkit.hyper.kinds import HyperKind, SearchRange

__all__ = ["SearchSpace", "Suggester", "require_tuned", "search_space", "trial_recipe_data"]


class Suggester(Protocol):
    """The part of ``optuna.Trial`` a search space samples through."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...


@dataclass(frozen=True)
class SearchSpace:
    """``ranges``: hyperparameter name → where it is searched, in the recipe's order."""

    ranges: dict[str, SearchRange]

    def sample(self, trial: Suggester) -> dict[str, float]:
        """One point: each hyperparameter drawn by ``trial`` (an ``optuna.Trial``)."""
        values: dict[str, float] = {}
        for name, r in self.ranges.items():
            if r.integer:
                values[name] = float(trial.suggest_int(name, int(r.low), int(r.high), log=r.log))
            else:
                values[name] = float(trial.suggest_float(name, r.low, r.high, log=r.log))
        return values

    def grid(self, points: int) -> dict[str, list[float]]:
        """Grid values: ``points`` per continuous hyperparameter (log-spaced on a log scale), every
        integer of an integer range with at most ``points`` of them, else ``points`` spread ones."""
        if points < 1:
            raise UsageError(f"--grid-points must be at least 1 (not {points})")
        axes: dict[str, list[float]] = {}
        for name, r in self.ranges.items():
            if r.integer:
                count = int(r.high) - int(r.low) + 1
                if count <= points:
                    axes[name] = [float(v) for v in range(int(r.low), int(r.high) + 1)]
                else:
                    spread = np.linspace(r.low, r.high, points).round()
                    axes[name] = sorted({float(v) for v in spread})
            elif points == 1:
                axes[name] = [float(np.sqrt(r.low * r.high)) if r.log else (r.low + r.high) / 2]
            elif r.log:
                axes[name] = [float(v) for v in np.geomspace(r.low, r.high, points)]
            else:
                axes[name] = [float(v) for v in np.linspace(r.low, r.high, points)]
        return axes

    @staticmethod
    def grid_size(axes: Mapping[str, list[float]]) -> int:
        return math.prod(len(values) for values in axes.values())

    def to_json(self) -> dict[str, Any]:
        return {name: asdict(r) for name, r in self.ranges.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        return cls({name: SearchRange(**dict(r)) for name, r in data.items()})


def require_tuned(declared: Mapping[str, Any], label: str) -> None:
    """Raise :class:`~stnkit.errors.UsageError` when no declaration in ``declared`` (a recipe's
    ``hyperparameters`` section) is tuned; ``label`` names the recipe in the message.

    Checked before stage 2, which would report an STN recipe without tuned values as the STN's
    problem.
    """
    if not any(isinstance(e, Mapping) and e.get("tune", True) is not False for e in declared.values()):
        raise UsageError(f"{label}: nothing to tune: declare a hyperparameter with tune: true")


def search_space(kinds: Mapping[str, HyperKind], label: str) -> SearchSpace:
    """The search space of a resolved recipe's ``kinds``: every one declared with ``tune: true``.

    Raises :class:`~stnkit.errors.RecipeError` for a kind without a usable range, and
    :class:`~stnkit.errors.UsageError` (naming the recipe by ``label``) when nothing is tuned.
    """
    ranges: dict[str, SearchRange] = {}
    problems: list[Problem] = []
    for name, kind in kinds.items():
        if not kind.config.tune:
            continue
        try:
            ranges[name] = kind.search_range()
        except ValueError as error:
            problems.append((f"hyperparameters.{name}.search", str(error)))
    if problems:
        raise RecipeError(problems)
    if not ranges:
        raise UsageError(f"{label}: nothing to tune: declare a hyperparameter with tune: true")
    return SearchSpace(ranges)


def trial_recipe_data(
    base: Mapping[str, Any], space: SearchSpace, values: Mapping[str, float], name: str
) -> dict[str, Any]:
    """The recipe (as a dict) of one trial: ``base`` with the plain network (``response: fixed``)
    held at ``values``, named ``name``."""
    data = copy.deepcopy(dict(base))
    data["name"] = name
    data["response"] = {"name": "fixed"}
    hyper = data.setdefault("hyperparameters", {})
    for key, value in values.items():
        entry = dict(hyper[key])
        entry["init"] = int(value) if space.ranges[key].integer else float(value)
        hyper[key] = entry
    return data
