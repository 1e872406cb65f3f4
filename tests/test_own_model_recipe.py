"""Acceptance: a recipe whose model is a plain torch class (``model: {name: module}``) and whose
data is a function returning DataLoaders (``data: {name: loaders}``) runs, survives SIGKILL at
named points and resumes bit-identically, replays, and ``stnkit tune`` searches it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import stnkit
from stnkit.analysis.replay import replay
from stnkit.cli import main
from tests.test_kill_chain import kill_chain

RECIPE: dict[str, Any] = {
    "name": "own-mlp",
    "seed": 0,
    "data": {"name": "loaders", "target": "tests.own_data:blobs", "args": {"batch_size": 16}},
    "model": {
        "name": "module",
        "target": "tests.own_models:PlainMLP",
        "args": {"in_features": 8, "hidden": 16, "out_features": 3},
    },
    "response": {"name": "delta-stn"},
    "hyperparameters": {
        "dropout": {"kind": "unit", "init": 0.1},
        "weight_decay": {"kind": "positive", "init": 0.001, "per_example": False},
    },
    "train": {
        "epochs": 6,
        "warmup_epochs": 1,
        "optimizer": {"name": "adam", "lr": 0.01},
        "hyper_optimizer": {"name": "adam", "lr": 0.01},
    },
    "store": {},
    "run": {"log_every": 1, "flush_seconds": 0.05},
}


def write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "own-mlp.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "store": {**RECIPE["store"], "dir": str(folder / "runs")}}))
    return path


def test_the_recipe_runs_and_replays(tmp_path: Path) -> None:
    result = stnkit.run(write(tmp_path))
    assert result.status == "completed" and result.path is not None
    record = stnkit.open_run(result.path)
    assert record.hyperparameters == ("dropout", "weight_decay")
    assert record.test["accuracy"] > 0.5  # three separable blobs: it learns
    replayed = replay(result.path)
    assert replayed.status == "completed"
    assert stnkit.open_run(replayed.path).metadata["replay"] == "schedule"


KILLS = [
    "weight-step:5",  # mid-epoch
    "checkpoint-bytes:2",  # a checkpoint half written
    "weight-step:9",
    "final-eval",  # during the test pass
    "end-results",  # results written, no end-of-run attribute
]


def test_sigkill_at_named_points_then_resume_is_bit_identical(tmp_path: Path) -> None:
    recipe = write(tmp_path)
    reference = stnkit.run(recipe, out_dir=tmp_path / "reference").path
    assert reference is not None
    launch = kill_chain.fork_launcher(recipe, (), tmp_path / "chain")
    chain = kill_chain.run_chain(launch, tmp_path / "chain", KILLS)
    assert chain.kills == len(KILLS) and chain.restarts == 0
    assert kill_chain.differences(reference, chain.path) == []


def test_stnkit_tune_searches_it(tmp_path: Path) -> None:
    recipe = write(tmp_path)
    code = main(
        ["tune", str(recipe), "--method", "random", "--trials", "2", "--quiet", "--out", str(tmp_path / "s")]
    )
    assert code == 0
    (study,) = (tmp_path / "s").iterdir()
    trials = sorted(study.glob("*.h5"))
    assert len(trials) == 2
    values = [stnkit.open_run(t).recipe["hyperparameters"]["dropout"]["init"] for t in trials]
    assert values[0] != values[1]  # two sampled points, each trained
    assert all(stnkit.open_run(t).status == "completed" for t in trials)
