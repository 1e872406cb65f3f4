"""Live progress: a rich view for terminals, plain log lines otherwise. Both are lifecycle plugins."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from stnkit.events import EpochEnd, RunEnd, RunInfo, StepEnd
from stnkit.markers import hookimpl

__all__ = ["PlainProgress", "RichProgress", "make_progress", "sparkline"]

_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float] | deque[float]) -> str:
    """A one-line unicode chart of ``values`` (empty for fewer than two points)."""
    points = [v for v in values if math.isfinite(v)]
    if len(points) < 2:
        return ""
    low, high = min(points), max(points)
    span = high - low
    if span <= 1e-12 * max(1.0, abs(high)):
        return _BLOCKS[3] * len(points)
    return "".join(_BLOCKS[min(7, int((v - low) / span * 7.999))] for v in points)


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def _metric_text(metrics: dict[str, float]) -> str:
    shown = {k: v for k, v in metrics.items() if k != "loss"}
    return " ".join(f"{k} {_fmt(v)}" for k, v in shown.items())


class _State:
    """What both views show, updated by the hooks."""

    def __init__(self, run: RunInfo, history: int = 40) -> None:
        self.run = run
        # what components receive (a discrete kind's used value), not the continuous value behind it
        self.initial = run.used(run.initial_values)
        self.values = dict(self.initial)
        self.scales = dict(run.initial_scales)
        self.history: dict[str, deque[float]] = {
            n: deque([v], maxlen=history) for n, v in self.initial.items()
        }
        self.train_loss: float | None = None
        self.val_loss: float | None = None
        self.epoch_val: float | None = None
        self.step = 0
        self.hyper_step = 0
        self.epoch = 0

    def on_step(self, step: StepEnd) -> None:
        self.step = step.step
        self.hyper_step = step.hyper_step
        self.epoch = step.epoch
        if step.phase == "weight":
            # exponential average: single-batch losses are too noisy to read
            self.train_loss = (
                step.loss if self.train_loss is None else 0.9 * self.train_loss + 0.1 * step.loss
            )
        else:
            self.val_loss = step.loss
            if step.values:
                self.values = self.run.used(step.values)
                for name, value in self.values.items():
                    self.history[name].append(value)
            if step.scales:
                self.scales = step.scales

    def epoch_line(self, epoch: EpochEnd) -> str:
        star = " *best" if epoch.best else ""
        metrics = _metric_text(epoch.val_metrics)
        values = " ".join(f"{k}={_fmt(v)}" for k, v in self.run.used(epoch.values).items())
        return (
            f"epoch {epoch.epoch}/{self.run.epochs}  train {_fmt(epoch.train_loss)}  "
            f"val {_fmt(epoch.val_loss)} {metrics}  lr {epoch.lr:g}{star}"
            + (f"  [{values}]" if values else "")
        )


def _end_lines(result: RunEnd, run: RunInfo) -> list[str]:
    lines = [f"run {result.status}: {result.step} steps, {result.epoch} epochs"]
    if result.message:
        lines.append(result.message)
    if result.best_val_loss is not None:
        lines.append(
            f"best epoch {result.best_epoch}: val {_fmt(result.best_val_loss)} "
            f"{_metric_text(result.best_val_metrics)}"
        )
    if result.test_metrics:
        lines.append("test: " + " ".join(f"{k} {_fmt(v)}" for k, v in result.test_metrics.items()))
    if result.final_values:
        lines.append(
            "final hyperparameters: "
            + " ".join(f"{k}={_fmt(v)}" for k, v in run.used(result.final_values).items())
        )
    if run.path is not None:
        lines.append(f"run file: {run.path}")
    return lines


class RichProgress:
    """A live terminal view: progress bar with ETA, losses, and a table of hyperparameters."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.state: _State | None = None
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task_id: Any = None

    @hookimpl
    def stnkit_run_start(self, run: RunInfo) -> None:
        self.state = _State(run)
        self.task_id = self.progress.add_task(run.name, total=run.plan.steps, completed=run.start_step)
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def __rich__(self) -> RenderableType:
        state = self.state
        if state is None:
            return Text("")
        status = Text.assemble(
            ("epoch ", "dim"),
            f"{state.epoch}/{state.run.epochs}",
            ("   train loss ", "dim"),
            _fmt(state.train_loss),
            ("   val loss (hyper step) ", "dim"),
            _fmt(state.val_loss),
            ("   last epoch val ", "dim"),
            _fmt(state.epoch_val),
            ("   hyper steps ", "dim"),
            str(state.hyper_step),
        )
        parts: list[RenderableType] = [self.progress, status]
        if state.run.hyperparameters:
            table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
            table.add_column("hyperparameter")
            table.add_column("value", justify="right")
            table.add_column("σ", justify="right")
            table.add_column("initial", justify="right", style="dim")
            table.add_column("trajectory")
            for name in state.run.hyperparameters:
                table.add_row(
                    name,
                    _fmt(state.values.get(name)),
                    _fmt(state.scales.get(name)),
                    _fmt(state.initial.get(name)),
                    Text(sparkline(state.history[name]), style="cyan"),
                )
            parts.append(table)
        return Group(*parts)

    @hookimpl
    def stnkit_step_end(self, run: RunInfo, step: StepEnd) -> None:
        assert self.state is not None
        self.state.on_step(step)
        if step.phase == "weight":
            self.progress.update(self.task_id, completed=step.step)

    @hookimpl
    def stnkit_epoch_end(self, run: RunInfo, epoch: EpochEnd) -> None:
        assert self.state is not None
        self.state.epoch_val = epoch.val_loss
        self.console.print(Text(self.state.epoch_line(epoch)), soft_wrap=True)

    @hookimpl
    def stnkit_run_end(self, run: RunInfo, result: RunEnd) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        for line in _end_lines(result, run):
            self.console.print(Text(line), soft_wrap=True)


