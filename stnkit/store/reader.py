"""Reading run files: :func:`open_run` returns a :class:`RunRecord` of numpy arrays.

Files are opened with ``swmr=True`` so a run that is still being written can be read; the
record is a snapshot, :meth:`RunRecord.refresh` takes a new one. Reading never executes code
from the file: the recipe is parsed with ``yaml.safe_load`` and nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from stnkit.errors import RunFileError, UsageError
from stnkit.store import schema
from stnkit.store.lock import writer_alive
from stnkit.store.schema import FORMAT, ROWS, SCHEMA_VERSION, STALE_AFTER_MIN
from stnkit.store.swmr import open_swmr

__all__ = ["TABLES", "RunRecord", "check_layout", "open_run", "read_table", "reading"]

#: the record's trajectory tables, in the order exports list them
TABLES = tuple(declared.name for declared in schema.TABLES)

#: leading columns of each table in :meth:`RunRecord.table` (the file stores them alphabetically)
_ORDER = {
    declared.name: tuple(c.name for c in declared.columns if not c.per_hyperparameter)
    for declared in schema.TABLES
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: what h5py raises for a file it cannot parse: damaged structure (RuntimeError, OSError), a
#: link to nothing (KeyError), a value of the wrong kind (ValueError, TypeError)
_H5PY_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0].strip("'\" ")
    return text if len(text) <= 140 else text[:137] + "..."


def diagnose(path: Path) -> str:
    """What is wrong with a run file h5py could not read, in a few words, from its bytes alone."""
    if not path.exists():
        return "it does not exist"
    if path.is_dir():
        return "it is a folder, not a run file"
    try:
        with path.open("rb") as handle:
            head = handle.read(36)
        size = path.stat().st_size
    except OSError as error:
        return f"it cannot be read ({error.strerror or error})"
    if size == 0:
        return "it is empty (0 bytes)"
    if not head.startswith(_SIGNATURE):
        if _SIGNATURE.startswith(head):
            return f"it is truncated to {size} bytes"
        return "it is not an HDF5 file"
    if len(head) < 36:
        return f"it is truncated to {size} bytes"
    if head[8] >= 2:  # superblock versions 2 and 3 record the file's end address at byte 28
        end = int.from_bytes(head[28:36], "little")
        if 0 < size < end:
            return f"it is truncated ({size} of its {end} bytes are there)"
    return "it is damaged"


def damaged(path: Path, error: BaseException) -> RunFileError:
    """The one-line error for a run file h5py failed on: the file, what is wrong, h5py's reason."""
    what, reason = diagnose(path), _first_line(error)
    if what != "it is damaged":
        return RunFileError(f"{path} is not a readable HDF5 run file: {what} ({reason})")
    if isinstance(error, KeyError) and "checksum" not in reason:
        return RunFileError(f"{path} is missing part of the run layout ({reason})")
    part = "fails its checksum" if "checksum" in reason else "cannot be read"
    return RunFileError(f"{path} is damaged: part of its structure {part} ({reason})")


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn h5py's and the operating system's errors while reading ``path`` into one
    :class:`RunFileError` naming the file and what is wrong with it."""
    try:
        yield
    except RunFileError:
        raise
    except _H5PY_ERRORS as error:
        raise damaged(path, error) from None


def check_layout(path: Path, attrs: Any) -> None:
    """Refuse a file that is not a stnkit run file, or one of a layout version this stnkit does
    not read."""
    if _text(attrs.get("format", "")) != FORMAT:
        raise RunFileError(f"{path} is not a stnkit run file (no format={FORMAT!r} attribute)")
    raw = attrs.get("schema_version")
    try:
        version = int(raw)
    except (TypeError, ValueError):
        version = None
    if version != SCHEMA_VERSION:
        shown = "none" if raw is None else str(_text(raw) if version is None else version)
        advice = ": upgrade stnkit" if version is not None and version > SCHEMA_VERSION else ""
        raise RunFileError(
            f"{path} has run-file layout version {shown}; this stnkit writes version {SCHEMA_VERSION} "
            f"and reads no other{advice}"
        )


#: reads of a column whose checksum fails before it counts as damaged
_READ_TRIES = 3


def _fill(dtype: np.dtype[Any]) -> Any:
    return np.nan if np.issubdtype(dtype, np.floating) else 0


def _read_column(dataset: h5py.Dataset, rows: int | None, damage: list[str] | None) -> np.ndarray:
    """A column's admitted rows. A chunk failing its checksum (fletcher32) is an error, or, when
    ``damage`` collects problems, its rows are blanked (NaN, or 0 for integers) and named there."""
    if not dataset.shape:
        return np.asarray(dataset[()])
    stop = dataset.shape[0] if rows is None else min(rows, dataset.shape[0])
    reason = ""
    for attempt in range(_READ_TRIES):
        try:
            return np.asarray(dataset[:stop])
        except OSError as error:
            reason = _first_line(error)
            # a live writer may be rewriting the chunk this instant: another look settles it
            time.sleep(0.05 * (attempt + 1))
    where = dataset.name.lstrip("/")
    if damage is None or not dataset.chunks:
        raise RunFileError(
            f"{dataset.file.filename}: {where} fails its checksum ({reason}): "
            "the data on disk is damaged and is not used"
        )
    step = dataset.chunks[0]
    column = np.full((stop, *dataset.shape[1:]), _fill(dataset.dtype), dtype=dataset.dtype)
    bad: list[tuple[int, int]] = []
    for start in range(0, stop, step):
        end = min(start + step, stop)
        try:
            column[start:end] = dataset[start:end]
        except OSError:
            bad.append((start + 1, end))
    rows_text = ", ".join(f"rows {a}-{b}" if a != b else f"row {a}" for a, b in bad)
    damage.append(f"{where}: {rows_text} fail their checksum (shown as missing)")
    return column


def read_table(group: h5py.Group, damage: list[str] | None = None) -> dict[str, np.ndarray]:
    """The columns of a table group, cut to the rows its writer has admitted.

    Every column is preallocated and the rows written are counted in ``_rows``, which the writer
    updates only after the rows themselves; it is read first, so every row it admits is
    complete. Groups of scalars (the final metrics) have no count: their values are taken whole.
    Columns carry a fletcher32 checksum per chunk: a damaged chunk raises
    :class:`RunFileError`, or with ``damage`` given is blanked and described there.
    """
    rows = int(group[ROWS][()]) if ROWS in group else None
    columns: dict[str, np.ndarray] = {}
    for name in group:
        item = group[name]  # by name: h5py's items() would turn a damaged entry into None silently
        if isinstance(item, h5py.Dataset) and name != ROWS:
            columns[name] = _read_column(item, rows, damage)
    return columns


@dataclass
class RunRecord:
    """A snapshot of one run file.

    ``hyper``, ``train`` and ``epochs``: the trajectory tables as ``{column: array}``, their
    columns as :data:`stnkit.store.schema.TABLES` declares them (``docs/store.md`` lists them);
    ``epochs["metrics"]`` is a dict of the task's validation metrics. Columns of ``values`` and
    ``scales`` follow :attr:`hyperparameters`.
    """

    path: Path
    attrs: dict[str, Any]
    hyperparameters: tuple[str, ...]
    kinds: tuple[str, ...]
    integer: tuple[bool, ...]
    initial: dict[str, float]
    initial_scales: dict[str, float]
    final: dict[str, float]
    best: dict[str, float]
    hyper: dict[str, np.ndarray]
    train: dict[str, np.ndarray]
    epochs: dict[str, Any]
    test: dict[str, float]
    best_valid: dict[str, float]
    heartbeat: float = math.nan
    extras: dict[str, Any] = field(default_factory=dict)
    #: parts of the tables that failed their checksum when read (blanked in the arrays)
    damage: list[str] = field(default_factory=list)

    # -- metadata -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.attrs.get("name", ""))

    @property
    def status(self) -> str:
        """The recorded status; a "running" run whose writer stopped is reported "interrupted"."""
        status = str(self.attrs.get("status", "unknown"))
        if status == "running" and self.stale:
            return "interrupted"
        return status

    @property
    def stale(self) -> bool:
        """True when the file says "running" but its writer is gone: no process holds its writer
        lock, or (for files written elsewhere) its heartbeat stopped long ago."""
        if str(self.attrs.get("status")) != "running":
            return False
        if not writer_alive(self.path):
            return True
        if not math.isfinite(self.heartbeat):
            return False
        limit = max(STALE_AFTER_MIN, 3 * float(self.attrs.get("flush_seconds", 5.0)))
        return time.time() - self.heartbeat > limit

    @property
    def metadata(self) -> dict[str, str]:
        """Extra facts stored with the run (``stnkit.run(metadata=...)``), e.g. ``source_run``."""
        return {k[5:]: str(v) for k, v in self.attrs.items() if k.startswith("meta.")}

    @property
    def base_dir(self) -> Path | None:
        """The folder the recipe's relative paths resolve against, if recorded."""
        value = self.attrs.get("recipe_base_dir")
        return Path(value) if value else None

    @property
    def recipe_text(self) -> str:
        return str(self.attrs.get("recipe", ""))

    @property
    def recipe(self) -> dict[str, Any]:
        """The effective recipe as a dict (parsed safely: YAML tags that would build Python
        objects are errors, never executed)."""
        try:
            data = yaml.safe_load(self.recipe_text) if self.recipe_text else {}
        except yaml.YAMLError as error:
            raise RunFileError(f"{self.path}: its stored recipe is not plain YAML ({error})") from None
        return data if isinstance(data, dict) else {}

    @property
    def steps(self) -> int:
        if int(self.attrs.get("steps", -1)) >= 0:  # -1: written at the end, not yet
            return int(self.attrs["steps"])
        candidates = [self.train.get("step"), self.hyper.get("step"), self.epochs.get("step")]
        return max((int(c[-1]) for c in candidates if c is not None and len(c)), default=0)

    @property
    def parameters(self) -> dict[str, int] | None:
        """The model's size: ``elementary`` (the plain network) and ``response`` (what the
        best-response branches and V add; 0 for a plain run). ``None`` for files that predate it."""
        if "parameters_elementary" not in self.attrs or "parameters_response" not in self.attrs:
            return None
        return {
            "elementary": int(self.attrs["parameters_elementary"]),
            "response": int(self.attrs["parameters_response"]),
        }

    @property
    def n_epochs(self) -> int:
        return len(self.epochs.get("epoch", ()))

    @property
    def best_val_loss(self) -> float | None:
        losses = self.epochs.get("val_loss")
        if losses is None or not len(losses) or not np.isfinite(losses).any():
            return None
        return float(np.nanmin(losses))

    def problems(self) -> list[str]:
        """Ways the tables disagree with each other or with the run's end-of-run counters (a
        record damaged by a crash, or by the resume bug of stnkit 0.x that emptied tables); empty
        for a healthy record. Checks the counters only once the run has ended."""
        found: list[str] = []
        for table, column in (("hyper", "hyper_step"), ("epochs", "epoch")):
            values = np.asarray(getattr(self, table).get(column, ()))
            if len(values) and not np.array_equal(values, np.arange(1, len(values) + 1)):
                found.append(f"the {table} table's {column} column is not 1, 2, ... (rows lost or repeated)")
        steps = np.asarray(self.train.get("step", ()))
        if len(steps) > 1 and np.any(np.diff(steps) <= 0):
            found.append("the train table's steps are not increasing (rows repeated)")
        status = str(self.attrs.get("status", ""))
        last_step, last_epoch = int(self.attrs.get("steps", -1)), int(self.attrs.get("epochs", -1))
        if status == "running" or last_step < 0:
            return found
        exact = status == "completed"
        rows = self.n_epochs
        if rows > last_epoch or rows < last_epoch - (0 if exact else 1):
            found.append(f"{rows} epoch rows, but the run ended in epoch {last_epoch}")
        log_every = (self.recipe.get("run") or {}).get("log_every")
        if isinstance(log_every, int) and log_every > 0:
            expected, got = last_step // log_every, len(steps)
            if got > expected or got < expected - (0 if exact else 1):
                found.append(
                    f"{got} train rows, but {last_step} weight steps logged every {log_every} make {expected}"
                )
        hyper_steps = np.asarray(self.hyper.get("hyper_step", ()))
        epoch_hyper = np.asarray(self.epochs.get("hyper_step", ()))
        if exact and len(epoch_hyper) and int(epoch_hyper[-1]) != len(hyper_steps):
            found.append(
                f"{len(hyper_steps)} hyper rows, but the last epoch ended at hyper step {epoch_hyper[-1]}"
            )
        best = int(self.attrs.get("best_epoch", -1))
        if best > rows:
            found.append(f"the best epoch is {best}, but the epochs table has {rows} rows")
        return found

    def require_intact(self, action: str) -> None:
        """Refuse to ``action`` (plot, export, replay...) a record whose data failed its checksum."""
        if self.damage:
            more = f" (and {len(self.damage) - 1} more)" if len(self.damage) > 1 else ""
            raise RunFileError(
                f"{self.path} is damaged: {self.damage[0]}{more}; refusing to {action} damaged data"
            )

    # -- trajectories ---------------------------------------------------------------------------

    def values(self, name: str) -> np.ndarray:
        """Constrained trajectory of one hyperparameter over hyper steps, ``(N,)``."""
        return self.hyper["values"][:, self._index(name)]

    def scales(self, name: str) -> np.ndarray:
        """Perturbation scale σ of one hyperparameter over hyper steps, ``(N,)``."""
        return self.hyper["scales"][:, self._index(name)]

    def _index(self, name: str) -> int:
        try:
            return self.hyperparameters.index(name)
        except ValueError:
            raise KeyError(
                f"{name!r} is not a hyperparameter of this run ({', '.join(self.hyperparameters)})"
            ) from None

    def table(self, name: str) -> dict[str, np.ndarray]:
        """One trajectory table (``hyper``, ``train`` or ``epochs``) as flat, named 1-D columns.

        ``(N, H)`` arrays become one column per hyperparameter: the value under the
        hyperparameter's name, σ under ``sigma.<name>``; epoch metrics become ``metric.<name>``.
        A hyperparameter whose name clashes with a plain column (``step``, ``lr``, ...) is named
        ``value.<name>`` instead. These are the column names of :meth:`to_pandas` and of
        ``stnkit export``.
        """
        if name not in TABLES:
            raise KeyError(f"no table {name!r} (tables: {', '.join(TABLES)})")
        source: dict[str, Any] = getattr(self, name)
        plain = [key for key in source if key not in ("values", "scales", "metrics")]
        order = [key for key in _ORDER[name] if key in plain] + sorted(set(plain) - set(_ORDER[name]))
        columns: dict[str, np.ndarray] = {key: np.asarray(source[key]) for key in order}
        width = len(self.hyperparameters)
        values = source.get("values")
        scales = source.get("scales")
        rows = len(next(iter(columns.values()), ()))
        if values is not None:
            for i, hyper in enumerate(self.hyperparameters):
                columns[hyper if hyper not in plain else f"value.{hyper}"] = _column(values, i, width, rows)
        if scales is not None:
            for i, hyper in enumerate(self.hyperparameters):
                columns[f"sigma.{hyper}"] = _column(scales, i, width, rows)
        for metric, series in source.get("metrics", {}).items():
            columns[f"metric.{metric}"] = np.asarray(series)
        return columns

    def to_pandas(self) -> dict[str, Any]:
        """The trajectory tables as pandas DataFrames: ``{"hyper": df, "train": df, "epochs": df}``.

        Columns are those of :meth:`table`. pandas is optional; without it this raises
        :class:`~stnkit.errors.UsageError`.
        """
        try:
            # imported by name: pandas is an optional dependency and ships no type information
            pandas = importlib.import_module("pandas")
        except ImportError:
            raise UsageError("pandas is not installed: pip install pandas") from None
        return {name: pandas.DataFrame(self.table(name)) for name in TABLES}

    def summary(self) -> dict[str, Any]:
        """The JSON summary ``stnkit show --json`` prints."""
        best_epoch = int(self.attrs.get("best_epoch", -1))
        return {
            "path": str(self.path),
            "name": self.name,
            "status": self.status,
            "message": str(self.attrs.get("message", "")),
            "created": str(self.attrs.get("created", "")),
            "ended": str(self.attrs.get("ended", "")) or None,
            "response": str(self.attrs.get("response", "")),
            "seed": int(self.attrs.get("seed", 0)),
            "device": str(self.attrs.get("device", "")),
            "world_size": int(self.attrs.get("world_size", 1)),
            "backend": str(self.attrs.get("backend", "")),
            "stnkit_version": str(self.attrs.get("stnkit_version", "")),
            "torch_version": str(self.attrs.get("torch_version", "")),
            "parameters": self.parameters,
            "problems": self.problems(),
            "damaged": list(self.damage),
            "steps": self.steps,
            "hyper_steps": int(self.hyper["hyper_step"][-1]) if len(self.hyper.get("hyper_step", ())) else 0,
            "epochs": self.n_epochs,
            "best_epoch": best_epoch if best_epoch > 0 else None,
            "best_val_loss": _json_float(self.best_val_loss),
            "best_valid": {k: _json_float(v) for k, v in self.best_valid.items()},
            "test": {k: _json_float(v) for k, v in self.test.items() if math.isfinite(v)},
            "epoch_metrics": {
                k: [_json_float(x) for x in v] for k, v in self.epochs.get("metrics", {}).items()
            },
            "hyperparameters": {
                name: {
                    "kind": self.kinds[i],
                    "initial": _json_float(self.initial.get(name)),
                    "final": _json_float(self.final.get(name)),
                    "best": _json_float(self.best.get(name)),
                    "final_scale": _json_float(
                        float(self.hyper["scales"][-1, i]) if len(self.hyper.get("scales", ())) else None
                    ),
                }
                for i, name in enumerate(self.hyperparameters)
            },
        }

    def refresh(self) -> RunRecord:
        """A new snapshot of the same file (for runs still being written)."""
        return open_run(self.path)


