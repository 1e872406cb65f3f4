"""The augmentation interface: batched transformations driven by hyperparameters."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from stnkit.config import Component
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch

__all__ = ["Augmentation"]


class Augmentation(Component):
    """Base class of augmentations; applied in recipe order to training batches only.

    ``__call__`` maps inputs ``(B, ...)`` to the same shape, with each example using its own row of
    the hyperparameters in ``hp`` (per-example values), as batched tensor operations.
    """

    def __init__(self, config: Any, data: DataInfo) -> None:
        self.config = config
        self.data = data

    def __call__(self, inputs: Tensor, hp: HyperBatch) -> Tensor:
        raise NotImplementedError
