"""Small helpers shared by the analysis commands: run labels, final values, number formatting."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from stnkit.store.reader import RunRecord

__all__ = ["final_values", "fmt", "run_labels"]


def fmt(value: float | None) -> str:
    """A number for a table cell: four decimals, or scientific when very small or large."""
    if value is None or not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def run_labels(records: Sequence[RunRecord]) -> list[str]:
    """A distinct label per run: its name, then ``name (response)`` where names repeat, then the
    file's stem where even those repeat (two runs of one recipe)."""
    labels = [r.name or r.path.stem for r in records]
    counts = Counter(labels)
    labels = [
        f"{label} ({r.attrs.get('response', '?')})" if counts[label] > 1 else label
        for label, r in zip(labels, records, strict=True)
    ]
    counts = Counter(labels)
    return [r.path.stem if counts[label] > 1 else label for label, r in zip(labels, records, strict=True)]


def final_values(record: RunRecord) -> dict[str, float]:
    """Each hyperparameter's value at the end of the run.

    The file's ``final`` row is written when a run ends; for a run still going (or one that died)
    it is NaN, and the latest recorded value stands in (from the hyper steps or the epoch ends,
    whichever was recorded at the later weight step), else the initial value.
    """
    result: dict[str, float] = {}
    for i, name in enumerate(record.hyperparameters):
        value = record.final.get(name, math.nan)
        if not math.isfinite(value):
            value = _latest(record, i, fallback=record.initial.get(name, math.nan))
        result[name] = value
    return result


def _latest(record: RunRecord, index: int, fallback: float) -> float:
    best_step, best_value = -1, fallback
    for table in (record.hyper, record.epochs):
        values, steps = table.get("values"), table.get("step")
        if values is None or steps is None or np.ndim(values) != 2:
            continue
        finite = np.flatnonzero(np.isfinite(values[:, index]))
        if len(finite) and int(steps[finite[-1]]) > best_step:
            best_step, best_value = int(steps[finite[-1]]), float(values[finite[-1], index])
    return best_value
