"""``train.lr_decay``: the plateau and non-monotone rules, ``stop_below``, and exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest

import stnkit
from stnkit.errors import RecipeError
from stnkit.recipe import LrDecayConfig
from stnkit.runner import resume
from tests.helpers import write_recipe
from tests.test_engine import run
from tests.test_resume import CrashAt, assert_same

# almost unregularised least squares on 40 rows and 30 features: the validation loss falls, then
# rises as the model overfits (see test_engine.test_lr_decays_on_plateau_and_patience_stops)
OVERFIT = {
    "response": {"name": "fixed"},
    "hyperparameters": {"weight_decay": {"kind": "positive", "init": 1e-4}},
    "train__optimizer": {"name": "adam", "lr": 0.05},
}


def released_rule(losses: list[float], lr0: float, factor: float, window: int) -> list[float]:
    """The lr after each epoch as the released STN ``train.py`` computes it (written out here)."""
    lr, seen, out = lr0, [], []
    for loss in losses:
        if len(seen) > window and loss > min(seen[:-window]):
            lr *= factor
        out.append(lr)
        seen.append(loss)
    return out


def test_nonmonotone_rule_decays_as_the_released_code(tmp_path: Path) -> None:
    decay = {"rule": "nonmonotone", "factor": 0.5, "window": 3}
    path = write_recipe(tmp_path, **OVERFIT, train__epochs=30, train__lr_decay=decay)
    result, rec = run(path)
    assert result.status == "completed" and len(rec.epochs) == 30
    losses = [e.val_loss for e in rec.epochs]
    lrs = [e.lr for e in rec.epochs]
    assert lrs == pytest.approx(released_rule(losses, 0.05, 0.5, 3))
    assert lrs[-1] < 0.05 / 4  # the rule fired, more than once
    assert lrs[:4] == pytest.approx([0.05] * 4)  # never before more than `window` epochs are done


def test_stop_below_ends_the_run_and_tests_the_best_state(tmp_path: Path) -> None:
    decay = {"rule": "nonmonotone", "factor": 0.5, "window": 1, "stop_below": 0.05 / 4 * 0.99}
    path = write_recipe(tmp_path, **OVERFIT, train__epochs=60, train__lr_decay=decay)
    result, rec = run(path)
    lrs = [e.lr for e in rec.epochs]
    assert result.status == "completed" and len(rec.epochs) < 60
    assert lrs[-1] == pytest.approx(0.05 / 8) and lrs[-2] == pytest.approx(0.05 / 4)  # third decay stops
    assert "stop_below" in result.end.message and result.end.test_metrics
    record = stnkit.open_run(result.path)  # type: ignore[arg-type]
    assert record.status == "completed" and len(record.epochs["epoch"]) == len(rec.epochs)


def test_stop_below_works_with_the_plateau_rule(tmp_path: Path) -> None:
    decay = {"factor": 0.5, "patience": 0, "stop_below": 0.02}
    path = write_recipe(tmp_path, **OVERFIT, train__epochs=60, train__lr_decay=decay)
    _, rec = run(path)
    assert len(rec.epochs) < 60 and rec.epochs[-1].lr == pytest.approx(0.0125)


def test_resume_mid_schedule_is_bitwise_identical(tmp_path: Path) -> None:
    # the crash falls after the rule has fired: a resumed run that forgot the history of
    # validation losses would decay at different epochs
    changes = {
        **OVERFIT,
        "train__epochs": 24,
        "train__lr_decay": {"rule": "nonmonotone", "factor": 0.5, "window": 2, "stop_below": 1e-4},
        "store__checkpoint_steps": 3,
    }
    reference, rec = run(write_recipe(tmp_path / "a", **changes))
    lrs = [e.lr for e in rec.epochs]
    crash = 2 * 14 + 1  # 2 steps per epoch: inside epoch 15
    assert lrs[13] < 0.05 and lrs[-1] < lrs[13]  # decays before and after the crash
    recipe = write_recipe(tmp_path / "b", **changes)
    with pytest.raises(KeyboardInterrupt):
        stnkit.run(recipe, observers=[CrashAt(crash)])
    (path,) = (tmp_path / "b" / "runs").glob("*.h5")
    resume(path)
    assert_same(reference.path, path)  # type: ignore[arg-type]


def test_rule_defaults_and_options() -> None:
    assert LrDecayConfig().rule == "plateau" and LrDecayConfig().patience == 0
    assert LrDecayConfig(rule="nonmonotone").window == 5
    official = LrDecayConfig.model_validate({"rule": "nonmonotone", "factor": 0.25, "stop_below": 3e-4})
    assert official.window == 5 and official.patience is None


def test_a_rule_option_of_the_other_rule_is_refused(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, train__lr_decay={"rule": "nonmonotone", "patience": 3})
    with pytest.raises(RecipeError) as info:
        stnkit.validate(path)
    assert info.value.problems == [
        ("train.lr_decay", "patience is not an option of rule 'nonmonotone' (it takes window)")
    ]
