"""Exact resume, graceful stops, one writer per file, divergence with a usable checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import stnkit
from stnkit.errors import RunFileError
from stnkit.events import RunInfo, StepEnd
from stnkit.hookspecs import hookimpl
from stnkit.runner import resume
from stnkit.store.checkpoint import read_latest
from tests.helpers import write_recipe

REPO = Path(__file__).parents[1]


def live_steps(path: Path) -> int:
    """Weight steps a running run has flushed to its file so far (0 while it is caught mid-write)."""
    try:
        return stnkit.open_run(path).steps
    except Exception:  # a live file caught mid-write: ask again
        return 0


def wait_for_step(process: subprocess.Popen[bytes], path: Path, step: int, timeout: float = 120) -> None:
    """Until the run in ``process`` has flushed ``step`` weight steps, or has exited. Kill tests
    time their kills by the run's own progress: fixed seconds let a fast machine finish first."""
    deadline = time.monotonic() + timeout
    while live_steps(path) < step and process.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)


def trajectories(path: Path) -> dict[str, np.ndarray]:
    record = stnkit.open_run(path)
    return {
        "hyper.values": record.hyper["values"],
        "hyper.scales": record.hyper["scales"],
        "hyper.step": record.hyper["step"],
        "hyper.val_loss": record.hyper["val_loss"],
        "train.loss": record.train["loss"],
        "train.step": record.train["step"],
        "epochs.val_loss": record.epochs["val_loss"],
        "epochs.train_loss": record.epochs["train_loss"],
        "epochs.lr": record.epochs["lr"],
        "final": np.array(list(record.final.values())),
        "test": np.array([record.test[k] for k in sorted(record.test)]),
    }


def assert_same(a: Path, b: Path) -> None:
    left, right = trajectories(a), trajectories(b)
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


