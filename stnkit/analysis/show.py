"""``stnkit show``: a rich summary of one run."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stnkit.analysis.common import final_values, fmt
from stnkit.analysis.kinds import Presentation
from stnkit.progress import sparkline
from stnkit.store.reader import RunRecord

__all__ = ["render_run"]


def _downsample(values: list[float], width: int = 16) -> list[float]:
    if len(values) <= width:
        return values
    step = len(values) / width
    return [values[int(i * step)] for i in range(width)]


def _best_epoch(record: RunRecord, summary: dict[str, Any]) -> str:
    """The recorded best epoch; while a run is going, the last epoch flagged as a new best."""
    if summary["best_epoch"] is not None:
        return str(summary["best_epoch"])
    flags, epochs = record.epochs.get("best"), record.epochs.get("epoch")
    if flags is not None and epochs is not None and np.any(flags):
        return str(int(epochs[np.flatnonzero(flags)[-1]]))
    return "–"


def render_run(record: RunRecord, presentation: Presentation | None = None) -> RenderableType:
    """Header facts, metrics and a table of hyperparameters with their trajectories.

    Values are shown as the run's components received them (``presentation``; without one, a
    hyperparameter flagged integer in the file is floored)."""
    present = presentation or Presentation(record)
    summary = record.summary()
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim")
    head.add_column()
    status_style = {"completed": "green", "running": "yellow"}.get(summary["status"], "red")
    head.add_row("run", Text(summary["name"], style="bold"))
    head.add_row("file", str(record.path))
    head.add_row("status", Text(summary["status"], style=status_style))
    for damage in summary["damaged"]:  # data that failed its checksum: blanked, never shown as data
        head.add_row("damaged", Text(damage, style="bold red"))
    for problem in summary["problems"]:  # a record that contradicts itself is not a healthy run
        head.add_row("inconsistent", Text(problem, style="bold red"))
    if summary["message"]:
        head.add_row("message", summary["message"])
    head.add_row("created", summary["created"])
    head.add_row("response", summary["response"])
    if summary["parameters"] is not None:
        counts = summary["parameters"]
        head.add_row("parameters", f"{counts['elementary']:,} elementary, {counts['response']:,} response")
    for key, value in record.metadata.items():  # e.g. a replay's source_run
        head.add_row(key.replace("_", " "), value)
    head.add_row(
        "steps", f"{summary['steps']} weight, {summary['hyper_steps']} hyper, {summary['epochs']} epochs"
    )
    head.add_row("best epoch", f"{_best_epoch(record, summary)}  val loss {fmt(summary['best_val_loss'])}")
    best_valid = {k: v for k, v in summary["best_valid"].items() if v is not None}
    if best_valid:
        head.add_row("best valid", "  ".join(f"{k} {fmt(v)}" for k, v in best_valid.items()))
    if summary["test"]:
        head.add_row("test", "  ".join(f"{k} {fmt(v)}" for k, v in summary["test"].items()))
    parts: list[RenderableType] = [head]
    if record.hyperparameters:
        table = Table(title="hyperparameters", title_justify="left", header_style="bold")
        table.add_column("name", no_wrap=True)
        # a run still going (or one that died) has no final row yet: show its latest values
        ended = summary["status"] in ("completed", "diverged", "failed")
        finals = final_values(record)
        for column in ("initial", "final" if ended else "latest", "at best", "σ final"):
            table.add_column(column, justify="right", no_wrap=True, min_width=max(len(column), 7))
        table.add_column("trajectory", no_wrap=True, min_width=16)
        for name, info in summary["hyperparameters"].items():
            recorded = record.values(name) if len(record.hyper.get("values", ())) else np.zeros(0)
            trajectory = present.values(name, recorded).tolist()
            table.add_row(
                Text.assemble(name, (f" {info['kind'][:3]}", "dim")),
                fmt(present.value(name, info["initial"])),
                fmt(present.value(name, finals[name])),
                fmt(present.value(name, info["best"])),
                fmt(info["final_scale"]),
                Text(sparkline(_downsample(trajectory)), style="cyan"),
            )
        parts.append(table)
    return Group(*parts)
