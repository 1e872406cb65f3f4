"""``tabular``: arrays from an ``.npz`` file — ``x_train, y_train, x_valid, y_valid`` and optionally
``x_test, y_test``. Float targets make a regression task (mean squared error), integer targets a
classification task (cross-entropy)."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from stnkit.config import ComponentConfig
from stnkit.data import (
    Batch,
    BuildContext,
    DataInfo,
    DataPath,
    Dataset,
    check_features,
    check_labels,
    check_values,
)
from stnkit.errors import DataError
from stnkit.task import ClassificationTask, RegressionTask, Task

__all__ = ["TabularData", "load_npz"]

_REQUIRED = ("x_train", "y_train", "x_valid", "y_valid")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read and check the arrays; every problem is a :class:`DataError` naming the file.

    Checked before anything is built, so bad data never reaches a run file: matching lengths,
    real and finite features and targets, integer class labels within range in every split.
    """
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size if path.is_file() else 0
        detail = "the file is empty" if path.is_file() and size == 0 else "not a zip archive"
        raise DataError(f"{path}: not a readable .npz file ({detail})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    # EOFError: a truncated member; ValueError: pickled objects (refused) or a bad header
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    missing = [key for key in _REQUIRED if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing arrays {', '.join(missing)} (has: {', '.join(sorted(arrays))})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: x_test and y_test must come together")
    splits = ["train", "valid"] + (["test"] if "x_test" in arrays else [])
    for split in splits:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim < 2:
            raise DataError(f"{path}: x_{split} must have shape (N, features...), not {x.shape}")
        if y.ndim < 1 or len(x) != len(y):
            rows = len(y) if y.ndim else "no"
            raise DataError(f"{path}: x_{split} has {len(x)} rows but y_{split} has {rows}")
        if len(x) == 0:
            raise DataError(f"{path}: the {split} split is empty")
        check_features(x, f"{path}: x_{split}")
    shapes = {arrays[f"x_{s}"].shape[1:] for s in splits}
    if len(shapes) > 1:
        raise DataError(f"{path}: the splits' feature shapes differ: {sorted(shapes)}")
    kinds = {_is_labels(arrays[f"y_{s}"]) for s in splits}
    if len(kinds) > 1:
        raise DataError(f"{path}: targets must be all integer (classification) or all float (regression)")
    if kinds == {True}:
        # the class count comes from training and validation labels; test labels must fit in it
        counts = [check_labels(arrays[f"y_{s}"], f"{path}: y_{s}") for s in ("train", "valid")]
        for split in splits:
            if arrays[f"y_{split}"].ndim != 1:
                raise DataError(
                    f"{path}: y_{split} must be one class label per row, not {arrays[f'y_{split}'].shape}"
                )
        if "y_test" in arrays:
            check_labels(arrays["y_test"], f"{path}: y_test", num_classes=max(counts))
    else:
        for split in splits:
            check_values(arrays[f"y_{split}"], f"{path}: y_{split}")
        target_shapes = {arrays[f"y_{s}"].shape[1:] for s in splits}
        if len(target_shapes) > 1:
            raise DataError(f"{path}: the splits' target shapes differ: {sorted(target_shapes)}")
    return arrays


def _is_labels(targets: np.ndarray) -> bool:
    return np.issubdtype(targets.dtype, np.integer) and targets.dtype != np.bool_


class TabularData(Dataset):
    """Tabular arrays held in memory, shuffled each epoch with the run's data generator."""

    name = "tabular"
    checks_values = True  # checked as loaded

    class Config(ComponentConfig):
        path: DataPath = Field(description=".npz file; relative paths start at the recipe's folder")
        batch_size: int = Field(32, ge=1)
        valid_batch_size: int | None = Field(None, ge=1, description="default: batch_size")
        standardize: bool = Field(False, description="scale inputs by the training mean and std")
        shuffle: bool = True
        drop_last: bool = False

    config: Config

    def __init__(self, config: Config, context: BuildContext) -> None:
        super().__init__(config, context)
        arrays = load_npz(Path(config.path))
        classification = np.issubdtype(arrays["y_train"].dtype, np.integer)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        mean: np.ndarray | float = 0.0
        std: np.ndarray | float = 1.0
        if config.standardize:
            mean = arrays["x_train"].mean(axis=0)
            std = arrays["x_train"].std(axis=0) + 1e-8
        for split in ("train", "valid", "test"):
            if f"x_{split}" not in arrays:
                continue
            x = torch.as_tensor((arrays[f"x_{split}"] - mean) / std, dtype=torch.float32)
            y_raw = arrays[f"y_{split}"]
            y = torch.as_tensor(y_raw, dtype=torch.long if classification else torch.float32)
            self.splits[split] = (x, y)
        task: Task
        if classification:
            labels = np.concatenate([arrays[f"y_{s}"].ravel() for s in ("train", "valid")])
            num_classes = int(labels.max()) + 1  # load_npz checked the labels' range
            task = ClassificationTask(num_classes)
            output_size = num_classes
        else:
            task = RegressionTask()
            targets = arrays["y_train"]
            output_size = 1 if targets.ndim == 1 else int(np.prod(targets.shape[1:]))
        n_train = len(self.splits["train"][0])
        steps = n_train // config.batch_size if config.drop_last else math.ceil(n_train / config.batch_size)
        self._info = DataInfo(
            task=task,
            input_shape=tuple(self.splits["train"][0].shape[1:]),
            steps_per_epoch=steps,
            n_train=n_train,
            n_valid=len(self.splits["valid"][0]),
            n_test=len(self.splits["test"][0]) if "test" in self.splits else 0,
            output_size=output_size,
        )

    @property
    def info(self) -> DataInfo:
        return self._info

    def _batches(
        self, split: str, size: int, order: Tensor | None, drop_last: bool = False
    ) -> Iterator[Batch]:
        x, y = self.splits[split]
        n = len(x)
        index = order if order is not None else torch.arange(n)
        stop = n - n % size if drop_last else n
        for start in range(0, stop, size):
            chosen = index[start : start + size]
            yield Batch(x[chosen], y[chosen], first=start == 0)

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        n = self._info.n_train
        order = torch.randperm(n, generator=generator) if self.config.shuffle else None
        return self._batches("train", self.config.batch_size, order, self.config.drop_last)

    def valid_batches(self) -> Iterator[Batch]:
        return self._batches("valid", self.config.valid_batch_size or self.config.batch_size, None)

    def test_batches(self) -> Iterator[Batch] | None:
        if "test" not in self.splits:
            return None
        return self._batches("test", self.config.valid_batch_size or self.config.batch_size, None)

    def hyper_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        size = self.config.valid_batch_size or self.config.batch_size
        n = self._info.n_valid
        while True:
            yield from self._batches("valid", size, torch.randperm(n, generator=generator))
