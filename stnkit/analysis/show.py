"""``stnkit show``: a rich summary of one run."""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stnkit.progress import sparkline
from stnkit.store.reader import RunRecord

__all__ = ["render_run"]


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def _downsample(values: list[float], width: int = 16) -> list[float]:
    if len(values) <= width:
        return values
    step = len(values) / width
    return [values[int(i * step)] for i in range(width)]


def render_run(record: RunRecord) -> RenderableType:
    """Header facts, metrics and a table of hyperparameters with their trajectories."""
    summary = record.summary()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim")
    head.add_column()
    status_style = {"completed": "green", "running": "yellow"}.get(summary["status"], "red")
    head.add_row("run", Text(summary["name"], style="bold"))
    head.add_row("file", str(record.path))
    head.add_row("status", Text(summary["status"], style=status_style))
    if summary["message"]:
        head.add_row("message", summary["message"])
    head.add_row("created", summary["created"])
    head.add_row("response", summary["response"])
    head.add_row(
        "steps", f"{summary['steps']} weight, {summary['hyper_steps']} hyper, {summary['epochs']} epochs"
    )
    head.add_row("best epoch", f"{summary['best_epoch']}  val loss {_fmt(summary['best_val_loss'])}")
    best_valid = {k: v for k, v in summary["best_valid"].items() if v is not None}
    if best_valid:
        head.add_row("best valid", "  ".join(f"{k} {_fmt(v)}" for k, v in best_valid.items()))
    if summary["test"]:
        head.add_row("test", "  ".join(f"{k} {_fmt(v)}" for k, v in summary["test"].items()))
    parts: list[RenderableType] = [head]
    if record.hyperparameters:
        table = Table(title="hyperparameters", title_justify="left", header_style="bold")
        table.add_column("name", no_wrap=True)
        for column in ("initial", "final", "at best", "σ final"):  # at-best: at the best epoch
            table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
        table.add_column("trajectory", no_wrap=True, min_width=16)
        for name, info in summary["hyperparameters"].items():
            trajectory = record.values(name).tolist() if len(record.hyper.get("values", ())) else []
            table.add_row(
                Text.assemble(name, (f" {info['kind'][:3]}", "dim")),
                _fmt(info["initial"]),
                _fmt(info["final"]),
                _fmt(info["best"]),
                _fmt(info["final_scale"]),
                Text(sparkline(_downsample(trajectory)), style="cyan"),
            )
        parts.append(table)
    return Group(*parts)
