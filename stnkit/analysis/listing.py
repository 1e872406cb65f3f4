"""``stnkit ls``: the run files in a folder, newest first, each summarised in one row."""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stnkit.errors import RunFileError, UsageError
from stnkit.store.reader import open_run

__all__ = [
    "RunEntry",
    "StudyEntry",
    "find_run_files",
    "list_runs",
    "list_studies",
    "render_listing",
    "render_studies",
]

_STYLES = {"completed": "green", "running": "yellow", "unreadable": "dim red"}


@dataclass(frozen=True)
class RunEntry:
    """One row of ``stnkit ls``. ``error`` is set (and ``status`` is ``unreadable``) for a file
    that is not a readable stnkit run."""

    path: str
    file: str
    name: str | None
    status: str
    steps: int | None
    epochs: int | None
    best_val_loss: float | None
    created: str | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _study_folders(folder: Path) -> list[Path]:
    """The ``stnkit tune`` study folders at or below ``folder`` (``study.json`` marks one)."""
    from stnkit.tune.study import MANIFEST, is_study

    return sorted(p.parent for p in folder.rglob(MANIFEST) if is_study(p.parent))


def find_run_files(folder: Path) -> list[Path]:
    """Every ``*.h5`` file below ``folder``, except the trials of a study folder (``ls`` lists the
    study instead). Raises :class:`UsageError` if it is not a folder."""
    if not folder.exists():
        raise UsageError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise UsageError(f"not a folder: {folder}")
    studies = [s for s in _study_folders(folder) if s != folder]
    return sorted(
        p for p in folder.rglob("*.h5") if p.is_file() and not any(p.is_relative_to(s) for s in studies)
    )


@dataclass(frozen=True)
class StudyEntry:
    """One study of ``stnkit ls``: its method, trial counts and best validation loss."""

    path: str
    file: str
    method: str
    complete: int
    pruned: int
    failed: int
    running: int
    best_val_loss: float | None
    created: str | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": "study", **asdict(self)}


def list_studies(folder: str | Path) -> list[StudyEntry]:
    """The study folders below ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    entries: list[StudyEntry] = []
    for path in _study_folders(folder):
        relative = str(path.relative_to(folder)) if path != folder else "."
        try:
            from stnkit.tune.analysis import open_study

            study = open_study(path)
        except Exception as error:  # one broken study must not end the listing
            entries.append(StudyEntry(str(path), relative, "?", 0, 0, 0, 0, None, None, str(error)))
            continue
        c = study.counts
        best = study.best
        entries.append(
            StudyEntry(
                str(path),
                relative,
                study.manifest.method,
                c["complete"],
                c["pruned"],
                c["failed"],
                c["running"],
                None if best is None else best.value,
                study.manifest.created,
            )
        )
    entries.sort(key=lambda e: (e.created or "", e.file), reverse=True)
    return entries


def render_studies(entries: list[StudyEntry], folder: Path) -> RenderableType:
    table = Table(title=f"studies in {folder}", title_justify="left", header_style="bold")
    table.add_column("study", overflow="fold", min_width=12)
    table.add_column("method", no_wrap=True)
    table.add_column("trials (complete/pruned/failed/running)", justify="right")
    table.add_column("best val loss", justify="right", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True, min_width=16)
    for e in entries:
        if e.error is not None:
            table.add_row(e.file, Text("unreadable", style="dim red"), e.error, "–", "–")
            continue
        counts = f"{e.complete}/{e.pruned}/{e.failed}/{e.running}"
        table.add_row(e.file, e.method, counts, _fmt_loss(e.best_val_loss), _fmt_created(e.created))
    return table


def _when(created: str | None, path: Path) -> float:
    """Sort key: the recorded creation time, else the file's modification time."""
    if created:
        try:
            return _dt.datetime.fromisoformat(created).timestamp()
        except ValueError:
            pass
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _entry(path: Path, folder: Path) -> RunEntry:
    relative = str(path.relative_to(folder))
    try:
        record = open_run(path)
    except RunFileError as error:
        return _unreadable(path, relative, _reason(error, path))
    except Exception as error:  # a damaged file must not end the listing of the others
        return _unreadable(path, relative, f"{type(error).__name__}: {error}")
    best = record.best_val_loss
    return RunEntry(
        path=str(path),
        file=relative,
        name=record.name or None,
        status=f"{record.status} (damaged)" if record.damage else record.status,
        steps=record.steps,
        epochs=record.n_epochs,
        best_val_loss=best if best is not None and math.isfinite(best) else None,
        created=str(record.attrs.get("created", "")) or None,
    )


def _unreadable(path: Path, relative: str, reason: str) -> RunEntry:
    return RunEntry(str(path), relative, None, "unreadable", None, None, None, None, reason)


def _reason(error: RunFileError, path: Path) -> str:
    # the reader's messages start with the path, which the row already shows
    message = str(error)
    return message.removeprefix(f"{path} ").removeprefix("is ")


def list_runs(folder: str | Path) -> list[RunEntry]:
    """The run files below ``folder``, newest first; unreadable files are included as such."""
    folder = Path(folder)
    entries = [(_entry(path, folder), path) for path in find_run_files(folder)]
    entries.sort(key=lambda pair: (_when(pair[0].created, pair[1]), pair[0].file), reverse=True)
    return [entry for entry, _ in entries]


def _fmt_loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _fmt_created(created: str | None) -> str:
    if not created:
        return "–"
    return created.replace("T", " ").removesuffix("+00:00")[:16]


def render_listing(entries: list[RunEntry], folder: Path) -> RenderableType:
    """A rich table of the entries, one row per file, then why each unreadable file is unreadable."""
    table = Table(title=f"runs in {folder}", title_justify="left", header_style="bold")
    # the run's name with its file name beneath: the numbers keep their width, a long file name folds
    table.add_column("run / file", overflow="fold", min_width=12)
    table.add_column("status", no_wrap=True)
    for column in ("steps", "epochs", "best val loss"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    table.add_column("created (UTC)", no_wrap=True, min_width=16)
    notes: list[RenderableType] = []
    for entry in entries:
        if entry.error is not None:
            table.add_row(
                Text.assemble("–\n", (entry.file, "dim")),
                Text("unreadable", style=_STYLES["unreadable"]),
                *["–"] * 4,
            )
            notes.append(Text(f"{entry.file}: {entry.error}", style="dim"))
            continue
        table.add_row(
            Text.assemble(entry.name or "–", "\n", (entry.file, "dim")),
            Text(entry.status, style=_STYLES.get(entry.status, "red")),
            str(entry.steps),
            str(entry.epochs),
            _fmt_loss(entry.best_val_loss),
            _fmt_created(entry.created),
        )
    return Group(table, *notes)
