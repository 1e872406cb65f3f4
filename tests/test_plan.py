"""The plan (weight steps, hyper steps, table sizes) is computed once and carried in ``RunInfo``."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import pytest
from rich.console import Console

import stnkit
from stnkit.events import Plan, RunInfo
from stnkit.progress import PlainProgress
from tests.helpers import write_recipe
from tests.test_engine import run


@pytest.mark.parametrize(
    "settings",
    [
        {},  # 4 epochs of 2 weight steps, 1 epoch of warm-up, a hyper step after every 2nd
        {"train__train_steps": 3, "train__hyper_steps": 2, "train__epochs": 7},
        {"train__max_steps": 5, "train__epochs": 6},  # cut mid-epoch
        {"response": {"name": "fixed"}},  # no hyper steps at all
    ],
)
def test_the_plan_is_what_the_run_does_and_what_the_store_allocates(tmp_path: Path, settings: dict) -> None:
    result, rec = run(write_recipe(tmp_path, **settings))
    assert result.status == "completed" and rec.started is not None
    plan = rec.started.plan
    weight = [s for s in rec.steps if s.phase == "weight"]
    hyper = [s for s in rec.steps if s.phase == "hyper"]
    assert plan.steps == len(weight) and plan.hyper_steps == len(hyper)
    assert (plan.epochs, plan.steps_per_epoch) == (rec.started.epochs, rec.started.steps_per_epoch)
    rows = plan.table_rows()
    with h5py.File(result.path, "r") as f:  # type: ignore[arg-type]
        for table in ("hyper", "train", "epochs"):
            assert f[table]["step"].shape[0] == rows[table], table  # sized from the plan, never grown
    assert len(stnkit.open_run(result.path).hyper["step"]) == plan.hyper_steps  # type: ignore[arg-type]


def test_the_progress_view_counts_the_planned_steps_without_being_told_max_steps() -> None:
    plan = Plan.of(
        epochs=10, steps_per_epoch=4, max_steps=6, warmup_epochs=0, train_steps=1, hyper_steps=1, tunes=True
    )
    info = RunInfo(
        name="r",
        path=None,
        hyperparameters=(),
        initial_values={},
        initial_scales={},
        integer=(),
        plan=plan,
        metrics=(),
        device="cpu",
        tunes=True,
        seed=0,
    )
    out = io.StringIO()
    view = PlainProgress(Console(file=out, force_terminal=False, width=200))
    view.stnkit_run_start(info)
    assert "run r: 6 steps over 10 epochs" in out.getvalue()
