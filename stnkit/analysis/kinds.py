"""Rebuilding a stored run's hyperparameter kinds, to map its values between u and constrained space.

A run file stores constrained values and σ in unconstrained units; turning ``h ± σ`` into
constrained values needs each hyperparameter's kind with the options the run was declared with,
which the stored recipe holds.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import ValidationError

from stnkit.hyper.kinds import HyperKind
from stnkit.plugins import Plugins
from stnkit.store.reader import RunRecord

__all__ = ["rebuild_kinds", "sigma_band", "strictly_inside"]


def rebuild_kinds(record: RunRecord, plugins: Plugins) -> dict[str, HyperKind]:
    """The run's kinds by hyperparameter name; a name whose kind cannot be rebuilt (its plugin is
    not installed, the recipe entry is missing or no longer validates) is left out."""
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
    configs require an initial value strictly inside. Integer kinds floor into ``[low, high]``.
    """
    if kind.integer:
        low, high = kind.used_range()
        return float(min(max(math.floor(value), low), high))
    low, high = kind.low, kind.high
    if value <= low:
        value = float(np.nextafter(low, math.inf))
    if value >= high:
        value = float(np.nextafter(high, -math.inf))
    return value
