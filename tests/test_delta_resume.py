"""A Δ-STN run resumes bit for bit on the CPU: after an abrupt stop, Ctrl-C and SIGKILL.

Δ-STN owns two optimizers the engine does not (response weights, perturbation scales); these
tests fail if their state is missing from the checkpoint. The helpers are those of the core's
own resume and crash tests.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stnkit
from stnkit.runner import resume
from tests.helpers import write_recipe
from tests.test_delta_stn import tiny_ptb
from tests.test_resume import CrashAt, SignalAt, assert_same, trajectories, wait_for_step

REPO = Path(__file__).parents[1]

# SGD with momentum on the general weights, Adam on the response weights and on s: every
# optimizer carries state a resume must restore
DELTA: dict[str, Any] = {
    "response": {"name": "delta-stn"},
    "model": {"name": "stn-mlp", "hidden_sizes": [6]},
    "hyperparameters": {
        "weight_decay": {"kind": "positive", "init": 0.01, "per_example": False},
        "dropout": {"kind": "unit", "init": 0.2},
    },
    "train__optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
    "train__response_optimizer": {"name": "adam", "lr": 0.01},
    "train__scale_optimizer": {"name": "adam", "lr": 0.05},
    "train__lr_decay": {"factor": 0.5, "patience": 0},
    "train__epochs": 6,
    "run__log_every": 2,
    "store__checkpoint_steps": 3,
}


def test_abrupt_stop_resumes_bitwise(tmp_path: Path) -> None:
    reference = stnkit.run(write_recipe(tmp_path / "a", **DELTA))
    recipe = write_recipe(tmp_path / "b", **DELTA)
    with pytest.raises(KeyboardInterrupt):
        stnkit.run(recipe, observers=[CrashAt(8)])
    (path,) = (tmp_path / "b" / "runs").glob("*.h5")
    assert stnkit.open_run(path).status == "interrupted"
    assert resume(path).status == "completed"
    assert_same(reference.path, path)  # type: ignore[arg-type]


def test_ctrl_c_resumes_bitwise(tmp_path: Path) -> None:
    reference = stnkit.run(write_recipe(tmp_path / "a", **DELTA))
    result = stnkit.run(write_recipe(tmp_path / "b", **DELTA), observers=[SignalAt(5)])
    assert result.status == "interrupted"
    resume(result.path)  # type: ignore[arg-type]
    assert_same(reference.path, result.path)  # type: ignore[arg-type]


def test_the_checkpoint_holds_the_response_optimizers(tmp_path: Path) -> None:
    import h5py

    from stnkit.store.checkpoint import read_latest

    result = stnkit.run(write_recipe(tmp_path, **{**DELTA, "train__epochs": 2}))
    with h5py.File(result.path, "r") as f:  # type: ignore[arg-type]
        state, _ = read_latest(f, "x")  # type: ignore[misc]
    assert set(state["response"]) == {"response_optimizer", "scale_optimizer"}
    assert state["response"]["response_optimizer"]["state"]  # Adam moments, not an empty shell


def test_a_stateful_lstm_resumes_bitwise(tmp_path: Path) -> None:
    overrides = [
        f"data.root={tiny_ptb(tmp_path / 'ptb', lines=100)}",
        "data.check_md5=false",
        "data.batch_size=10",
        "data.eval_batch_size=10",
        "data.bptt=10",
        "data.variable_bptt=true",
        "model.embedding_size=12",
        "model.hidden_size=12",
        'response={"name": "delta-stn"}',
        "train.epochs=2",
        "train.warmup_epochs=0",
        "run.log_every=4",
        "store.checkpoint_steps=7",
    ]
    recipe = REPO / "recipes" / "ptb-small.yaml"
    reference = stnkit.run(recipe, overrides=[*overrides, f"store.dir={tmp_path / 'a'}"])
    assert reference.status == "completed"
    with pytest.raises(KeyboardInterrupt):
        stnkit.run(recipe, overrides=[*overrides, f"store.dir={tmp_path / 'b'}"], observers=[CrashAt(30)])
    (path,) = (tmp_path / "b").glob("*.h5")
    resume(path)
    assert_same(reference.path, path)  # type: ignore[arg-type]


KILL = {**DELTA, "train__epochs": 100, "run__log_every": 1, "store__checkpoint_steps": 2}
KILL["run__flush_seconds"] = 0.05
KILL.pop("train__lr_decay")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    result = stnkit.run(write_recipe(tmp_path_factory.mktemp("reference"), **KILL))
    return trajectories(result.path)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_resumes_bitwise(tmp_path: Path, seed: int, reference: dict[str, np.ndarray]) -> None:
    recipe = write_recipe(tmp_path, **KILL)
    process = subprocess.Popen(
        [sys.executable, "-m", "stnkit", "run", str(recipe), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 60
    while not (runs.exists() and list(runs.glob("*.h5"))):
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the run file never appeared"
        time.sleep(0.01)
    (path,) = runs.glob("*.h5")
    # past the first checkpoint (every 2 steps), then a random step of the first 40% of the run:
    # the run's own progress, not the clock, so the kill lands mid-run on any machine
    last = int(reference["train.step"][-1])
    wait_for_step(process, path, random.Random(seed).randint(3, max(3, 2 * last // 5)))
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.returncode == 0:
        pytest.fail("the run finished before the kill; lengthen it")
    assert stnkit.open_run(path).status == "interrupted"
    assert resume(path).status == "completed"
    again = trajectories(path)
    for key, value in reference.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
