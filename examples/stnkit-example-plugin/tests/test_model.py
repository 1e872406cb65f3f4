"""The stn-two-layer model through stnkit's model conformance suite, and end to end in a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import stnkit
from stnkit import hookimpl
from stnkit.config import ComponentConfig
from stnkit.data import Batch, DataInfo, Dataset
from stnkit.errors import RecipeError
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import Recipe, parse_recipe
from stnkit.task import RegressionTask
from stnkit.testing import ModelConformance
from stnkit_example import TwoLayer


def regression_info(n: int = 32) -> DataInfo:
    return DataInfo(RegressionTask(), (5,), steps_per_epoch=2, n_train=n, n_valid=n)


class TestTwoLayerConformance(ModelConformance):
    model_cls = TwoLayer
    config = {"width": 16}
    hyperparameters = {
        "dropout": {"kind": "unit", "init": 0.2},
        "weight_decay": {"kind": "log-uniform", "low": 1e-6, "high": 1.0, "init": 1e-3, "per_example": False},
    }

    def make_data(self) -> DataInfo:
        return regression_info()

    def make_batch(self, batch_size: int) -> Batch:
        generator = torch.Generator().manual_seed(batch_size)
        return Batch(
            torch.randn(batch_size, 5, generator=generator), torch.randn(batch_size, generator=generator)
        )


# -- end to end: the components in a real run, as a recipe names them --------------------------


class NoisyLine(Dataset):
    """A tiny regression problem made in memory, registered by the test (the plugin ships none)."""

    name = "noisy-line"

    class Config(ComponentConfig):
        batch_size: int = 16

    def __init__(self, config: Any, context: Any) -> None:
        super().__init__(config, context)
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(96, 5, generator=generator)
        self.y = self.x @ torch.randn(5, generator=generator) + 0.3 * torch.randn(96, generator=generator)

    @property
    def info(self) -> DataInfo:
        return DataInfo(RegressionTask(), (5,), steps_per_epoch=2, n_train=32, n_valid=32, n_test=32)

    def _batches(self, start: int) -> Iterator[Batch]:
        size = self.config.batch_size
        for i in range(start, start + 32, size):
            yield Batch(self.x[i : i + size], self.y[i : i + size], first=i == start)

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        return self._batches(0)

    def valid_batches(self) -> Iterator[Batch]:
        return self._batches(32)

    def test_batches(self) -> Iterator[Batch]:
        return self._batches(64)


class _TestData:
    @hookimpl
    def stnkit_register_datasets(self, register: Any) -> None:
        register(NoisyLine)


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins(extra=[("test-data", _TestData())])


def recipe(tmp_path: Path, **hyperparameters: Any) -> Recipe:
    return parse_recipe(
        {
            "name": "example",
            "data": {"name": "noisy-line"},
            "model": {"name": "stn-two-layer", "width": 8},
            "augment": [{"name": "gaussian-noise"}],
            "hyperparameters": hyperparameters,
            "train": {
                "epochs": 3,
                "optimizer": {"name": "adam", "lr": 0.01},
                "hyper_optimizer": {"lr": 0.05},
            },
            "store": {"dir": str(tmp_path / "runs")},
        }
    )


def test_the_plugin_is_found_through_its_entry_point(plugins: Plugins) -> None:
    assert plugins.loaded["example"].distribution == "stnkit-example-plugin"
    assert plugins.loaded["example"].registers == {
        "kinds": ["log-uniform"],
        "models": ["stn-two-layer"],
        "augmentations": ["gaussian-noise"],
    }


def test_a_run_tunes_all_three_together(tmp_path: Path, plugins: Plugins) -> None:
    declared = {
        "dropout": {"kind": "unit", "init": 0.1},
        "weight_decay": {"kind": "log-uniform", "low": 1e-6, "high": 1.0, "init": 1e-3, "per_example": False},
        "input_noise": {"kind": "log-uniform", "low": 1e-3, "high": 1.0, "init": 0.05},
    }
    result = stnkit.run(recipe(tmp_path, **declared), plugins=plugins)
    assert result.status == "completed" and result.path is not None
    record = stnkit.open_run(result.path)
    assert record.hyperparameters == ("dropout", "weight_decay", "input_noise")
    decay = record.values("weight_decay")
    assert len(decay) == 3 and decay[-1] != 1e-3  # three hyper steps moved it...
    assert ((decay >= 1e-6) & (decay <= 1.0)).all()  # ...and it stayed in its kind's range


def test_a_log_uniform_range_outside_what_a_consumer_accepts_is_rejected(
    tmp_path: Path, plugins: Plugins
) -> None:
    too_wide = {"dropout": {"kind": "log-uniform", "low": 0.01, "high": 2.0, "init": 0.1}}
    with pytest.raises(RecipeError, match=r"hyperparameters.dropout: kind 'log-uniform' gives values in"):
        stnkit.validate(recipe(tmp_path, **too_wide), plugins=plugins)
