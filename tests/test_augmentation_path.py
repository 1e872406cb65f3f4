"""Augmentations: the conformance suite itself, and the engine applying them to training only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

import stnkit
from stnkit.augment import Augmentation
from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.data import DataInfo
from stnkit.hookspecs import hookimpl
from stnkit.hyper.space import HyperBatch
from stnkit.plugins import load_plugins
from stnkit.task import RegressionTask
from stnkit.testing import AugmentationConformance
from tests.helpers import write_recipe


class InputNoise(Augmentation):
    """Adds Gaussian noise of per-example scale ``noise`` and clamps to [0, 1] (a test double)."""

    name = "test-input-noise"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "noise": HyperparameterUse("noise scale", default=0.0, low=0.0, high=1.0)
    }
    calls: ClassVar[list[int]] = []

    def __call__(self, inputs: Tensor, hp: HyperBatch) -> Tensor:
        InputNoise.calls.append(inputs.shape[0])
        scale = hp["noise"].view(-1, *([1] * (inputs.dim() - 1)))
        noisy = inputs + scale * torch.randn_like(inputs)
        return torch.where(scale > 0, noisy.clamp(0, 1), inputs)


class TestInputNoiseConformance(AugmentationConformance):
    augmentation_cls = InputNoise
    identity = {"noise": 0.0}
    strong = {"noise": 0.5}

    def make_data(self) -> DataInfo:
        return DataInfo(RegressionTask(), (3, 4, 4), 1, 8, 8)

    def make_inputs(self, batch_size: int) -> Tensor:
        return torch.rand(batch_size, 3, 4, 4, generator=torch.Generator().manual_seed(1))


class _Plugin:
    @hookimpl
    def stnkit_register_augmentations(self, register: Any) -> None:
        register(InputNoise)


def test_engine_augments_training_batches_only(tmp_path: Path) -> None:
    plugins = load_plugins(extra=[("test-augment", _Plugin())])
    assert plugins.augmentations.entry("test-input-noise").plugin == "test-augment"
    path = write_recipe(
        tmp_path,
        augment=[{"name": "test-input-noise"}],
        hyperparameters={
            "noise": {"kind": "unit", "init": 0.1},
            "weight_decay": {"kind": "positive", "init": 0.01},
        },
    )
    InputNoise.calls.clear()
    result = stnkit.run(path, plugins=plugins, store=False)
    assert result.status == "completed"
    # 4 epochs x 2 training batches of 20; never the validation batches of 50
    assert InputNoise.calls == [20] * 8


def test_unknown_augmentation_is_a_recipe_error(tmp_path: Path) -> None:
    import pytest

    from stnkit.errors import RecipeError

    path = write_recipe(tmp_path, augment=[{"name": "test-input-nosie"}])
    with pytest.raises(RecipeError) as info:
        stnkit.validate(path, plugins=load_plugins(extra=[("test-augment", _Plugin())]))
    assert "did you mean 'test-input-noise'" in dict(info.value.problems)["augment.0.name"]
