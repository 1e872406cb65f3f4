"""The examples in ``examples/`` run (at a tiny size), and the stnkit-specific line counts that
docs/own-model.md states beside Optuna's are the scripts' own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = ["own_mlp.py", "own_cnn.py", "optuna_mlp.py", "optuna_cnn.py"]


def tuning_lines(script: Path) -> int:
    """Code lines specific to the tuning library: its import, and every non-blank, non-comment
    line between the ``# --- tuning: begin ---`` and ``# --- tuning: end ---`` markers."""
    text = script.read_text()
    library = "stnkit" if "import stnkit" in text else "optuna"
    count = sum(1 for line in text.splitlines() if line.strip() == f"import {library}")
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == "# --- tuning: begin ---":
            inside = True
        elif stripped == "# --- tuning: end ---":
            inside = False
        elif inside and stripped and not stripped.startswith("#"):
            count += 1
    return count


def stated_counts() -> dict[str, int]:
    """``| examples/own_mlp.py | 7 |`` rows of the line-count table in docs/own-model.md."""
    text = (ROOT / "docs" / "own-model.md").read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"\|\s*`examples/(\w+\.py)`\s*\|\s*(\d+)\s*\|", text)}


def test_the_docs_state_each_scripts_count_and_stnkit_needs_at_most_ten_lines() -> None:
    counts = {name: tuning_lines(EXAMPLES / name) for name in SCRIPTS}
    assert stated_counts() == counts
    assert counts["own_mlp.py"] <= 10
    section = " ".join((ROOT / "README.md").read_text().split())
    stnkit, optuna = counts["own_mlp.py"], counts["optuna_mlp.py"]
    assert f"takes {stnkit} stnkit-specific lines against {optuna} for the same search" in section


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_example_runs_at_a_tiny_size(script: str, tmp_path: Path) -> None:
    # the Fashion-MNIST slice committed with the CNN plugin's tests: no data outside the repository
    slice_ = ROOT / "plugins" / "stnkit-cnn" / "tests" / "data" / "fashion-mnist"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASHION_MNIST": str(slice_)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--tiny"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    if script.startswith("own_"):
        assert last.startswith("completed {'dropout'")
        assert len(list((tmp_path / "runs").glob("*.h5"))) == 1
    else:
        assert "'dropout'" in last


def test_the_shortest_example_of_the_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "own-model.md").read_text()
    code = re.search(r"## The shortest complete example\n+```python\n(.*?)```", text, re.S)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code[1], "docs/own-model.md", "exec"), namespace)
    result = namespace["result"]
    assert result.status == "completed"  # type: ignore[attr-defined]
    assert set(result.best_values) == {"dropout", "weight_decay"}  # type: ignore[attr-defined]
