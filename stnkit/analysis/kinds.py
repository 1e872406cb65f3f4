"""Rebuilding a stored run's hyperparameter kinds, to map its values between u and constrained space.

A run file stores constrained values and σ in unconstrained units; turning ``h ± σ`` into
constrained values needs each hyperparameter's kind with the options the run was declared with,
which the stored recipe holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from stnkit.hyper.kinds import HyperKind
from stnkit.plugins import Plugins
from stnkit.store.reader import RunRecord

__all__ = ["Presentation", "rebuild_kinds", "sigma_band", "strictly_inside"]


def rebuild_kinds(record: RunRecord, plugins: Plugins) -> dict[str, HyperKind]:
    """The run's kinds by hyperparameter name; a name whose kind cannot be rebuilt (its plugin is
    not installed, the recipe entry is missing or does not validate) is left out."""
    declared = record.recipe.get("hyperparameters")
    kinds: dict[str, HyperKind] = {}
    if not isinstance(declared, dict):
        return kinds
    for name in record.hyperparameters:
        entry = declared.get(name)
        if not isinstance(entry, dict):
            continue
        options = dict(entry)
        kind_name = options.pop("kind", None)
        if not isinstance(kind_name, str) or kind_name not in plugins.kinds:
            continue
        kind_cls = plugins.kinds.get(kind_name)
        try:
            kinds[name] = kind_cls(kind_cls.Config.model_validate(options))
        except ValidationError:
            continue
    return kinds


def sigma_band(kind: HyperKind, values: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constrained values of ``u ∓ σ`` where ``u`` is the unconstrained form of each value.

    The band shows where the perturbed hyperparameters the STN trained on mostly fell.
    """
    with torch.no_grad():
        centre = kind.unconstrain(torch.as_tensor(np.asarray(values, dtype=np.float64)))
        sigma = torch.as_tensor(np.asarray(sigmas, dtype=np.float64))
        low = kind.constrain(centre - sigma).numpy()
        high = kind.constrain(centre + sigma).numpy()
    # a value saturated on a bound unconstrains to ±inf; ±inf ∓ σ maps back onto that bound
    low = np.where(np.isnan(low), values, low)
    high = np.where(np.isnan(high), values, high)
    return np.minimum(low, high), np.maximum(low, high)


def strictly_inside(kind: HyperKind, value: float) -> float:
    """``value`` moved just inside the kind's open range, so it is a valid ``init``.

    A recorded value can sit exactly on a bound (a sigmoid saturated in float32); the kinds'
    configs require an initial value strictly inside. A discrete kind's ``init`` is a value it
    produces, so the kind itself maps the recorded (continuous) value: flooring is right only for
    consecutive integers, and gave ``init (5)`` for a choice among 0, 4, 8 and 14.
    """
    if kind.discrete:
        return kind.used_value(value)
    low, high = kind.low, kind.high
    if value <= low:
        value = float(np.nextafter(low, math.inf))
    if value >= high:
        value = float(np.nextafter(high, -math.inf))
    return value


@dataclass(frozen=True)
class Presentation:
    """How a stored run's hyperparameter values are displayed: as its components received them.

    The run file records constrained values (a discrete kind's continuous value, which replays
    need); ``show``, ``export`` and ``plot`` display each kind's :meth:`~HyperKind.used_value`
    instead. A kind whose plugin is not installed falls back on the file's ``integer`` flag.
    """

    record: RunRecord
    kinds: dict[str, HyperKind] = field(default_factory=dict)

    @classmethod
    def of(cls, record: RunRecord, plugins: Plugins | None) -> Presentation:
        return cls(record, rebuild_kinds(record, plugins) if plugins is not None else {})

    def discrete(self, name: str) -> bool:
        kind = self.kinds.get(name)
        if kind is not None:
            return kind.discrete
        names = self.record.hyperparameters
        return name in names and bool(self.record.integer[names.index(name)])

    def log_scale(self, name: str) -> bool:
        kind = self.kinds.get(name)
        return kind is not None and kind.log_scale

    def values(self, name: str, values: Any) -> np.ndarray:
        """Recorded values of ``name`` (any shape) as components received them; NaN stays NaN."""
        array = np.array(values, dtype=np.float64)
        if not self.discrete(name):
            return array
        finite = np.isfinite(array)
        kind = self.kinds.get(name)
        if kind is None:
            array[finite] = np.floor(array[finite])
            return array
        with torch.no_grad():
            array[finite] = kind.discretize(torch.as_tensor(array[finite])).numpy()
        return array

    def value(self, name: str, value: float | None) -> float | None:
        if value is None:
            return None
        return float(self.values(name, [value])[0])

    def summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """``RunRecord.summary()`` with ``used`` (initial, final, best as components received them)
        added to each hyperparameter's entry; the recorded values stay as they are."""
        hyper = {
            name: {**info, "used": {k: self.value(name, info.get(k)) for k in ("initial", "final", "best")}}
            for name, info in summary.get("hyperparameters", {}).items()
        }
        return {**summary, "hyperparameters": hyper}
