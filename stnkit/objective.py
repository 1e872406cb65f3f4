"""Outer objectives: what hyper steps minimise on validation batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from stnkit.config import Component, ComponentConfig
from stnkit.data import Batch
from stnkit.markers import hookimpl
from stnkit.model import ModelOutput
from stnkit.task import Task

__all__ = ["LossObjective", "Objective"]


class Objective(Component):
    """Base class of outer objectives: a differentiable scalar from a validation forward pass."""

    def __init__(self, config: Any, task: Task) -> None:
        self.config = config
        self.task = task

    def __call__(self, output: ModelOutput, batch: Batch) -> Tensor:
        raise NotImplementedError


class LossObjective(Objective):
    """The task's own loss on the validation batch (the paper's choice)."""

    name = "loss"

    class Config(ComponentConfig):
        pass

    def __call__(self, output: ModelOutput, batch: Batch) -> Tensor:
        return self.task.loss(output.prediction, batch.targets)


@hookimpl
def stnkit_register_objectives(register: Callable[[type[Objective]], object]) -> None:
    register(LossObjective)
