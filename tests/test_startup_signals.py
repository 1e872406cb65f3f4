"""Ctrl-C and SIGTERM at every start-up phase of ``python -m stnkit run``: exit 130 and one line,
no traceback, no ``.lock`` claim left behind, and no run file other than a complete, resumable
``interrupted`` one.

The signals are sent by the process itself at named phases (``STNKIT_TEST_SIGNAL_AT``, see
:mod:`stnkit.killpoints`), as a user's Ctrl-C or a scheduler's SIGTERM would arrive there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stnkit.store.reader import open_run
from tests.helpers import write_recipe

# before the run name is claimed nothing may be left; from the claim on, signals wait for the
# run's handler and the run file ends as interrupted
BEFORE_FILE = ("cli-import", "recipe", "data")
CASES = [
    ("cli-import", "SIGINT"),
    ("cli-import", "SIGTERM"),
    ("recipe", "SIGTERM"),
    ("data", "SIGINT"),
    ("data", "SIGTERM"),
    ("claim", "SIGTERM"),
    ("store", "SIGTERM"),
    ("store", "SIGINT"),
]


@pytest.mark.parametrize(("point", "signame"), CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_a_signal_during_start_up_exits_130_and_leaves_nothing_half_made(
    point: str, signame: str, tmp_path: Path
) -> None:
    recipe = write_recipe(tmp_path, train__epochs=2)
    runs = tmp_path / "runs"
    env = {**os.environ, "STNKIT_TEST_SIGNAL_AT": f"{point}:{signame}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "stnkit", "run", str(recipe), "--quiet", "--out", str(runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert "interrupted" in done.stderr or point not in BEFORE_FILE
    left = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    assert not [name for name in left if name.endswith(".lock")], left
    files = [runs / name for name in left if name.endswith(".h5")]
    if point in BEFORE_FILE:
        assert not files, left
        assert [line for line in done.stderr.splitlines() if line.strip()] == ["interrupted"]
    else:
        # the signal is held back while the file is made, then stops the run after its first
        # step with a checkpoint: a run file that resumes, not a half-made one
        assert len(files) == 1
        record = open_run(files[0])
        assert record.attrs["status"] == "interrupted"
