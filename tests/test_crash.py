"""SIGKILL a real run at random moments: the file must stay readable, say the run was
interrupted, keep every flushed row, and resume to exactly the uninterrupted result."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import stnkit
from stnkit.runner import resume
from tests.conftest import write_recipe
from tests.test_resume import trajectories

KILLS = 10
SETTINGS = {
    "train__epochs": 120,
    "train__log_every": 1,
    "store__checkpoint_steps": 2,
    "store__flush_seconds": 0.05,
}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    path = stnkit.run(write_recipe(folder, **SETTINGS)).path
    assert path is not None
    return path


@pytest.fixture(scope="module")
def reference(reference_run: Path) -> dict[str, np.ndarray]:
    return trajectories(reference_run)


@pytest.fixture(scope="module")
def training(reference_run: Path) -> float:
    """Seconds the uninterrupted run trained for: kill moments scale with this machine's speed."""
    return float(stnkit.open_run(reference_run).epochs["time"][-1])


def launch(folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    recipe = write_recipe(folder, **SETTINGS)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, "-m", "stnkit", "run", str(recipe), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    runs = folder / "runs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = list(runs.glob("*.h5")) if runs.exists() else []
        if files:
            return process, files[0]
        if process.poll() is not None:
            raise AssertionError(f"the run exited early: {process.stderr.read().decode()}")  # type: ignore[union-attr]
        time.sleep(0.01)
    raise AssertionError("the run file never appeared")


@pytest.mark.parametrize("seed", range(KILLS))
def test_sigkill_at_a_random_moment(
    tmp_path: Path, seed: int, reference: dict[str, np.ndarray], training: float
) -> None:
    process, path = launch(tmp_path)
    # within the first half of training, so the kill lands even on a machine twice as fast
    # (or twice as loaded) as the reference run's; a fixed number of seconds did not
    time.sleep(random.Random(seed).uniform(0.0, 0.5 * training))
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.returncode == 0:
        pytest.fail("the run finished before the kill; lengthen it")  # keeps the test honest
    record = stnkit.open_run(path)
    if record.status == "completed":
        # the kill landed after the final status was written, before the process exited: the
        # record must then be the whole uninterrupted one
        done = trajectories(path)
        for key, value in reference.items():
            np.testing.assert_array_equal(done[key], value, err_msg=key)
        return
    assert record.status == "interrupted"
    kept = trajectories(path)
    for key in ("hyper.values", "hyper.val_loss", "train.loss", "epochs.val_loss"):
        n = len(kept[key])
        np.testing.assert_array_equal(kept[key], reference[key][:n], err_msg=key)  # a prefix, as flushed
    result = resume(path)
    assert result.status == "completed"
    again = trajectories(path)
    for key, value in reference.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
