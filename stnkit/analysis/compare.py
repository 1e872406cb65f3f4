"""``stnkit compare``: final metrics and hyperparameters of several runs, a column per run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from stnkit.analysis.common import final_values, fmt, run_labels
from stnkit.analysis.kinds import Presentation
from stnkit.store.reader import RunRecord

__all__ = ["Comparison", "compare_runs", "render_comparison"]

#: sections of the comparison, in the order they are shown: key → row-label prefix
SECTIONS = {"best_valid": "valid", "test": "test", "final": "final"}


@dataclass(frozen=True)
class Comparison:
    """``runs``: one description per run; ``sections``: for each of ``best_valid``, ``test`` and
    ``final``, row name → one value per run (``None`` where a run lacks it)."""

    runs: list[dict[str, Any]]
    sections: dict[str, dict[str, list[float | None]]]

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, **self.sections}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _union(keyed: Sequence[Sequence[str]], first: str | None = None) -> list[str]:
    """Keys in order of first appearance; ``first`` (e.g. ``loss``) leads when present."""
    seen: dict[str, None] = {}
    for keys in keyed:
        seen.update(dict.fromkeys(keys))
    names = list(seen)
    if first in seen:
        names.remove(first)
        names.insert(0, first)
    return names


def compare_runs(
    records: Sequence[RunRecord], presentations: Sequence[Presentation] | None = None
) -> Comparison:
    """Side-by-side comparison of ``records``; final hyperparameters as their components used
    them (``presentations``, one per record; by default from the files' integer flags)."""
    for record in records:
        record.require_intact("compare")
    present = list(presentations) if presentations is not None else [Presentation(r) for r in records]
    labels = run_labels(records)
    runs = [
        {
            "label": label,
            "path": str(r.path),
            "name": r.name,
            "status": r.status,
            "response": str(r.attrs.get("response", "")),
            "steps": r.steps,
            "epochs": r.n_epochs,
            "best_epoch": _best_epoch(r),
        }
        for label, r in zip(labels, records, strict=True)
    ]
    finals = [
        {name: float(p.values(name, [v])[0]) for name, v in final_values(r).items()}
        for r, p in zip(records, present, strict=True)
    ]
    per_run: dict[str, list[dict[str, float]]] = {
        "best_valid": [r.best_valid for r in records],
        "test": [r.test for r in records],
        "final": finals,
    }
    sections: dict[str, dict[str, list[float | None]]] = {}
    for key, tables in per_run.items():
        names = _union([list(t) for t in tables], first="loss" if key != "final" else None)
        rows = {name: [_finite(t.get(name)) for t in tables] for name in names}
        # a metric no run has a value for (no test split) is noise
        sections[key] = {name: values for name, values in rows.items() if any(v is not None for v in values)}
    return Comparison(runs, sections)


def _best_epoch(record: RunRecord) -> int | None:
    epoch = int(record.attrs.get("best_epoch", -1))
    return epoch if epoch > 0 else None


def render_comparison(comparison: Comparison) -> Table:
    """A rich table: facts, then the metrics, then each hyperparameter's final value."""
    table = Table(header_style="bold")
    labels = ["best epoch"] + [
        f"{prefix} {name}" for key, prefix in SECTIONS.items() for name in comparison.sections.get(key, {})
    ]
    # row labels are never cut; on a narrow console the file names fold instead
    table.add_column("", style="dim", no_wrap=True, min_width=max(map(len, labels)))
    for run in comparison.runs:
        table.add_column(run["label"], justify="right", overflow="fold", min_width=8)
    table.add_row("file", *(Path(r["path"]).name for r in comparison.runs))
    table.add_row("status", *(Text(r["status"], style=_status_style(r["status"])) for r in comparison.runs))
    table.add_row("response", *(r["response"] for r in comparison.runs))
    table.add_row("steps", *(str(r["steps"]) for r in comparison.runs))
    table.add_row("epochs", *(str(r["epochs"]) for r in comparison.runs))
    table.add_row("best epoch", *(str(r["best_epoch"] or "–") for r in comparison.runs))
    for key, prefix in SECTIONS.items():
        rows = comparison.sections.get(key, {})
        if not rows:
            continue
        table.add_section()
        for name, values in rows.items():
            table.add_row(f"{prefix} {name}", *(fmt(v) for v in values))
    return table


def _status_style(status: str) -> str:
    return {"completed": "green", "running": "yellow"}.get(status, "red")
