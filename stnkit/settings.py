"""The training settings response models and the optimizer factory read.

Plain frozen dataclasses, independent of the YAML schema: :mod:`stnkit.build` makes them from a
validated recipe, and a plugin's tests (or the Python entry point) can make them directly. The
recipe validates every value; these objects only carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "OptimizerName",
    "OptimizerSettings",
    "PerturbationSettings",
    "StoreSettings",
    "TrainSettings",
]

OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]


@dataclass(frozen=True)
class OptimizerSettings:
    """One torch optimizer (``train.optimizer``, ``train.hyper_optimizer``...); ``clip`` is the
    gradient-norm bound the step rule applies (``None``: no clipping)."""

    name: OptimizerName
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip: float | None = None


@dataclass(frozen=True)
class PerturbationSettings:
    """σ's start (unconstrained units), whether hyper steps tune it, the entropy weight τ in
    ``val_loss − τ·entropy(σ)``, and the bound on every σ (``None``: unbounded)."""

    init_scale: float = 0.5
    tune: bool = True
    entropy_weight: float = 1e-3
    max_scale: float | None = None


@dataclass(frozen=True)
class TrainSettings:
    """What a response model's :meth:`~stnkit.response.base.ResponseModel.weight_parameters`,
    ``hyper_parameters`` and ``setup`` read: the run's optimizers and perturbation.

    ``response_optimizer`` and ``scale_optimizer`` are ``None`` where the recipe leaves them out
    (each response model picks its fallback).
    """

    optimizer: OptimizerSettings
    hyper_optimizer: OptimizerSettings = OptimizerSettings(name="adam", lr=0.003)
    response_optimizer: OptimizerSettings | None = None
    scale_optimizer: OptimizerSettings | None = None
    perturbation: PerturbationSettings = field(default_factory=PerturbationSettings)


@dataclass(frozen=True)
class StoreSettings:
    """What a run store records and how often it writes: the validated recipe as text (with
    the file it came from and the folder its relative paths resolve against), the response's
    name, each hyperparameter's kind name, and the ``run:`` and ``store:`` settings it obeys."""

    recipe_yaml: str
    recipe_source: str
    base_dir: Path
    response: str
    kinds: dict[str, str] = field(default_factory=dict)
    log_every: int = 10
    flush_seconds: float = 5.0
    checkpoints: bool = True
