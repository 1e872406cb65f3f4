"""The command line as a user meets it: exit codes, messages, files created or not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import stnkit
from stnkit.cli import main
from tests.helpers import write_recipe


def run_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.h5"))


def test_run_quiet_prints_the_run_file(
    ridge_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(ridge_recipe), "--quiet", "--out", str(tmp_path / "elsewhere")]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith(".h5") and Path(out).parent == tmp_path / "elsewhere"
    assert stnkit.open_run(out).status == "completed"


def test_run_prints_progress_lines_when_not_a_terminal(
    ridge_recipe: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(ridge_recipe), "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "run ridge: 4 steps over 2 epochs on cpu; tuning: weight_decay" in out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "weight_decay=" in out
    assert "run completed" in out and "test: loss" in out


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.epoch=3"], ["train.epoch: unknown key; did you mean 'epochs'? (from --set)"]),
        (
            ["model.name=stn-mpl", "data.batch_size=-1"],
            [
                "model.name: unknown model 'stn-mpl'; did you mean 'stn-mlp'?",
                "data.batch_size: Input should be greater than or equal to 1 (from --set)",
            ],
        ),
        (["data.path=nowhere.npz"], ["data.path: file not found:"]),
    ],
)
def test_bad_input_exits_2_with_one_line_per_problem_and_no_file(
    tmp_path: Path, overrides: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(tmp_path)
    args = ["run", str(recipe)]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == len(expected)
    for line, start in zip(sorted(lines), sorted(expected), strict=True):
        assert line.startswith(start), line
    assert "Traceback" not in captured.err and captured.out == ""
    assert run_files(tmp_path) == []


def test_unwritable_output_folder(
    ridge_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", str(ridge_recipe), "--out", str(blocker / "runs")]) == 2
    assert "cannot create the run folder" in capsys.readouterr().err


def test_validate(ridge_recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ridge_recipe)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate", str(ridge_recipe), "--set", "hyperparameters.weight_decay.init=-1"]) == 2
    assert "hyperparameters.weight_decay: init (-1.0) must be above lower (0.0)" in capsys.readouterr().err
    assert run_files(ridge_recipe.parent) == []


def test_missing_recipe_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    assert main(["run"]) == 2  # typer: missing argument
    assert main(["frobnicate"]) == 2


def test_diverged_run_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path, train__optimizer={"name": "sgd", "lr": 1e6})
    assert main(["run", str(recipe)]) == 1
    out = capsys.readouterr().out
    assert "run diverged" in out
    (path,) = run_files(tmp_path)
    assert stnkit.open_run(path).status == "diverged"


def test_python_dash_m_and_console_script(ridge_recipe: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "stnkit", "validate", str(ridge_recipe)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "stnkit", "validate", str(ridge_recipe), "--set", "seed=x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "seed: Input should be a valid integer, unable to parse string as an integer (from --set)"
    )
