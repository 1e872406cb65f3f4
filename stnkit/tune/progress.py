"""What ``stnkit tune`` shows while a study runs: a live rich view, or plain lines off a terminal."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["Snapshot", "StudyView", "TrialRow", "format_values"]


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # complete / pruned / failed / running / waiting
    value: float | None
    params: dict[str, float]
    message: str = ""
    retried: bool = False  # failed and queued again: its retry counts, not it


@dataclass(frozen=True)
class Snapshot:
    """The study as read from its storage at one moment."""

    trials: list[TrialRow]
    target: int | None
    budget_left: float | None  # seconds; None without --budget
    elapsed: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def best(self) -> TrialRow | None:
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return min(done, key=lambda t: (t.value, t.number)) if done else None


def format_values(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in params.items())


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _counts_line(snap: Snapshot) -> str:
    c = snap.counts
    # "done" counts the failed trials that count towards --trials (not those queued again)
    done = c.get("done", c.get("complete", 0) + c.get("pruned", 0))
    target = "" if snap.target is None else f"/{snap.target}"
    parts = [
        f"trials {done}{target} done",
        f"{c.get('complete', 0)} complete",
        f"{c.get('pruned', 0)} pruned",
        f"{c.get('failed', 0)} failed",
        f"{c.get('running', 0)} running",
    ]
    if snap.budget_left is not None:
        parts.append(f"budget left {_duration(snap.budget_left)}")
    parts.append(f"elapsed {_duration(snap.elapsed)}")
    return ", ".join(parts)


class StudyView:
    """Live view (terminal) or plain lines: one per finished trial, at most one status line every
    ``every`` seconds otherwise. ``quiet`` shows nothing."""

    def __init__(self, console: Console, quiet: bool = False, every: float = 10.0) -> None:
        self.console = console
        self.quiet = quiet
        self.live_mode = console.is_terminal and not quiet
        self.every = every
        self._live: Live | None = None
        self._reported: set[int] = set()
        self._last_line = 0.0

    def start(self, header: str) -> None:
        if self.quiet:
            return
        self.console.print(header)
        if self.live_mode:
            self._live = Live(Text(""), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()

    def notice(self, text: str) -> None:
        """Something the user must know even with ``--quiet`` (a repaired journal): standard error."""
        Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"notice: {text}", style="yellow"))

    def update(self, snap: Snapshot) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live.update(self._render(snap))
            self._print_finished(snap, via=self._live.console)
            return
        self._print_finished(snap, via=self.console)
        now = time.monotonic()
        if now - self._last_line >= self.every:
            self._last_line = now
            self.console.print(_counts_line(snap), markup=False)

    def stop(self, snap: Snapshot | None) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if snap is not None and not self.quiet:
            self._print_finished(snap, via=self.console)
            self.console.print(_counts_line(snap), markup=False)

    def _print_finished(self, snap: Snapshot, via: Console) -> None:
        best = snap.best
        for t in snap.trials:
            if t.state in ("running", "waiting") or t.number in self._reported:
                continue
            self._reported.add(t.number)
            value = "" if t.value is None else f" val {t.value:.4f}"
            star = " *best" if best is not None and best.number == t.number else ""
            why = f" ({t.message})" if t.state == "failed" and t.message else ""
            via.print(
                f"trial {t.number} {t.state}{value}{star}  [{format_values(t.params)}]{why}", markup=False
            )

    def _render(self, snap: Snapshot) -> RenderableType:
        parts: list[Any] = [Text(_counts_line(snap))]
        best = snap.best
        if best is not None:
            parts.append(
                Text.assemble(
                    ("best so far: ", "bold"),
                    f"trial {best.number}, val {best.value:.4f}  [{format_values(best.params)}]",
                )
            )
        running = [t for t in snap.trials if t.state == "running"]
        if running:
            table = Table(header_style="bold", title="running", title_justify="left")
            table.add_column("trial", justify="right")
            table.add_column("hyperparameters")
            table.add_column("last val", justify="right")
            for t in running:
                table.add_row(
                    str(t.number), format_values(t.params), "–" if t.value is None else f"{t.value:.4f}"
                )
            parts.append(table)
        return Group(*parts)