class CrashAt:
    """Raises KeyboardInterrupt after weight step ``step``: an abrupt stop between checkpoints."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def stnkit_step_end(self, run: RunInfo, step: StepEnd) -> None:
        if step.phase == "weight" and step.step == self.step:
            raise KeyboardInterrupt


class SignalAt:
    """Sends this process SIGINT after weight step ``step``, like Ctrl-C in a terminal."""

    def __init__(self, step: int) -> None:
        self.step = step

    @hookimpl
    def stnkit_step_end(self, run: RunInfo, step: StepEnd) -> None:
        if step.phase == "weight" and step.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


RIDGE = {"train__epochs": 6, "store__checkpoint_steps": 3, "run__log_every": 2}


def test_resume_after_an_abrupt_stop_is_bitwise_identical(tmp_path: Path) -> None:
    reference = stnkit.run(write_recipe(tmp_path / "a", **RIDGE))
    recipe = write_recipe(tmp_path / "b", **RIDGE)
    with pytest.raises(KeyboardInterrupt):
        stnkit.run(recipe, observers=[CrashAt(8)])
    (path,) = (tmp_path / "b" / "runs").glob("*.h5")
    assert stnkit.open_run(path).status == "interrupted"
    with h5py.File(path, "r") as f:
        found = read_latest(f, str(path))
    assert found is not None and found[1] == 6  # the checkpoint before the stop (every 3 steps)
    result = resume(path)
    assert result.status == "completed" and result.path == path
    assert_same(reference.path, path)  # type: ignore[arg-type]
    assert stnkit.open_run(path).attrs["resumed"] == 1


def test_ctrl_c_checkpoints_the_current_step_and_resumes_exactly(tmp_path: Path) -> None:
    reference = stnkit.run(write_recipe(tmp_path / "a", **RIDGE))
    recipe = write_recipe(tmp_path / "b", **RIDGE)
    # whatever the handler was before (SIG_IGN when the suite runs in a background job)
    before = signal.getsignal(signal.SIGINT)
    result = stnkit.run(recipe, observers=[SignalAt(5)])
    assert result.status == "interrupted" and "weight step 5" in result.end.message
    with h5py.File(result.path, "r") as f:  # type: ignore[arg-type]
        assert read_latest(f, "x")[1] == 5  # type: ignore[index]
    assert signal.getsignal(signal.SIGINT) == before  # handler restored
    resume(result.path)  # type: ignore[arg-type]
    assert_same(reference.path, result.path)  # type: ignore[arg-type]


def test_resume_of_a_stateful_lstm_with_variable_bptt(tmp_path: Path) -> None:
    overrides = [
        f"data.root={REPO / 'recipes' / 'data' / 'ptb.zip'}",
        "data.train_tokens=3000",
        "data.valid_tokens=1000",
        "data.batch_size=10",
        "data.eval_batch_size=10",
        "data.bptt=10",
        "data.variable_bptt=true",
        "model.embedding_size=16",
        "model.hidden_size=16",
        "train.epochs=3",
        "train.warmup_epochs=0",
        "run.log_every=4",
        "store.checkpoint_steps=7",
    ]
    recipe = REPO / "recipes" / "ptb-small.yaml"
    reference = stnkit.run(recipe, overrides=[*overrides, f"store.dir={tmp_path / 'a'}"])
    with pytest.raises(KeyboardInterrupt):
        stnkit.run(recipe, overrides=[*overrides, f"store.dir={tmp_path / 'b'}"], observers=[CrashAt(45)])
    (path,) = (tmp_path / "b").glob("*.h5")
    resume(path)
    assert_same(reference.path, path)  # type: ignore[arg-type]


def test_a_live_run_refuses_a_second_writer(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__epochs=3)
    seen: list[str] = []

    class TrySecondWriter:
        @hookimpl
        def stnkit_epoch_end(self, run: RunInfo, epoch: Any) -> None:
            if epoch.epoch == 2:
                with pytest.raises(RunFileError, match="is being written by stnkit process"):
                    resume(run.path)  # type: ignore[arg-type]
                seen.append(stnkit.open_run(run.path).status)  # type: ignore[arg-type]

    result = stnkit.run(recipe, observers=[TrySecondWriter()])
    assert result.status == "completed" and seen == ["running"]
    assert not Path(str(result.path) + ".lock").exists()


def test_completed_runs_are_not_resumed(ridge_recipe: Path) -> None:
    result = stnkit.run(ridge_recipe)
    with pytest.raises(RunFileError, match="already completed"):
        resume(result.path)  # type: ignore[arg-type]


def test_divergence_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stnkit.response import stn

    recipe = write_recipe(tmp_path, train__epochs=5)
    real = stn.train_on
    calls = {"n": 0}

    def poisoned(parts: Any, batch: Any, hp: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(parts, batch, hp)
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(stn, "train_on", poisoned)
    result = stnkit.run(recipe)
    assert result.status == "diverged"
    assert "training loss became nan at weight step 7" in result.end.message
    assert "weight_decay=" in result.end.message  # the last finite values are named
    record = stnkit.open_run(result.path)  # type: ignore[arg-type]
    assert record.status == "diverged" and record.attrs["message"] == result.end.message
    with h5py.File(result.path, "r") as f:  # type: ignore[arg-type]
        state, step = read_latest(f, "x")  # type: ignore[misc]
    assert step == 6 and state["epoch"] == 3  # the checkpoint at the end of epoch 3
    monkeypatch.setattr(stn, "train_on", real)
    assert resume(result.path).status == "completed"  # type: ignore[arg-type]


def test_torn_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    result = stnkit.run(write_recipe(tmp_path, **RIDGE))
    with h5py.File(result.path, "r+") as f:  # type: ignore[arg-type]
        group = f["checkpoints"]
        latest = int(group["latest"][()])
        steps = group["step"][()].tolist()
        group[f"slot{latest}"][:100] = 0  # a write cut short: bytes no longer match their hash
        state, step = read_latest(f, "x")  # type: ignore[misc]
    assert step == steps[1 - latest] < steps[latest]
    assert state["step"] == step


def test_the_command_line_stops_with_130_and_resumes_with_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stnkit import cli
    from stnkit.plugins import load_plugins

    reference = stnkit.run(write_recipe(tmp_path / "a", **RIDGE))
    recipe = write_recipe(tmp_path / "b", **RIDGE)
    with_ctrl_c = load_plugins()
    with_ctrl_c.register(SignalAt(5), name="ctrl-c-at-5")
    monkeypatch.setattr(cli, "_plugins", with_ctrl_c)
    assert cli.main(["run", str(recipe), "--quiet"]) == 130
    path = Path(capsys.readouterr().out.strip())
    assert stnkit.open_run(path).status == "interrupted"

    monkeypatch.setattr(cli, "_plugins", None)  # a fresh process: no Ctrl-C this time
    assert cli.main(["run", "--resume", str(path)]) == 0
    out = capsys.readouterr().out
    assert "run completed" in out
    assert_same(reference.path, path)  # type: ignore[arg-type]
    assert cli.main(["run", "--resume", str(path)]) == 2  # completed: nothing to resume
    assert "already completed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra", [["RECIPE"], ["--set", "seed=1"], ["--out", "elsewhere"]], ids=["recipe", "set", "out"]
)
def test_resume_takes_the_run_as_recorded(
    tmp_path: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from stnkit.cli import main

    recipe = write_recipe(tmp_path)
    extra = [str(recipe) if arg == "RECIPE" else arg for arg in extra]
    args = ["run", "--resume", str(tmp_path / "any.h5"), *extra]
    assert main(args) == 2
    assert "--resume continues a run as recorded" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "give a recipe file" in capsys.readouterr().err
