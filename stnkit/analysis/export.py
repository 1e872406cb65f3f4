"""``stnkit export``: a run's record as JSON or as one CSV file per trajectory table.

Both formats use the column names of :meth:`RunRecord.table` (and so of ``to_pandas``) and write
floats with ``repr``, which round-trips exactly: reading an export back gives the numbers in the
run file. JSON has no NaN, so non-finite numbers are written as ``null``.
"""

from __future__ import annotations

import csv
import json
import math
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stnkit.analysis.kinds import Presentation
from stnkit.errors import UsageError
from stnkit.store.reader import TABLES, RunRecord

if TYPE_CHECKING:
    from stnkit.plugins import Plugins

__all__ = [
    "EXPORT_FORMAT",
    "ExportFormat",
    "export_csv",
    "export_json",
    "export_with_observer",
    "record_to_json",
    "write_export",
]

#: the ``format`` field of a JSON export
EXPORT_FORMAT = "stnkit-export"


class ExportFormat(StrEnum):
    """What ``stnkit export --format`` accepts."""

    csv = "csv"
    json = "json"


def _plain(value: Any) -> Any:
    """``value`` with numpy types turned into Python ones and non-finite floats into ``None``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _tables(record: RunRecord, present: Presentation) -> dict[str, dict[str, np.ndarray]]:
    """Every trajectory table; a discrete hyperparameter also gets ``used.<name>``, the values its
    components received, beside the recorded (continuous) column."""
    tables: dict[str, dict[str, np.ndarray]] = {}
    for name in TABLES:
        columns = record.table(name)
        for hyper in record.hyperparameters:
            column = hyper if hyper in columns else f"value.{hyper}"
            if present.discrete(hyper) and column in columns:
                columns[f"used.{hyper}"] = present.values(hyper, columns[column])
        tables[name] = columns
    return tables


def record_to_json(record: RunRecord, presentation: Presentation | None = None) -> dict[str, Any]:
    """The whole record as JSON-ready data: attributes, summary, hyperparameter facts, final
    metrics and every trajectory table as ``{column: [values]}``. Recorded values are exported
    as they are; ``used`` entries and ``used.<name>`` columns give a discrete kind's values as
    components received them."""
    record.require_intact("export")
    present = presentation or Presentation(record)
    data: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "path": str(record.path),
        "attrs": record.attrs,
        "summary": record.summary(),
        "hyperparameters": {
            "names": list(record.hyperparameters),
            "kinds": list(record.kinds),
            "integer": list(record.integer),
            "initial": record.initial,
            "initial_scales": record.initial_scales,
            "final": record.final,
            "best": record.best,
            "used": {
                key: {n: present.value(n, v) for n, v in values.items()}
                for key, values in (
                    ("initial", record.initial),
                    ("final", record.final),
                    ("best", record.best),
                )
            },
        },
        "best_valid": record.best_valid,
        "test": record.test,
    }
    data.update(_tables(record, present))
    return dict(_plain(data))


def _check_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the output folder {folder}: {error.strerror or error}") from None


def export_json(
    record: RunRecord, output: Path | None, presentation: Presentation | None = None
) -> Path | None:
    """Write the JSON export to ``output`` (a file, or a folder to hold ``<stem>.json``); with
    ``output=None`` return ``None`` and let the caller print :func:`record_to_json` instead."""
    if output is None:
        return None
    path = output / f"{record.path.stem}.json" if output.is_dir() else output
    _check_folder(path.parent)
    text = json.dumps(record_to_json(record, presentation), indent=1, allow_nan=False)
    try:
        path.write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def _cell(value: Any) -> str:
    # repr of a Python float is the shortest string that reads back as the same float
    if isinstance(value, float):
        return repr(value)
    return str(value)


def export_csv(record: RunRecord, folder: Path, presentation: Presentation | None = None) -> list[Path]:
    """Write ``<stem>.hyper.csv``, ``<stem>.train.csv`` and ``<stem>.epochs.csv`` into ``folder``
    (with ``used.<name>`` columns for discrete hyperparameters, as in the JSON export)."""
    if folder.suffix.lower() == ".csv" and not folder.is_dir():
        raise UsageError(f"csv export writes one file per table: give -o a folder, not {folder}")
    _check_folder(folder)
    written: list[Path] = []
    for name, columns in _tables(record, presentation or Presentation(record)).items():
        path = folder / f"{record.path.stem}.{name}.csv"
        rows = zip(*(column.tolist() for column in columns.values()), strict=True)
        try:
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(list(columns))
                writer.writerows([_cell(v) for v in row] for row in rows)
        except OSError as error:
            raise UsageError(f"cannot write {path}: {error.strerror or error}") from None
        written.append(path)
    return written


def write_export(
    record: RunRecord, fmt: ExportFormat | str, output: Path | None, presentation: Presentation | None = None
) -> list[Path]:
    """Export in ``fmt``; returns the files written (none for JSON to standard output)."""
    record.require_intact("export")
    try:
        kind = ExportFormat(fmt)
    except ValueError:
        raise UsageError(f"unknown export format {fmt!r} (use csv or json)") from None
    if kind is ExportFormat.csv:
        return export_csv(record, output if output is not None else Path.cwd(), presentation)
    path = export_json(record, output, presentation)
    return [] if path is None else [path]


def export_with_observer(record: RunRecord, fmt: str, output: Path | None, plugins: Plugins) -> list[Path]:
    """Export through an observer plugin that implements :meth:`stnkit.observer.Observer.export`
    (``--format tensorboard``); ``output`` is the folder to write under."""
    record.require_intact("export")
    formats = [entry.name for entry in plugins.observers.entries() if entry.cls.exports]
    known = ", ".join([*(f.value for f in ExportFormat), *formats])
    if fmt not in formats:
        hint = " (is its plugin installed?)" if fmt not in plugins.observers else ""
        raise UsageError(f"unknown export format {fmt!r}{hint}; use one of: {known}")
    if output is None:
        raise UsageError(f"--format {fmt} writes a folder: give it as PATH or -o DIR")
    cls = plugins.observers.get(fmt)
    problem = cls.check_environment()
    if problem:
        raise UsageError(problem)
    return cls.export(record, output, cls.Config())
