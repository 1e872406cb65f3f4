"""Hyperparameter kinds and the space they live in."""

from __future__ import annotations

from stnkit.hyper.kinds import (
    HyperConfig,
    HyperKind,
    IntegerKind,
    IntervalKind,
    PositiveKind,
    SearchRange,
    UnitKind,
)
from stnkit.hyper.space import HyperBatch, HyperSpace

__all__ = [
    "HyperBatch",
    "HyperConfig",
    "HyperKind",
    "HyperSpace",
    "IntegerKind",
    "IntervalKind",
    "PositiveKind",
    "SearchRange",
    "UnitKind",
]
