"""``train.hyper_lr_schedule`` and ``train.lr_schedule``: the hyper and the weight learning rate
over the run's planned hyper and weight steps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import stnkit
from stnkit.errors import RecipeError
from stnkit.loop import LoopState
from stnkit.optim import lr_factor
from stnkit.policies import HyperLrSchedule, WeightLrSchedule
from stnkit.runner import resume
from tests.helpers import write_recipe
from tests.test_resume import CrashAt, assert_same


def test_lr_factor_shapes() -> None:
    assert [lr_factor("constant", done, 4) for done in range(6)] == [1.0] * 6
    assert [lr_factor("linear", done, 4) for done in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_factor("cosine", 0, 10) == 1.0
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("cosine", 2, 10) > lr_factor("linear", 2, 10)  # cosine keeps large steps longer
    # a run that takes more hyper steps than planned (a resumed run given more epochs) stays at 0
    assert lr_factor("linear", 7, 4) == 0.0 and lr_factor("cosine", 7, 4) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("linear", 0, 0) == 1.0  # nothing planned: nothing to decay


def hyper_lrs(monkeypatch: pytest.MonkeyPatch, recipe: Path) -> list[float]:
    """The hyper optimizer's learning rate at every hyper step of a run of ``recipe``."""
    seen: list[float] = []
    original = HyperLrSchedule.before_hyper_step

    def record(self: HyperLrSchedule, loop: LoopState) -> None:
        original(self, loop)
        seen.append(self.optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(HyperLrSchedule, "before_hyper_step", record)
    assert stnkit.run(recipe).status == "completed"
    return seen


# 2 weight steps an epoch, 6 epochs, 1 of warm-up, a hyper step every 2 weight steps: 5 planned
SIX_EPOCHS = {"train__epochs": 6}


def test_linear_schedule_decays_over_the_planned_hyper_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = write_recipe(tmp_path, **SIX_EPOCHS, train__hyper_lr_schedule="linear")
    assert hyper_lrs(monkeypatch, recipe) == pytest.approx([0.1, 0.08, 0.06, 0.04, 0.02])


def test_cosine_is_the_default_schedule_and_constant_keeps_the_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cosine = hyper_lrs(monkeypatch, write_recipe(tmp_path / "c", **SIX_EPOCHS))
    assert cosine == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(5)])
    constant = write_recipe(tmp_path / "k", **SIX_EPOCHS, train__hyper_lr_schedule="constant")
    assert hyper_lrs(monkeypatch, constant) == [0.1] * 5


def test_schedule_changes_the_trajectory(tmp_path: Path) -> None:
    constant = write_recipe(tmp_path / "a", **SIX_EPOCHS, train__hyper_lr_schedule="constant")
    plain = stnkit.open_run(stnkit.run(constant).path)  # type: ignore[arg-type]
    decayed = stnkit.open_run(
        stnkit.run(write_recipe(tmp_path / "b", **SIX_EPOCHS, train__hyper_lr_schedule="linear")).path  # type: ignore[arg-type]
    )
    first, later = plain.hyper["values"], decayed.hyper["values"]
    np.testing.assert_array_equal(first[0], later[0])  # the first hyper step takes the full rate under both
    assert not np.array_equal(first[1:], later[1:])


@pytest.mark.parametrize("schedule", ["hyper_lr_schedule", "lr_schedule"])
def test_a_resumed_run_continues_the_schedule_exactly(tmp_path: Path, schedule: str) -> None:
    settings = {
        **SIX_EPOCHS,
        f"train__{schedule}": "cosine",
        "store__checkpoint_steps": 3,
        "run__log_every": 2,
    }
    reference = stnkit.run(write_recipe(tmp_path / "a", **settings))
    recipe = write_recipe(tmp_path / "b", **settings)
    with pytest.raises(KeyboardInterrupt):
        stnkit.run(recipe, observers=[CrashAt(8)])
    (path,) = (tmp_path / "b" / "runs").glob("*.h5")
    resumed = resume(path)
    assert resumed.status == "completed"
    assert_same(reference.path, resumed.path)  # type: ignore[arg-type]


def weight_lrs(monkeypatch: pytest.MonkeyPatch, recipe: Path) -> list[float]:
    """The weight optimizer's learning rate at every weight step of a run of ``recipe``."""
    seen: list[float] = []
    original = WeightLrSchedule.before_weight_step

    def record(self: WeightLrSchedule, loop: LoopState) -> None:
        original(self, loop)
        seen.append(self.optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(WeightLrSchedule, "before_weight_step", record)
    assert stnkit.run(recipe).status == "completed"
    return seen


def test_weight_lr_schedule_decays_over_the_planned_weight_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 training rows in batches of 20: 2 weight steps an epoch, 12 planned; the optimizer's lr 0.01
    linear = weight_lrs(monkeypatch, write_recipe(tmp_path / "l", **SIX_EPOCHS, train__lr_schedule="linear"))
    assert linear == pytest.approx([0.01 * (1 - k / 12) for k in range(12)])
    cosine = weight_lrs(monkeypatch, write_recipe(tmp_path / "c", **SIX_EPOCHS, train__lr_schedule="cosine"))
    assert cosine == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * k / 12)) for k in range(12)])
    assert weight_lrs(monkeypatch, write_recipe(tmp_path / "k", **SIX_EPOCHS)) == [0.01] * 12


def test_weight_lr_schedule_and_lr_decay_do_not_mix(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__lr_schedule="cosine", train__lr_decay={"factor": 0.5})
    with pytest.raises(RecipeError, match="lr_schedule 'cosine' and lr_decay both set the weight lr"):
        stnkit.load_recipe(recipe)
