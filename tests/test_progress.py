"""The live view: rich on a terminal, plain lines otherwise, driven only by lifecycle hooks."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

import stnkit
from stnkit.progress import PlainProgress, RichProgress, make_progress, sparkline


def test_sparkline_shape() -> None:
    assert sparkline([1.0]) == ""
    line = sparkline([0.0, 1.0, 2.0, 3.0])
    assert len(line) == 4 and line[0] == "▁" and line[-1] == "█"
    assert sparkline([2.0, 2.0, 2.0]) == "▄▄▄"


def test_make_progress_picks_by_terminal() -> None:
    assert isinstance(make_progress(Console(file=io.StringIO(), force_terminal=True)), RichProgress)
    assert isinstance(make_progress(Console(file=io.StringIO(), force_terminal=False)), PlainProgress)


def test_rich_view_shows_hyperparameters_moving(ridge_recipe: Path) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    view = RichProgress(console)
    frames: list[str] = []

    class Snap:
        from stnkit.hookspecs import hookimpl

        @hookimpl
        def stnkit_epoch_end(self, run, epoch):  # type: ignore[no-untyped-def]
            capture = Console(file=io.StringIO(), width=120, color_system=None)
            capture.print(view)
            frames.append(capture.file.getvalue())  # type: ignore[attr-defined]

    stnkit.run(ridge_recipe, observers=[view, Snap()], overrides=["train.epochs=6"])
    assert "weight_decay" in frames[-1] and "hyperparameter" in frames[-1]
    assert "12/12" in frames[-1] and "eta" in frames[-1]
    # the value column moves: the last frame differs from the first in the table row
    row = [line for line in frames[-1].splitlines() if line.lstrip().startswith("weight_decay")]
    first_row = [line for line in frames[0].splitlines() if line.lstrip().startswith("weight_decay")]
    assert row and first_row and row != first_row
    out = buffer.getvalue()
    assert "epoch 6/6" in out and "run completed" in out


def test_plain_view_prints_periodic_lines(ridge_recipe: Path) -> None:
    buffer = io.StringIO()
    view = PlainProgress(Console(file=buffer, width=200), interval=0.0)
    stnkit.run(ridge_recipe, observers=[view])
    lines = buffer.getvalue().splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert len(step_lines) == 8 + 3  # every weight step and every hyper step, interval 0
    assert "weight_decay=" in step_lines[-1] and "eta" in step_lines[-1]
    assert sum(line.startswith("epoch ") for line in lines) == 4