def _json_float(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _column(matrix: np.ndarray, index: int, width: int, rows: int) -> np.ndarray:
    """Column ``index`` of an ``(N, H)`` array; an empty table's array may come back 1-D."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != width:
        return np.full(rows, np.nan) if rows else np.zeros(0)
    return matrix[:, index]


def _named(names: tuple[str, ...], row: np.ndarray) -> dict[str, float]:
    return {name: float(row[i]) for i, name in enumerate(names)}


def open_run(path: str | Path) -> RunRecord:
    """Read a run file into a :class:`RunRecord`. Raises :class:`RunFileError` if it is not one
    or cannot be read; table data failing its checksum is blanked and listed in ``damage``."""
    path = Path(path)
    if not path.exists():
        raise RunFileError(f"run file not found: {path}")
    if path.is_dir():
        raise RunFileError(f"{path} is a folder, not a run file")
    with reading(path):
        try:
            handle = open_swmr(path)
        except OSError:
            try:
                handle = h5py.File(path, "r")
            except OSError as error:
                if "h5clear" in str(error):  # a file another tool left open "r+"
                    raise RunFileError(
                        f"{path} was left flagged as open for writing by a process killed while ending "
                        f"the run; `h5clear -s {path}` clears the flag, after which it can be read"
                    ) from None
                raise
        with handle as file:
            attrs = {key: _attr(value) for key, value in file.attrs.items()}
            check_layout(path, attrs)
            damage: list[str] = []
            hp = file["hyperparameters"]
            names = tuple(_text(n) for n in hp["names"][()])
            record = RunRecord(
                path=path,
                attrs=attrs,
                hyperparameters=names,
                kinds=tuple(_text(k) for k in hp["kinds"][()]),
                integer=tuple(bool(x) for x in hp["integer"][()]),
                initial=_named(names, hp["initial"][()]),
                initial_scales=_named(names, hp["initial_scales"][()]),
                final=_named(names, hp["final"][()]),
                best=_named(names, hp["best"][()]),
                hyper=read_table(file["hyper"], damage),
                train=read_table(file["train"], damage),
                epochs={
                    **read_table(file["epochs"], damage),
                    "metrics": read_table(file["epochs/metrics"], damage),
                },
                test={k: float(v) for k, v in read_table(file["test"]).items()},
                best_valid={k: float(v) for k, v in read_table(file["best_valid"]).items()},
                heartbeat=float(file["heartbeat"][()]) if "heartbeat" in file else math.nan,
                damage=damage,
            )
    _trim(record)
    return record


def _trim(record: RunRecord) -> None:
    """A reader may catch a writer between columns of one flush: keep whole rows only."""
    for table in (record.hyper, record.train):
        _trim_table(table)
    epoch_columns = {k: v for k, v in record.epochs.items() if k != "metrics"}
    n = min((len(v) for v in [*epoch_columns.values(), *record.epochs["metrics"].values()]), default=0)
    for key, value in epoch_columns.items():
        record.epochs[key] = value[:n]
    record.epochs["metrics"] = {k: v[:n] for k, v in record.epochs["metrics"].items()}


def _trim_table(table: dict[str, np.ndarray]) -> None:
    n = min((len(v) for v in table.values()), default=0)
    for key in table:
        table[key] = table[key][:n]


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
