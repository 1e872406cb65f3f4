"""The TensorBoard observer, checked by reading its event files back with TensorBoard's own reader."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import stnkit
from stnkit.cli import main
from stnkit.errors import RecipeError
from stnkit_tabular.synthetic import make_ridge_problem, save_problem


def write_recipe(folder: Path, **sections: Any) -> Path:
    """A four-epoch ridge recipe (linear stn-mlp tuning weight decay) and its data, in ``folder``."""
    save_problem(make_ridge_problem(n_train=40, n_valid=100, n_test=100), folder / "ridge.npz")
    recipe: dict[str, Any] = {
        "name": "ridge",
        "seed": 0,
        "data": {"name": "tabular", "path": "ridge.npz", "batch_size": 20, "valid_batch_size": 50},
        "model": {"name": "stn-mlp", "hidden_sizes": []},
        "hyperparameters": {"weight_decay": {"kind": "positive", "init": 0.01, "per_example": False}},
        "train": {
            "epochs": 4,
            "warmup_epochs": 1,
            "optimizer": {"name": "adam", "lr": 0.01},
            "hyper_optimizer": {"name": "adam", "lr": 0.1},
        },
        "run": {"log_every": 2},
        "store": {"dir": str(folder / "runs")},
        **sections,
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard reads from ``folder``, as ``{tag: [(step, value), ...]}``."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def steps(series: list[tuple[int, float]]) -> list[int]:
    return [step for step, _ in series]


def values(series: list[tuple[int, float]]) -> np.ndarray:
    return np.array([value for _, value in series])


@pytest.fixture
def logged_run(tmp_path: Path) -> tuple[stnkit.RunRecord, dict[str, list[tuple[int, float]]], Path]:
    recipe = write_recipe(tmp_path, observers={"tensorboard": {"dir": str(tmp_path / "tb")}})
    result = stnkit.run(recipe)
    assert result.status == "completed" and result.path is not None
    record = stnkit.open_run(result.path)
    folder = tmp_path / "tb" / result.path.stem
    return record, scalars(folder), folder


def test_live_run_logs_losses_metrics_lr_and_every_hyperparameter(logged_run: Any) -> None:
    record, logged, _ = logged_run
    assert {
        "train/loss",
        "train/lr",
        "hyper/val_loss",
        "hyperparameter/weight_decay",
        "sigma/weight_decay",
        "epoch/train_loss",
        "epoch/val_loss",
        "epoch/val_rmse",
        "epoch/lr",
        "test/loss",
        "test/rmse",
    } <= set(logged)
    # every weight step, numbered from 1 (2 batches of 20 over 4 epochs)
    assert steps(logged["train/loss"]) == list(range(1, 9)) == list(range(1, record.steps + 1))
    assert np.allclose(values(logged["train/lr"]), 0.01)
    # the hyperparameter curves are the run file's, one point per hyper step after the initial
    # value, each at the weight step it followed (every tag shares the weight-step axis)
    hyper = record.hyper
    assert steps(logged["hyperparameter/weight_decay"]) == [0, *hyper["step"].tolist()] == [0, 4, 6, 8]
    assert np.allclose(values(logged["hyperparameter/weight_decay"])[0], 0.01, rtol=1e-6)
    assert np.allclose(
        values(logged["hyperparameter/weight_decay"])[1:], record.values("weight_decay"), rtol=1e-6
    )
    assert np.allclose(values(logged["sigma/weight_decay"])[1:], record.scales("weight_decay"), rtol=1e-6)
    assert np.allclose(values(logged["hyper/val_loss"]), hyper["val_loss"], rtol=1e-6)
    # per-epoch losses and metrics are those of the run file
    epochs = record.epochs
    assert steps(logged["epoch/val_loss"]) == epochs["step"].tolist() == [2, 4, 6, 8]
    assert np.allclose(values(logged["epoch/val_loss"]), epochs["val_loss"], rtol=1e-6)
    assert np.allclose(values(logged["epoch/train_loss"]), epochs["train_loss"], rtol=1e-6)
    assert np.allclose(values(logged["epoch/val_rmse"]), epochs["metrics"]["rmse"], rtol=1e-6)
    assert steps(logged["test/rmse"]) == [8]
    assert np.isclose(values(logged["test/rmse"])[0], record.test["rmse"], rtol=1e-6)


def test_export_of_the_stored_run_gives_the_same_curves(
    logged_run: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record, live, _ = logged_run
    out = tmp_path / "exported"
    assert main(["export", str(record.path), "--format", "tensorboard", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    exported = scalars(out / record.path.stem)
    for tag in ("hyperparameter/weight_decay", "sigma/weight_decay", "hyper/val_loss", "epoch/val_loss"):
        assert exported[tag] == live[tag], tag
    assert exported["test/rmse"] == live["test/rmse"]
    # the run file keeps one training point per log_every (2) steps, the mean loss of those steps;
    # the live log has every step
    assert steps(exported["train/loss"]) == record.train["step"].tolist() == [2, 4, 6, 8]
    every = values(live["train/loss"])
    assert np.allclose(values(exported["train/loss"]), (every[0::2] + every[1::2]) / 2, rtol=1e-6)
    # a second export into the same folder would double every curve: refused, nothing added
    before = sorted((out / record.path.stem).iterdir())
    assert main(["export", str(record.path), "-f", "tensorboard", "-o", str(out)]) == 2
    assert "already holds event files" in capsys.readouterr().err
    assert sorted((out / record.path.stem).iterdir()) == before


def test_cli_option_switches_it_on_and_it_is_off_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path)
    assert main(["run", str(recipe), "--quiet", "--set", "train.epochs=2"]) == 0
    capsys.readouterr()
    assert not (tmp_path / "runs" / "tensorboard").exists()
    assert not list(tmp_path.rglob("events.out.tfevents.*"))
    assert main(["run", str(recipe), "--quiet", "--set", "train.epochs=2", "--tensorboard", "tb"]) == 0
    run_file = Path(capsys.readouterr().out.strip())
    logged = scalars(tmp_path / "tb" / run_file.stem)
    assert steps(logged["epoch/val_loss"]) == [2, 4]
    # the option is recorded in the run's recipe, so --resume and replays keep logging
    assert stnkit.open_run(run_file).recipe["observers"] == {"tensorboard": {"dir": "tb"}}


def test_bad_observer_sections_are_recipe_errors(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, observers={"tensorbord": {"dir": "tb"}})
    with pytest.raises(RecipeError, match=r"observers.tensorbord: unknown observer 'tensorbord'; did you"):
        stnkit.validate(recipe)
    recipe = write_recipe(tmp_path, observers={"tensorboard": {"dirr": "tb"}})
    with pytest.raises(RecipeError, match=r"observers.tensorboard.dirr: unknown key; did you mean 'dir'"):
        stnkit.validate(recipe)


def test_a_missing_tensorboard_package_is_reported_before_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes `import tensorboard` raise ImportError, as if it were not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    recipe = write_recipe(tmp_path)
    assert main(["run", str(recipe), "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err
    assert "observers.tensorboard: the tensorboard observer needs the tensorboard package" in err
    assert "pip install tensorboard" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tb").exists()


class CrashAt:
    """Raises KeyboardInterrupt after weight step ``step``: a stop between checkpoints."""

    def __init__(self, step: int) -> None:
        self.step = step

    @stnkit.hookimpl
    def stnkit_step_end(self, run: Any, step: Any) -> None:
        if step.phase == "weight" and step.step == self.step:
            raise KeyboardInterrupt


def test_a_resumed_run_continues_its_curves_without_repeating_steps(tmp_path: Path) -> None:
    from stnkit.runner import resume

    tb = tmp_path / "tb"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    reference = stnkit.run(write_recipe(tmp_path / "a"))
    recipe = write_recipe(tmp_path / "b", observers={"tensorboard": {"dir": str(tb)}})
    with pytest.raises(KeyboardInterrupt):
        # the last checkpoint is epoch 3's, at step 6; the crash comes before step 8 is logged
        stnkit.run(recipe, observers=[CrashAt(8)])
    (path,) = (tmp_path / "b" / "runs").glob("*.h5")
    before = scalars(tb / path.stem)
    assert steps(before["train/loss"]) == list(range(1, 8))
    assert resume(path).status == "completed"
    logged = scalars(tb / path.stem)
    # step 7 was logged twice (before the crash and after resuming): the resumed writer purges the
    # first attempt's events after the checkpoint, so each step appears once
    assert steps(logged["train/loss"]) == list(range(1, 9))
    assert steps(logged["epoch/val_loss"]) == [2, 4, 6, 8]
    assert steps(logged["hyperparameter/weight_decay"]) == [0, 4, 6, 8]
    record = stnkit.open_run(reference.path)  # an uninterrupted run of the same recipe
    assert np.allclose(values(logged["hyperparameter/weight_decay"])[1:], record.values("weight_decay"))
    assert np.allclose(values(logged["epoch/val_loss"]), record.epochs["val_loss"])
