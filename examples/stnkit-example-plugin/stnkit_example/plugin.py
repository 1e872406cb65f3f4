"""The module named by the ``stnkit`` entry point: it only registers the components."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stnkit import hookimpl
from stnkit_example.augment import GaussianNoise
from stnkit_example.kinds import LogUniformKind
from stnkit_example.model import TwoLayer

Register = Callable[[type[Any]], object]


@hookimpl
def stnkit_register_hyperparameter_kinds(register: Register) -> None:
    register(LogUniformKind)


@hookimpl
def stnkit_register_augmentations(register: Register) -> None:
    register(GaussianNoise)


@hookimpl
def stnkit_register_models(register: Register) -> None:
    register(TwoLayer)
