"""The data-set interface: batches for weight steps, hyper steps and evaluation passes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import AfterValidator, ValidationInfo
from torch import Tensor

from stnkit.config import Component
from stnkit.errors import DataError
from stnkit.task import ClassificationTask, Task

__all__ = [
    "MAX_CLASSES",
    "Batch",
    "BuildContext",
    "DataInfo",
    "DataPath",
    "Dataset",
    "check_batches",
    "check_features",
    "check_labels",
    "check_values",
]

MAX_CLASSES = 1_000_000
"""The most classes a data set may have: a label beyond it is a mistake (a float target stored as
an integer, an id instead of a class index), and the output layer it would size cannot be built."""


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
    """What a model needs to know about its data to size itself.

    ``output_size``: outputs per example; 0 (the default) takes it from the task: its class count
    for classification, 1 for a single regression target. A classification size other than the
    class count is refused, since targets beyond the outputs fail only inside the loss.
    """

    task: Task
    input_shape: tuple[int, ...]
    steps_per_epoch: int
    n_train: int
    n_valid: int
    n_test: int = 0
    output_size: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        classes = getattr(self.task, "num_classes", None)
        if self.output_size == 0:
            object.__setattr__(self, "output_size", 1 if classes is None else int(classes))
        elif classes is not None and self.output_size != classes:
            raise ValueError(
                f"output_size {self.output_size} does not match the task's {classes} classes "
                "(leave output_size out to take it from the task)"
            )
        if self.output_size < 1:
            raise ValueError(f"output_size must be at least 1, not {self.output_size}")


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

    ``checks_values``: whether the data set checks its values as it loads them (with
    :func:`check_features`, :func:`check_values` and :func:`check_labels`, as stnkit's loaders
    do). A data set that does not is checked batch by batch before the run file is made — one
    training epoch, the validation pass and the test pass, without the model (see
    :func:`check_batches`); set it to skip that pass where loading the data twice costs too much.
    """

    checks_values: ClassVar[bool] = False

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


def check_values(array: np.ndarray, what: str) -> None:
    """Real, finite numbers: complex values would lose their imaginary part when converted, and a
    NaN or infinite target ends a run as "diverged" (or drops its test metrics) instead of being
    reported as the data problem it is."""
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{what} must hold numbers, not {_dtype_name(array.dtype)}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{what} must hold real numbers, not complex ones")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise DataError(f"{what} must be finite numbers: {bad} value(s) are NaN or infinite")


def check_features(array: np.ndarray, what: str) -> None:
    """Inputs: real, finite numbers (see :func:`check_values`)."""
    check_values(array, what)


def check_labels(labels: np.ndarray, what: str, num_classes: int | None = None) -> int:
    """Class labels: integers in ``[0, num_classes)`` (or in ``[0, MAX_CLASSES)`` when the count
    is not known yet). Returns the class count the labels need (largest label + 1)."""
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} must be integer class labels, not {_dtype_name(labels.dtype)}")
    if labels.size == 0:
        return 0
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise DataError(f"{what}: class labels must be non-negative, found {low}")
    limit = MAX_CLASSES if num_classes is None else num_classes
    if high >= limit:
        reason = (
            f"the data set has {num_classes} classes"
            if num_classes is not None
            else f"labels are class indices 0..C-1 with at most {MAX_CLASSES:,} classes"
        )
        raise DataError(f"{what}: label {high:g} is out of range ({reason})")
    return high + 1


def _dtype_name(dtype: np.dtype[Any]) -> str:
    if np.issubdtype(dtype, np.str_) or np.issubdtype(dtype, np.bytes_):
        return "text"
    if dtype == np.bool_:
        return "booleans"
    if dtype == np.object_:
        return "Python objects"
    return f"{dtype}"


def check_batches(dataset: Dataset, seed: int) -> None:
    """One training epoch (in the order ``seed`` draws), the validation pass and the test pass of
    a data set that does not check its own values (``Dataset.checks_values``), batch by batch:
    tensors of real, finite numbers, and class indices in range for a classification task. A
    NaN target would otherwise end the run as "diverged" (or drop its test metrics) and a label
    out of range would fail inside the loss, both after the run file exists. Torch's global random
    state is left as it was, so a data set drawing from it draws the same numbers in the run."""
    if dataset.checks_values:
        return
    task = dataset.info.task
    classes = task.num_classes if isinstance(task, ClassificationTask) else None
    with torch.random.fork_rng(devices=[]):
        passes = (
            ("training", dataset.train_batches(1, torch.Generator().manual_seed(seed))),
            ("validation", dataset.valid_batches()),
            ("test", dataset.test_batches()),
        )
        for split, batches in passes:
            for index, batch in enumerate(batches or (), start=1):
                where = f"data {dataset.name!r}, {split} batch {index}"
                _check_tensor(batch.inputs, f"{where}: inputs")
                if classes is None:
                    _check_tensor(batch.targets, f"{where}: targets")
                else:
                    _check_classes(batch.targets, classes, f"{where}: targets")


def _check_tensor(values: Any, what: str) -> None:
    if not isinstance(values, Tensor):
        raise DataError(f"{what} must be a torch tensor, not {type(values).__name__}")
    if values.dtype == torch.bool:
        raise DataError(f"{what} must hold numbers, not booleans")
    if values.is_complex():
        raise DataError(f"{what} must hold real numbers, not complex ones")
    if values.is_floating_point():
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            raise DataError(f"{what} must be finite numbers: {bad} value(s) are NaN or infinite")


def _check_classes(targets: Any, classes: int, what: str) -> None:
    if not isinstance(targets, Tensor):
        raise DataError(f"{what} must be a torch tensor, not {type(targets).__name__}")
    if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
        dtype = str(targets.dtype).removeprefix("torch.")
        raise DataError(f"{what} must be integer class labels, not {dtype}")
    if targets.numel() == 0:
        return
    low, high = int(targets.min()), int(targets.max())
    if low < 0:
        raise DataError(f"{what}: class labels must be non-negative, found {low}")
    if high >= classes:
        raise DataError(f"{what}: label {high} is out of range (the task has {classes} classes)")
