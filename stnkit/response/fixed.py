"""No response: the plain network at fixed hyperparameters, or at a replayed schedule."""

from __future__ import annotations

import bisect

from pydantic import Field, model_validator
from torch import Tensor

from stnkit.config import ComponentConfig
from stnkit.data import Batch
from stnkit.hyper.space import HyperBatch
from stnkit.response.base import ResponseModel, ScheduledValues, TrainingParts, train_on

__all__ = ["FixedResponse"]


class ScheduleConfig(ComponentConfig):
    """Piecewise-constant values: from weight step ``steps[i]`` on, each name takes ``values[name][i]``."""

    steps: list[int] = Field(min_length=1)
    values: dict[str, list[float]]

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if self.steps != sorted(self.steps):
            raise ValueError("steps must be in increasing order")
        for name, column in self.values.items():
            if len(column) != len(self.steps):
                raise ValueError(f"values.{name} has {len(column)} entries but steps has {len(self.steps)}")
        return self


class FixedResponse(ResponseModel):
    """Plain training: the network runs without its response branch (``hnet=None``) and no hyper
    step is taken. Values come from the recipe's ``init`` or, with ``schedule``, change with the
    weight step — the paper's "trained with the STN schedule" baseline.
    """

    name = "fixed"
    tunes = False
    uses_response = False

    class Config(ComponentConfig):
        schedule: ScheduleConfig | None = None

    config: Config

    @classmethod
    def scheduled_values(cls, config: Config) -> list[ScheduledValues]:
        schedule = config.schedule
        if schedule is None:
            return []
        return [
            ScheduledValues(name, column, f"schedule.values.{name}")
            for name, column in schedule.values.items()
        ]

    def before_weight_step(self, step: int) -> None:
        schedule = self.config.schedule
        if schedule is None:
            return
        index = bisect.bisect_right(schedule.steps, step) - 1
        if index >= 0:
            self.space.set_values({name: col[index] for name, col in schedule.values.items()})

    def weight_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        centre = self.space.expand(batch.size).detach()
        return train_on(parts, batch, self.space.batch(centre, hnet=None))

    def hyper_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        raise RuntimeError("the fixed response takes no hyper steps")

    def eval_batch(self, batch_size: int) -> HyperBatch:
        centre = self.space.expand(batch_size).detach()
        return self.space.batch(centre, hnet=None)
