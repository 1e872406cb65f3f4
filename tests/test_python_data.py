"""Data built in Python, which no loader has checked: bad values are a data error before any
run file exists (one training epoch, the validation and the test pass are read first), and a
step that diverges on bad data says so."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

import stnkit
from stnkit import hookimpl
from stnkit.config import ComponentConfig
from stnkit.data import Batch, DataInfo, Dataset
from stnkit.errors import DataError
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import parse_recipe
from stnkit.task import ClassificationTask, RegressionTask

#: (split, row) -> a change to that split's arrays; each test's data set reads it
Damage = Callable[[dict[str, torch.Tensor]], None]


class Arrays(Dataset):
    """64 training, 32 validation and 32 test rows of a linear problem, in batches of 16; a test
    damages them through ``damage`` and may make it a classification problem."""

    name = "test-python-arrays"
    damage: ClassVar[Damage | None] = None
    classes: ClassVar[int | None] = None
    shuffle_with_global_rng: ClassVar[bool] = False

    class Config(ComponentConfig):
        pass

    def __init__(self, config: Any, context: Any) -> None:
        super().__init__(config, context)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(128, 5, generator=generator)
        y = x @ torch.randn(5, generator=generator) + 0.1 * torch.randn(128, generator=generator)
        arrays = {"x": x, "y": y if self.classes is None else (y > 0).long()}
        if type(self).damage is not None:
            type(self).damage(arrays)  # type: ignore[misc]
        self.x, self.y = arrays["x"], arrays["y"]

    @property
    def info(self) -> DataInfo:
        task = RegressionTask() if self.classes is None else ClassificationTask(self.classes)
        return DataInfo(task, (5,), steps_per_epoch=4, n_train=64, n_valid=32, n_test=32)

    def _batches(self, rows: torch.Tensor) -> Iterator[Batch]:
        for start in range(0, len(rows), 16):
            part = rows[start : start + 16]
            yield Batch(self.x[part], self.y[part], first=start == 0)

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        # a data set that shuffles with torch's global generator, as hand-written code may
        order = (
            torch.randperm(64) if self.shuffle_with_global_rng else torch.randperm(64, generator=generator)
        )
        return self._batches(order)

    def valid_batches(self) -> Iterator[Batch]:
        return self._batches(torch.arange(64, 96))

    def test_batches(self) -> Iterator[Batch]:
        return self._batches(torch.arange(96, 128))


def plugins_with(data: type[Dataset]) -> Plugins:
    class _Plugin:
        @hookimpl
        def stnkit_register_datasets(self, register: Any) -> None:
            register(data)

    return load_plugins(extra=[(f"python-data-{id(data)}", _Plugin())])


def recipe_for(data: type[Dataset], folder: Path, lr: float = 0.05) -> Any:
    return parse_recipe(
        {
            "name": "python-data",
            "seed": 0,
            "data": {"name": data.name},
            "model": {"name": "stn-mlp", "hidden_sizes": [8]},
            "hyperparameters": {"dropout": {"kind": "unit", "init": 0.1}},
            "train": {
                "epochs": 2,
                "warmup_epochs": 0,
                "optimizer": {"name": "sgd", "lr": lr},
                "hyper_optimizer": {"name": "adam", "lr": 0.01},
            },
            "store": {"dir": str(folder / "runs")},
        },
        base_dir=folder,
    )


def damaged(
    damage: Damage | None,
    classes: int | None = None,
    checks_values: bool = False,
    global_rng: bool = False,
) -> type[Dataset]:
    return type(
        "Damaged",
        (Arrays,),
        {
            "damage": staticmethod(damage) if damage is not None else None,
            "classes": classes,
            "checks_values": checks_values,
            "shuffle_with_global_rng": global_rng,
        },
    )


def _set(key: str, row: int, value: Any, column: int | None = None) -> Damage:
    def change(arrays: dict[str, torch.Tensor]) -> None:
        if column is None:
            arrays[key][row] = value
        else:
            arrays[key][row, column] = value

    return change


def _as(key: str, dtype: torch.dtype) -> Damage:
    def change(arrays: dict[str, torch.Tensor]) -> None:
        arrays[key] = arrays[key].to(dtype)

    return change


@pytest.mark.parametrize(
    ("damage", "classes", "message"),
    [
        (_set("y", 3, float("nan")), None, "training batch"),  # row 3 is in some training batch
        (_set("y", 70, float("inf")), None, "validation batch 1: targets must be finite numbers: 1 value"),
        (_set("y", 120, float("nan")), None, "test batch 2: targets must be finite numbers"),
        (_set("x", 100, float("-inf"), column=2), None, "test batch 1: inputs must be finite numbers"),
        (_as("x", torch.complex64), None, "training batch 1: inputs must hold real numbers, not complex"),
        (
            _set("y", 80, 7),
            2,
            "validation batch 2: targets: label 7 is out of range (the task has 2 classes)",
        ),
        (_set("y", 110, -1), 2, "test batch 1: targets: class labels must be non-negative, found -1"),
        (_as("y", torch.float32), 2, "training batch 1: targets must be integer class labels, not float32"),
    ],
    ids=[
        "nan-train",
        "inf-valid",
        "nan-test",
        "inf-input",
        "complex",
        "label-high",
        "label-neg",
        "float-labels",
    ],
)
def test_bad_python_data_is_a_data_error_before_any_run_file(
    tmp_path: Path, damage: Damage, classes: int | None, message: str
) -> None:
    data = damaged(damage, classes)
    plugins = plugins_with(data)
    with pytest.raises(DataError, match=re.escape(f"data 'test-python-arrays', {message}")):
        stnkit.run(recipe_for(data, tmp_path), plugins=plugins)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(DataError, match=re.escape(message)):  # validate reads it as a run would
        stnkit.validate(recipe_for(data, tmp_path), plugins=plugins)


def test_good_python_data_runs(tmp_path: Path) -> None:
    for classes in (None, 2):
        data = damaged(None, classes)
        result = stnkit.run(recipe_for(data, tmp_path), plugins=plugins_with(data))
        assert result.status == "completed"
        assert stnkit.open_run(result.path).test  # type: ignore[arg-type]


def test_the_check_leaves_the_global_random_state_to_the_run(tmp_path: Path) -> None:
    """A data set shuffling with torch's global generator draws the same orders whether or not
    its batches were read before the run."""
    runs = []
    for checks_values in (False, True):  # checked by the pass, or trusted
        data = damaged(None, checks_values=checks_values, global_rng=True)
        result = stnkit.run(recipe_for(data, tmp_path / str(checks_values)), plugins=plugins_with(data))
        runs.append(stnkit.open_run(result.path))  # type: ignore[arg-type]
    checked, trusted = runs
    assert checked.table("train")["loss"].tolist() == trusted.table("train")["loss"].tolist()
    assert checked.final == trusted.final


def test_a_step_that_diverges_on_bad_data_names_it(tmp_path: Path) -> None:
    """A data set that says it checks its values, but lets a NaN target through: the run
    diverges, and its message names the batch's bad values."""
    data = damaged(_set("y", 5, float("nan")), checks_values=True)
    result = stnkit.run(recipe_for(data, tmp_path), plugins=plugins_with(data))
    assert result.status == "diverged"
    assert "training loss became nan at weight step" in result.end.message
    assert (
        "the step's batch has 1 NaN or infinite value(s) in its targets: the data is bad"
        in result.end.message
    )


def test_a_step_that_diverges_on_good_data_blames_nothing_in_it(tmp_path: Path) -> None:
    data = damaged(None)
    result = stnkit.run(recipe_for(data, tmp_path, lr=1e30), plugins=plugins_with(data))
    assert result.status == "diverged"
    assert "data is bad" not in result.end.message
