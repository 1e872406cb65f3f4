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
from tests.helpers import write_recipe
from tests.test_resume import trajectories, wait_for_step

KILLS = 10
SETTINGS = {
    "train__epochs": 120,
    "run__log_every": 1,
    "store__checkpoint_steps": 2,
    "run__flush_seconds": 0.05,
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    folder = tmp_path_factory.mktemp("reference")
    result = stnkit.run(write_recipe(folder, **SETTINGS))
    return trajectories(result.path)  # type: ignore[arg-type]


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
def test_sigkill_at_a_random_moment(tmp_path: Path, seed: int, reference: dict[str, np.ndarray]) -> None:
    process, path = launch(tmp_path)
    # a random step of the first half of the run, then at once: the flushes every 0.05 s put the
    # kill anywhere in a step, a checkpoint write or a flush
    wait_for_step(process, path, random.Random(seed).randint(1, int(reference["train.step"][-1]) // 2))
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
