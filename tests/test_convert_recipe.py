"""The ``module`` model: a recipe names a plain torch class; stnkit converts and tunes it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import stnkit
from stnkit.cli import main

DATA = Path(__file__).parents[1] / "recipes" / "data" / "toy-ridge.npz"


def module_recipe(folder: Path, response: str = "stn", **model: Any) -> Path:
    recipe: dict[str, Any] = {
        "name": "own-mlp",
        "seed": 0,
        "data": {"name": "tabular", "path": str(DATA), "batch_size": 20, "valid_batch_size": 100},
        "model": {
            "name": "module",
            "target": "tests.own_models:PlainMLP",
            "args": {"in_features": 30, "hidden": 16, "out_features": 1},
            **model,
        },
        "response": {"name": response},
        "hyperparameters": {
            "weight_decay": {"kind": "positive", "init": 0.01, "per_example": False},
            "dropout": {"kind": "unit", "init": 0.1},
        },
        "train": {
            "epochs": 4,
            "warmup_epochs": 1,
            "optimizer": {"name": "adam", "lr": 0.01},
            "hyper_optimizer": {"name": "adam", "lr": 0.1},
        },
        "store": {"dir": str(folder / "runs")},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize("response", ["stn", "delta-stn"])
def test_a_plain_torch_class_is_tuned_from_a_recipe(tmp_path: Path, response: str) -> None:
    result = stnkit.run(module_recipe(tmp_path, response), out_dir=tmp_path / "runs")
    assert result.status == "completed"
    assert result.path is not None
    record = stnkit.open_run(result.path)
    for name in ("weight_decay", "dropout"):
        trajectory = record.values(name)
        assert len(trajectory) > 2
        assert np.ptp(trajectory) > 1e-4, f"{name} never moved under {response}"


def test_fixed_response_builds_the_plain_network(tmp_path: Path) -> None:
    result = stnkit.run(module_recipe(tmp_path, "fixed"), out_dir=tmp_path / "runs")
    assert result.status == "completed"


def _validate(recipe: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["validate", str(recipe)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"target": "tests.no_such_module:Net"}, "model.target: cannot import 'tests.no_such_module'"),
        (
            {"target": "tests.own_models:Missing"},
            "model.target: 'tests.own_models:Missing': module 'tests.own_models' has no attribute 'Missing'",
        ),
        ({"target": "tests.own_models"}, "must be 'package.module:name'"),
        ({"target": "tests.own_models:math"}, "is not a class or function"),
        (
            {"target": "tests.own_models:make_tensor", "args": {}},
            "model.target: tests.own_models:make_tensor returned a Tensor, not a torch nn.Module",
        ),
        ({"args": {"bogus": 1}}, "model.args: tests.own_models:PlainMLP(**args) failed: TypeError"),
        (
            {"convert": {"dropout": {"dropout": ["encoder.*"]}}},
            "model.convert.dropout.dropout: dropout pattern 'encoder.*'",
        ),
        (
            {"convert": {"weight_decay": {"weight_decay": "conv*"}}},
            "model.convert.weight_decay.weight_decay: weight_decay pattern 'conv*'",
        ),
        ({"convert": {"targets": ["fc9"]}}, "model.convert.targets: targets pattern 'fc9' matches no module"),
        (
            {"target": "tests.own_models:FunctionalDropoutMLP", "args": {}},
            "F.dropout(...) in FunctionalDropoutMLP",
        ),
        ({"target": "tests.own_models:WithGRU", "args": {}}, "model.convert.targets: 'rnn' is a GRU"),
        ({"target": "tests.own_models:NoLayers", "args": {}}, "model.convert.targets: nothing to convert"),
    ],
)
def test_conversion_problems_are_recipe_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: dict[str, Any], expected: str
) -> None:
    err = _validate(module_recipe(tmp_path, **model), capsys)
    assert expected in err, err


def test_a_hyperparameter_the_conversion_cannot_use_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = module_recipe(tmp_path)
    data = yaml.safe_load(recipe.read_text())
    data["hyperparameters"]["attn_dropout"] = {"kind": "unit", "init": 0.1}
    recipe.write_text(yaml.safe_dump(data))
    err = _validate(recipe, capsys)
    assert "hyperparameters.attn_dropout: no component consumes 'attn_dropout'" in err, err


def test_a_converted_run_resumes_bit_identically(tmp_path: Path) -> None:
    from tests.test_resume import CrashAt, assert_same

    def recipe(folder: Path) -> Path:
        path = module_recipe(folder)
        data = yaml.safe_load(path.read_text())
        data["store"]["checkpoint_steps"] = 3
        path.write_text(yaml.safe_dump(data))
        return path

    reference = stnkit.run(recipe(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        stnkit.run(recipe(tmp_path / "b"), observers=[CrashAt(5)])
    (path,) = (tmp_path / "b" / "runs").glob("*.h5")
    assert stnkit.resume(path).status == "completed"
    assert reference.path is not None
    assert_same(reference.path, path)


def test_replay_and_tune_work_on_a_converted_model(tmp_path: Path) -> None:
    recipe = module_recipe(tmp_path)
    result = stnkit.run(recipe, out_dir=tmp_path / "runs")
    assert result.path is not None
    out = tmp_path / "replays"
    assert main(["replay", str(result.path), "--quiet", "--out", str(out)]) == 0
    (replayed,) = out.glob("*.h5")
    assert stnkit.open_run(replayed).status == "completed"
    studies = tmp_path / "studies"
    args = ["tune", str(recipe), "--method", "random", "--trials", "2", "--seed", "0", "--quiet"]
    assert main([*args, "--out", str(studies), "--set", "train.epochs=2"]) == 0
    trials = list(studies.rglob("*.h5"))
    assert len(trials) == 2 and all(stnkit.open_run(t).status == "completed" for t in trials)


def test_a_converted_run_survives_sigkill_and_resumes_exactly(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.test_resume import trajectories, wait_for_step

    def recipe(folder: Path) -> Path:
        path = module_recipe(folder)
        data = yaml.safe_load(path.read_text())
        data["train"]["epochs"] = 40
        data["store"].update({"checkpoint_steps": 2})
        data["run"] = {**data.get("run", {}), "flush_seconds": 0.05}
        path.write_text(yaml.safe_dump(data))
        return path

    reference = stnkit.run(recipe(tmp_path / "a"))
    assert reference.path is not None
    killed = recipe(tmp_path / "b")
    process = subprocess.Popen(
        [sys.executable, "-m", "stnkit", "run", str(killed), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        cwd=Path(__file__).parents[1],  # where tests.own_models is importable
    )
    runs = tmp_path / "b" / "runs"
    for _ in range(6000):
        if list(runs.glob("*.h5")) or process.poll() is not None:
            break
        time.sleep(0.01)
    (path,) = runs.glob("*.h5")
    wait_for_step(process, path, 30)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode != 0, "the run finished before the kill; lengthen it"
    assert stnkit.open_run(path).status == "interrupted"
    assert stnkit.resume(path).status == "completed"
    expected, got = trajectories(reference.path), trajectories(path)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