class PlainProgress:
    """Periodic log lines for logs and pipes: one every ``interval`` seconds, and one per epoch."""

    def __init__(self, console: Console, interval: float = 10.0) -> None:
        self.console = console
        self.interval = interval
        self.state: _State | None = None
        self._last = 0.0
        self._start = 0.0

    def _print(self, line: str) -> None:
        self.console.print(Text(line), soft_wrap=True, highlight=False)

    @hookimpl
    def stnkit_run_start(self, run: RunInfo) -> None:
        self.state = _State(run)
        self._last = self._start = time.monotonic()
        if run.tunes:
            what = "tuning: " + (", ".join(run.hyperparameters) or "none")
        else:
            values = " ".join(f"{k}={_fmt(v)}" for k, v in run.used(run.initial_values).items())
            what = "plain training" + (f" at {values}" if values else "")
        self._print(
            f"run {run.name}: {run.plan.steps} steps over {run.epochs} epochs "
            f"on {run.device}{_ranks(run)}; {what}" + (f"; writing {run.path}" if run.path else "")
        )

    @hookimpl
    def stnkit_step_end(self, run: RunInfo, step: StepEnd) -> None:
        assert self.state is not None
        self.state.on_step(step)
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        total = run.plan.steps
        rate = step.step / max(now - self._start, 1e-9)
        eta = (total - step.step) / rate if rate > 0 else math.inf
        values = ""
        if run.tunes:
            values = " ".join(
                f"{k}={_fmt(v)}(σ {_fmt(self.state.scales.get(k))})" for k, v in self.state.values.items()
            )
        self._print(
            f"step {step.step}/{total} epoch {step.epoch} train {_fmt(self.state.train_loss)} "
            f"val {_fmt(self.state.val_loss)} eta {eta:.0f}s" + (f"  {values}" if values else "")
        )

    @hookimpl
    def stnkit_epoch_end(self, run: RunInfo, epoch: EpochEnd) -> None:
        assert self.state is not None
        self._print(self.state.epoch_line(epoch))

    @hookimpl
    def stnkit_run_end(self, run: RunInfo, result: RunEnd) -> None:
        for line in _end_lines(result, run):
            self._print(line)


def make_progress(console: Console) -> RichProgress | PlainProgress:
    """The rich view on a terminal, plain lines otherwise."""
    if console.is_terminal:
        return RichProgress(console)
    return PlainProgress(console)


def _ranks(run: RunInfo) -> str:
    """`` × 2 ranks (gloo)`` under torchrun with several processes."""
    return f" × {run.world_size} ranks ({run.backend})" if run.world_size > 1 else ""
