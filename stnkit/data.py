"""The data-set interface: batches for weight steps, hyper steps and evaluation passes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, ValidationInfo
from torch import Tensor

from stnkit.config import Component
from stnkit.task import Task

__all__ = ["Batch", "BuildContext", "DataInfo", "DataPath", "Dataset"]


@dataclass
class Batch:
    """One batch. ``first`` marks the first batch of a pass, where stateful models reset."""

    inputs: Tensor
    targets: Tensor
    first: bool = False

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            self.first,
        )

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data to size itself."""

    task: Task
    input_shape: tuple[int, ...]
    steps_per_epoch: int
    n_train: int
    n_valid: int
    n_test: int = 0
    output_size: int = 1
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildContext:
    """Where and how components are built: relative paths resolve against ``base_dir``."""

    base_dir: Path = Path(".")
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path)


def _check_exists(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    resolved = path if path.is_absolute() or base is None else Path(base) / path
    if not resolved.exists():
        where = f" (resolved against the recipe's folder {base})" if base is not None else ""
        raise ValueError(f"file not found: {resolved}{where}")
    return resolved


DataPath = Annotated[Path, AfterValidator(_check_exists)]
"""A path field that must exist; relative paths resolve against the recipe file's folder."""


class Dataset(Component):
    """Base class of data sets. Subclasses set ``name`` and ``Config`` and implement the passes.

    Batches are yielded on the CPU; the engine moves them to the run's device.
    """

    def __init__(self, config: Any, context: BuildContext) -> None:
        self.config = config
        self.context = context

    @property
    def info(self) -> DataInfo:
        raise NotImplementedError

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of training batches, in an order drawn from ``generator``."""
        raise NotImplementedError

    def valid_batches(self) -> Iterator[Batch]:
        """One full pass over the validation set, in a fixed order."""
        raise NotImplementedError

    def test_batches(self) -> Iterator[Batch] | None:
        """One full pass over the test set, or ``None`` when the data set has none."""
        return None

    def hyper_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """An endless stream of validation batches for hyper steps (default: repeated passes)."""
        for _ in itertools.count():
            yield from self.valid_batches()
