"""What the rest of the suite would let through: test metrics taken at the final weights instead of
the best state's, and augmentations that get the centre, or one example's value, instead of each
example's own perturbed draw."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor

import stnkit
from stnkit.augment import Augmentation
from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.hookspecs import hookimpl
from stnkit.hyper.space import HyperBatch, HyperSpace
from stnkit.plugins import load_plugins
from stnkit_tabular.synthetic import make_ridge_problem, save_problem
from tests.helpers import write_recipe

# -- test metrics at the best state ------------------------------------------------------------------


def _run(folder: Path, valid_from: str, epochs: int) -> stnkit.RunRecord:
    folder.mkdir()
    problem = make_ridge_problem(n_train=40, n_valid=200, n_test=200, noise=1.0, seed=3)
    recipe = write_recipe(
        folder,
        response={"name": "fixed"},
        hyperparameters={"weight_decay": {"kind": "positive", "init": 1e-6, "per_example": False}},
        train__epochs=epochs,
        train__warmup_epochs=0,
        train__optimizer={"name": "adam", "lr": 0.05},
        store__dir=str(folder / "runs"),
    )
    if valid_from == "train":
        problem = {**problem, "x_valid": problem["x_train"], "y_valid": problem["y_train"]}
    save_problem(problem, folder / "ridge.npz")  # over the data write_recipe put there
    result = stnkit.run(recipe)
    assert result.status == "completed" and result.path is not None
    return stnkit.open_run(result.path)


def test_test_metrics_are_those_of_the_best_state_not_the_final_weights(tmp_path: Path) -> None:
    epochs = 40
    overfit = _run(tmp_path / "overfit", "valid", epochs)
    best = overfit.attrs["best_epoch"]
    val = np.asarray(overfit.epochs["val_loss"])
    assert 1 < best < epochs - 5 and val[-1] > 1.1 * val.min()  # it did overfit after its best epoch
    # the same training stopped at the best epoch: its final weights are the best state's, and its
    # best epoch is its last, so its test metrics are the test evaluation of that state
    stopped = _run(tmp_path / "stopped", "valid", best)
    assert stopped.attrs["best_epoch"] == best
    np.testing.assert_array_equal(stopped.epochs["val_loss"], val[:best])  # the same training
    # the same training scored on its own training rows: best is last, so its test metrics are
    # those of the final weights
    final = _run(tmp_path / "final", "train", epochs)
    assert final.attrs["best_epoch"] == epochs
    assert overfit.test == stopped.test
    assert overfit.test["loss"] != pytest.approx(final.test["loss"], rel=1e-3)


# -- per-example values reaching each augmentation ---------------------------------------------------


class _Recorder(Augmentation):
    """Returns its inputs unchanged and records the value of its hyperparameter it was given."""

    hyper: ClassVar[str]
    seen: ClassVar[list[Tensor]]

    class Config(ComponentConfig):
        pass

    def __call__(self, inputs: Tensor, hp: HyperBatch) -> Tensor:
        assert hp[self.hyper].shape == (inputs.shape[0],)
        type(self).seen.append(hp[self.hyper].detach().clone())
        return inputs


class RecordA(_Recorder):
    name = "test-record-a"
    hyper = "strength_a"
    seen: ClassVar[list[Tensor]] = []
    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "strength_a": HyperparameterUse("a strength", default=0.0, low=0.0, high=1.0)
    }


class RecordB(_Recorder):
    name = "test-record-b"
    hyper = "strength_b"
    seen: ClassVar[list[Tensor]] = []
    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "strength_b": HyperparameterUse("b strength", default=0.0, low=0.0, high=1.0)
    }


class _Plugin:
    @hookimpl
    def stnkit_register_augmentations(self, register: Any) -> None:
        register(RecordA)
        register(RecordB)


@pytest.mark.parametrize("response", ["stn", "delta-stn"])
def test_each_augmentation_gets_each_examples_own_perturbed_value(
    tmp_path: Path, response: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws: list[tuple[Tensor, int, int]] = []  # each λ̃ drawn, and the columns of a and b
    sample = HyperSpace.sample

    def recording_sample(self: HyperSpace, batch_size: int, generator: Any = None) -> Tensor:
        lam = sample(self, batch_size, generator)
        draws.append((lam.detach().clone(), self.index("strength_a"), self.index("strength_b")))
        return lam

    monkeypatch.setattr(HyperSpace, "sample", recording_sample)
    seen: list[tuple[int, Tensor, Tensor]] = []  # (draws so far, a's values, b's values)

    def remember(inputs: Tensor, hp: HyperBatch) -> Tensor:
        seen.append((len(draws), hp["strength_a"].detach().clone(), hp["strength_b"].detach().clone()))
        return inputs

    RecordA.seen.clear()
    RecordB.seen.clear()
    path = write_recipe(
        tmp_path,
        response={"name": response},
        augment=[{"name": "test-record-a"}, {"name": "test-record-b"}],
        hyperparameters={
            "weight_decay": {"kind": "positive", "init": 0.01, "per_example": False},
            "strength_a": {"kind": "unit", "init": 0.2, "per_example": True},
            "strength_b": {"kind": "unit", "init": 0.6, "per_example": True},
        },
        train__epochs=2,
        train__warmup_epochs=0,
        train__perturbation={"init_scale": 0.8},
    )
    plugins = load_plugins(extra=[("test-record", _Plugin())])
    monkeypatch.setattr("stnkit.response.base.TrainingParts.augment", _tapped_augment(remember))
    result = stnkit.run(path, plugins=plugins, store=False)
    assert result.status == "completed"
    calls = list(zip(RecordA.seen, RecordB.seen, strict=True))
    assert len(calls) == len(seen) > 0
    perturbed = 0
    for (a, b), (drawn, a_in_parts, b_in_parts) in zip(calls, seen, strict=True):
        torch.testing.assert_close(a, a_in_parts, rtol=0, atol=0)
        torch.testing.assert_close(b, b_in_parts, rtol=0, atol=0)
        if response == "delta-stn" and float(a.max() - a.min()) < 1e-6:
            # Δ-STN's general pass: the unperturbed centre, the same for every example (to the
            # last bit or two: torch's vectorised sigmoid may round a row's tail differently)
            assert float(b.max() - b.min()) < 1e-6
            continue
        # the latest draw's own row for each example, per hyperparameter
        lam, ia, ib = draws[drawn - 1]
        torch.testing.assert_close(a, torch.sigmoid(lam[:, ia]), rtol=1e-6, atol=0)
        torch.testing.assert_close(b, torch.sigmoid(lam[:, ib]), rtol=1e-6, atol=0)
        assert len(set(a.tolist())) == a.numel() and len(set(b.tolist())) == b.numel()
        perturbed += 1
    # every weight step augments at its own draw (Δ-STN also once more at the centre)
    assert perturbed == 4 and len(calls) == (4 if response == "stn" else 8)


def _tapped_augment(tap: Any) -> Any:
    from stnkit.response.base import TrainingParts

    original = TrainingParts.augment

    def augment(self: TrainingParts, inputs: Tensor, hp: HyperBatch) -> Tensor:
        tap(inputs, hp)
        return original(self, inputs, hp)

    return augment
