"""The built-in run store: one HDF5 file per run, written in SWMR mode so it can be read live.

Everything the file will hold is created when the run starts (SWMR forbids creating objects
later); rows are buffered in memory and appended at most every ``run.flush_seconds`` seconds,
at every epoch end and at the end of the run. The end-of-run attributes, created with
placeholders at the start, are overwritten in place before the file is closed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from stnkit._version import __version__
from stnkit.errors import RunFileError, RunFileWriteError
from stnkit.events import EpochEnd, RunEnd, RunInfo, StepEnd
from stnkit.killpoints import kill_point
from stnkit.markers import hookimpl
from stnkit.settings import StoreSettings
from stnkit.store import schema
from stnkit.store.checkpoint import (
    check_version,
    create_slots,
    deserialize,
    inspect_slots,
    latest_blob,
    no_intact_checkpoint,
    serialize,
    slot_capacity,
    write_checkpoint,
)
from stnkit.store.lock import WriterLock
from stnkit.store.reader import check_layout, read_table, reading
from stnkit.store.schema import FORMAT, ROWS, SCHEMA_VERSION, TABLE_CAPACITY_CAP
from stnkit.store.swmr import open_swmr

__all__ = ["HDF5Store"]

_CHUNK = 256
_STR = h5py.string_dtype()
_log = logging.getLogger("stnkit")


_DTYPES: dict[str, type[np.generic]] = {"i64": np.int64, "f64": np.float64, "i8": np.int8}


def _columns(name: str, width: int) -> dict[str, tuple[type[np.generic], int]]:
    """The declared columns of table ``name`` as :class:`_Table` takes them, ``width``
    hyperparameters wide."""
    columns = schema.table(name).columns
    return {c.name: (_DTYPES[c.dtype], width if c.per_hyperparameter else 0) for c in columns}


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class _Table:
    """An appendable group of equal-length columns, buffered until flushed.

    Every column is created at its full expected length, all chunks written, with a separate
    ``_rows`` count. Appending then only overwrites bytes inside allocated chunks: the file's
    structure (object headers, chunk indexes) never changes while the run goes, so a writer killed
    mid-flush cannot leave a header half-written — growing datasets did, in about one SIGKILL in
    fifty. Rows are written before the count that admits them; readers read ``_rows`` rows. A
    table never grows in place: the store rebuilds the file with more room first (``needed``).
    """

    def __init__(self, group: h5py.Group, columns: dict[str, tuple[Any, int]], capacity: int) -> None:
        """``columns``: name → (dtype, width); width 0 is a vector, > 0 a ``(N, width)`` matrix.
        ``capacity``: rows to allocate."""
        capacity = max(int(capacity), 1)
        self.capacity = capacity
        self.datasets: dict[str, h5py.Dataset] = {}
        self.rows: dict[str, list[Any]] = {name: [] for name in columns}
        chunk = min(_CHUNK, capacity)
        for name, (dtype, width) in columns.items():
            shape = (capacity, width) if width else (capacity,)
            ds = group.create_dataset(
                name,
                data=np.zeros(shape, dtype=dtype),
                maxshape=(None, width) if width else (None,),
                chunks=(chunk, width) if width else (chunk,),
                # a checksum per chunk: a bit flipped on disk is found when the rows are read
                fletcher32=True,
            )
            self.datasets[name] = ds
        self.count = group.create_dataset(ROWS, data=np.int64(0))
        self.length = 0

    def add(self, **row: Any) -> None:
        for name, value in row.items():
            self.rows[name].append(value)

    def extend(self, columns: dict[str, np.ndarray]) -> None:
        """Queue whole columns of rows (a rebuilt file's copied history)."""
        for name, values in columns.items():
            self.rows[name].extend(list(values))

    def pending(self) -> int:
        return len(next(iter(self.rows.values()), []))

    def needed(self) -> int:
        """Rows the table must hold once its pending rows are flushed."""
        return self.length + self.pending()

    def flush(self) -> None:
        count = self.pending()
        if not count:
            return
        end = self.length + count
        if end > self.capacity:  # the store grows the file before flushing; never resize live
            raise AssertionError(f"{end} rows do not fit a table of {self.capacity}")
        for name, ds in self.datasets.items():
            ds[self.length : end] = np.asarray(self.rows[name], dtype=ds.dtype)
            ds.flush()
            self.rows[name].clear()
        kill_point("flush-rows")
        self.count[()] = end  # only now are the new rows part of the record
        self.count.flush()
        self.length = end


#: root attributes written at the end of a run; created at the start with these placeholders so
#: that ending a run only overwrites values in place
_END_ATTRS: dict[str, Any] = {
    "ended": "",
    "steps": np.int64(-1),
    "epochs": np.int64(-1),
    "best_epoch": np.int64(-1),
    "best_val_loss": np.float64(math.nan),
}

#: root attributes a resumed run keeps from the file it continues (the rest describe this process)
_KEPT_ON_RESUME = ("created", "recipe", "recipe_source", "recipe_base_dir")

#: a checkpoint slot is made this much larger than the checkpoint that needed it
_SLOT_SLACK = 1.5


class HDF5Store:
    """Records a run into ``path``; see ``docs/store.md`` for the layout.

    The file is never restructured while it is live. Whenever it must be — created, continued by
    ``--resume``, or given more room for a table or a checkpoint — a complete new file is written
    under ``RUN.h5.new`` (history copied, every row flushed, the checkpoint written) and only then
    moved over ``RUN.h5`` with one atomic rename: a kill at any moment leaves either the old file
    or the new one, never a half-made one.
    """

    def __init__(self, path: Path, settings: StoreSettings, resume: bool = False) -> None:
        self.path = Path(path)
        self.settings = settings
        self.resume = resume
        self.lock = WriterLock(self.path)
        self._checkpoint: tuple[dict[str, Any], int] | None = None
        self.file: h5py.File | None = None
        self.run: RunInfo | None = None
        self.names: tuple[str, ...] = ()
        self.metrics: tuple[str, ...] = ()
        self.log_every = settings.log_every
        self.flush_seconds = settings.flush_seconds
        self._last_flush = 0.0
        self._loss_sum = 0.0
        self._loss_count = 0
        self._penalty_sum = 0.0
        self._closed = False
        #: the step of the newest checkpoint on disk (``None``: none yet)
        self._checkpoint_step: int | None = None
        #: whether the run file has been made (a missing one then was removed)
        self._live = False

    @property
    def _temporary(self) -> Path:
        return self.path.with_name(self.path.name + ".new")

    # -- lifecycle hooks ------------------------------------------------------------------------
    # tryfirst: the record is on disk before any other observer reacts to the event

    @hookimpl(tryfirst=True)
    def stnkit_run_start(self, run: RunInfo) -> None:
        self.run = run
        self.names = run.hyperparameters
        self.metrics = run.metrics
        if self.resume:
            self._reopen(run)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            with self._writing("creating it"):
                self._rebuild(run, self._capacities(run), slot_size=0)
        except BaseException:
            self._abandon()
            raise

    @hookimpl(tryfirst=True)
    def stnkit_step_end(self, run: RunInfo, step: StepEnd) -> None:
        if self.file is None:
            return
        if step.phase == "weight":
            self._loss_sum += step.loss
            self._penalty_sum += step.penalty
            self._loss_count += 1
            if step.step % self.log_every == 0:
                self.train.add(
                    step=step.step,
                    epoch=step.epoch,
                    time=step.time,
                    loss=self._loss_sum / self._loss_count,
                    penalty=self._penalty_sum / self._loss_count,
                    lr=step.lr,
                )
                self._loss_sum, self._penalty_sum, self._loss_count = 0.0, 0.0, 0
        else:
            self.hyper.add(
                step=step.step,
                hyper_step=step.hyper_step,
                epoch=step.epoch,
                time=step.time,
                val_loss=step.loss,
                values=self._row(step.values),
                scales=self._row(step.scales),
            )
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    @hookimpl(tryfirst=True)
    def stnkit_epoch_end(self, run: RunInfo, epoch: EpochEnd) -> None:
        if self.file is None:
            return
        self.epochs.add(
            epoch=epoch.epoch,
            step=epoch.step,
            hyper_step=epoch.hyper_step,
            time=epoch.time,
            train_loss=epoch.train_loss,
            val_loss=epoch.val_loss,
            lr=epoch.lr,
            values=self._row(epoch.values),
            scales=self._row(epoch.scales),
            best=int(epoch.best),
        )
        self.epoch_metrics.add(**{m: epoch.val_metrics.get(m, math.nan) for m in self.metrics})
        self.flush()

    @hookimpl(tryfirst=True)
    def stnkit_checkpoint(self, run: RunInfo, state: dict[str, Any], step: int) -> None:
        if self.file is None or not self.settings.checkpoints:
            return
        self.flush()  # rows up to this step are on disk before the checkpoint that covers them
        store_state = {
            "loss_sum": self._loss_sum,
            "loss_count": self._loss_count,
            "penalty_sum": self._penalty_sum,
        }
        blob = serialize({**state, "store": store_state})
        with self._writing(f"writing the checkpoint of step {step}"):
            if len(blob) > slot_capacity(self.file):
                # the file is rebuilt with larger slots, the new checkpoint written before it goes live
                self._grow(slot_size=_slot_size(len(blob)), checkpoint=(blob, step))
            else:
                write_checkpoint(self.file, blob, step)
        self._checkpoint_step = step

    @hookimpl(tryfirst=True)
    def stnkit_run_end(self, run: RunInfo, result: RunEnd) -> None:
        if self.file is None:
            return
        self.flush()  # first: a flush may rebuild the file, giving it a new handle
        with self._writing("ending the run"):
            if _room(self.path.parent) < _STATUS_ROOM:
                # the end-of-run values grow the file a little: refused here, not inside HDF5
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._end(result)

    def _end(self, result: RunEnd) -> None:
        file = self.file
        assert file is not None
        kill_point("end-tables")
        file["hyperparameters/final"][...] = self._row(result.final_values)
        file["hyperparameters/best"][...] = self._row(result.best_values)
        for name in self.metrics:
            file[f"test/{name}"][...] = result.test_metrics.get(name, math.nan)
            file[f"best_valid/{name}"][...] = result.best_val_metrics.get(name, math.nan)
        file.flush()
        kill_point("end-results")
        # Still in SWMR mode: the attributes exist since the start, so these overwrite values in
        # place: reopening the file "r+" for them would leave a killed writer's file flagged
        # "open for write", unreadable by HDF5 until h5clear. status goes last, in its
        # own flush: a file that says "completed" has every other end-of-run value on disk.
        attrs = file.attrs
        attrs.modify("message", result.message)
        attrs.modify("ended", utc_now())
        attrs.modify("steps", np.int64(result.step))
        attrs.modify("epochs", np.int64(result.epoch))
        attrs.modify("best_epoch", np.int64(-1 if result.best_epoch is None else result.best_epoch))
        attrs.modify(
            "best_val_loss", np.float64(math.nan if result.best_val_loss is None else result.best_val_loss)
        )
        file.flush()
        kill_point("end-attrs")
        attrs.modify("status", result.status)
        file.flush()
        kill_point("end-status")
        file.close()
        self.file = None
        self._closed = True
        self.lock.release()

    # -- writing --------------------------------------------------------------------------------

    def _create(self, run: RunInfo, target: Path, capacities: dict[str, int], slot_size: int) -> h5py.File:
        """The new file, built in memory (HDF5's core driver); :meth:`_rebuild` writes it out."""
        width = len(self.names)
        file = h5py.File(target, "w", driver="core", backing_store=False, libver="latest")
        self.file = file
        attrs = file.attrs
        attrs["format"] = FORMAT
        attrs["schema_version"] = SCHEMA_VERSION
        attrs["name"] = run.name
        attrs["status"] = "running"
        attrs["message"] = ""
        attrs["created"] = utc_now()
        attrs["stnkit_version"] = __version__
        attrs["torch_version"] = str(torch.__version__)
        attrs["h5py_version"] = h5py.__version__
        attrs["device"] = run.device
        attrs["world_size"] = run.world_size
        attrs["backend"] = run.backend
        attrs["seed"] = run.seed
        attrs["recipe"] = self.settings.recipe_yaml
        attrs["recipe_source"] = self.settings.recipe_source
        # relative data paths in the recipe resolve against this folder (replays need it)
        attrs["recipe_base_dir"] = str(self.settings.base_dir)
        for key, value in run.metadata.items():
            attrs[f"meta.{key}"] = str(value)
        attrs["response"] = self.settings.response
        attrs["tunes"] = run.tunes
        attrs["steps_per_epoch"] = run.steps_per_epoch
        attrs["epochs_planned"] = run.epochs
        if run.parameters_elementary is not None and run.parameters_response is not None:
            attrs["parameters_elementary"] = run.parameters_elementary
            attrs["parameters_response"] = run.parameters_response
        attrs["flush_seconds"] = self.flush_seconds
        for key, value in _END_ATTRS.items():
            attrs[key] = value
        hp = file.create_group("hyperparameters")
        hp.create_dataset("names", data=np.array(self.names, dtype=object), dtype=_STR)
        hp.create_dataset(
            "kinds", data=np.array([self._kind(n) for n in self.names], dtype=object), dtype=_STR
        )
        hp.create_dataset("integer", data=np.array([n in run.integer for n in self.names], dtype=bool))
        hp.create_dataset("initial", data=self._row(run.initial_values))
        hp.create_dataset("initial_scales", data=self._row(run.initial_scales))
        hp.create_dataset("final", data=np.full(width, math.nan))
        hp.create_dataset("best", data=np.full(width, math.nan))
        self.hyper = _Table(file.create_group("hyper"), _columns("hyper", width), capacities["hyper"])
        self.train = _Table(file.create_group("train"), _columns("train", width), capacities["train"])
        epochs = file.create_group("epochs")
        self.epochs = _Table(epochs, _columns("epochs", width), capacities["epochs"])
        self.epoch_metrics = _Table(
            epochs.create_group("metrics"), {m: (np.float64, 0) for m in self.metrics}, capacities["epochs"]
        )
        test = file.create_group("test")
        best_valid = file.create_group("best_valid")
        for name in self.metrics:
            test.create_dataset(name, data=math.nan)
            best_valid.create_dataset(name, data=math.nan)
        file.create_dataset("heartbeat", data=time.time())
        create_slots(file, slot_size)
        return file

    def _rebuild(
        self,
        run: RunInfo,
        capacities: dict[str, int],
        slot_size: int,
        source: h5py.File | None = None,
        attrs: dict[str, Any] | None = None,
        rows: tuple[int | None, int | None] = (None, None),
        checkpoints: tuple[tuple[np.ndarray, int], ...] = (),
        pending: tuple[_Table, ...] = (),
    ) -> None:
        """Write a complete run file under ``RUN.h5.new`` and move it over ``RUN.h5``.

        ``source``: a run file whose history is copied (``rows``: the last weight step and epoch
        to keep; ``None`` keeps all) and ``attrs`` set over the new file's own. ``checkpoints``:
        written in order, the last becoming ``latest``. ``pending``: the old tables, whose rows
        not yet flushed follow the copied ones. Every row is flushed before the rename, so the
        file that appears under the run's name holds everything the old one did.
        """
        previous = self.file
        saved = (self.hyper, self.train, self.epochs, self.epoch_metrics) if previous is not None else ()
        temporary = self._temporary
        temporary.unlink(missing_ok=True)
        try:
            file = self._create(run, temporary, capacities, slot_size)
            for key, value in (attrs or {}).items():
                file.attrs[key] = value
            tables = (self.hyper, self.train, self.epochs, self.epoch_metrics)
            if source is not None:
                self._copy_tables(source, *rows)
            for old, new in zip(pending, tables, strict=False):
                new.extend({name: np.asarray(values) for name, values in old.rows.items()})
            for table in tables:
                table.flush()
            for blob, step in checkpoints:
                write_checkpoint(file, blob, step)
            file["heartbeat"][...] = time.time()
            file.flush()
            # The file goes to disk through plain writes: a full disk fails them with ENOSPC and
            # nothing else. (HDF5 itself can crash when a write that grows a file fails.) Once
            # on disk, the file only has bytes overwritten in place until the next rebuild.
            image = file.id.get_file_image()
            file.close()
            _write_image(temporary, image)
            del image
            file = h5py.File(temporary, "r+", libver="latest")
            self.file = file
            self._bind(file)
            file.swmr_mode = True
            kill_point("rebuild")
            self.lock.hold(temporary)  # the writer lock moves with the file to the run's name
            os.replace(temporary, self.path)  # the open file follows its inode to the real name
        except BaseException:
            if self.file is not None and self.file is not previous:
                with contextlib.suppress(Exception):
                    self.file.close()
            self.file = previous
            if saved:
                self.hyper, self.train, self.epochs, self.epoch_metrics = saved
            temporary.unlink(missing_ok=True)
            raise
        if previous is not None:
            with contextlib.suppress(Exception):
                previous.close()
        if checkpoints:
            self._checkpoint_step = checkpoints[-1][1]
        self._live = True
        self._last_flush = time.monotonic()
        kill_point("rebuilt")

    def _bind(self, file: h5py.File) -> None:
        """Point the tables at ``file``'s datasets (the file written out from memory)."""
        for table, name in (
            (self.hyper, "hyper"),
            (self.train, "train"),
            (self.epochs, "epochs"),
            (self.epoch_metrics, "epochs/metrics"),
        ):
            group = file[name]
            table.datasets = {column: group[column] for column in table.datasets}
            table.count = group[ROWS]

    def _grow(self, slot_size: int | None = None, checkpoint: tuple[np.ndarray, int] | None = None) -> None:
        """Rebuild the live file with room for every pending row (tables at least doubled when
        they would overflow) and slots of ``slot_size`` bytes, keeping its latest checkpoint and
        adding ``checkpoint``."""
        assert self.file is not None and self.run is not None
        old = self.file
        tables = {"hyper": self.hyper, "train": self.train, "epochs": self.epochs}
        capacities = {
            name: table.capacity
            if table.needed() <= table.capacity
            else max(2 * table.capacity, table.needed())
            for name, table in tables.items()
        }
        capacities["epochs"] = max(capacities["epochs"], self.epoch_metrics.needed())
        kept = latest_blob(old)
        blobs = tuple(b for b in (kept, checkpoint) if b is not None)
        size = max(slot_capacity(old), slot_size or 0, *(len(b) for b, _ in blobs))
        self._rebuild(
            self.run,
            capacities,
            size,
            source=old,
            attrs=dict(old.attrs),
            checkpoints=blobs,
            pending=(self.hyper, self.train, self.epochs, self.epoch_metrics),
        )

    def _capacities(self, run: RunInfo) -> dict[str, int]:
        """Rows each table needs for the run's plan; a run that takes more steps than planned
        grows its tables as it reaches them (see ``_grow``)."""
        return {name: min(rows, TABLE_CAPACITY_CAP) for name, rows in run.plan.table_rows().items()}

    def _kind(self, name: str) -> str:
        return self.settings.kinds.get(name, "")

    def _row(self, values: dict[str, float] | None) -> np.ndarray:
        values = values or {}
        return np.array([values.get(name, math.nan) for name in self.names], dtype=np.float64)

    def flush(self) -> None:
        if self.file is None:
            return
        with self._writing("writing its tables"):
            if not self.path.exists():
                raise FileNotFoundError(errno.ENOENT, "the run file was removed", str(self.path))
            tables = (self.hyper, self.train, self.epochs, self.epoch_metrics)
            if any(table.needed() > table.capacity for table in tables):
                self._grow()  # flushes every pending row into the rebuilt file
            for table in (self.hyper, self.train, self.epochs, self.epoch_metrics):
                table.flush()
            assert self.file is not None
            self.file["heartbeat"][...] = time.time()
            self.file.flush()
        self._last_flush = time.monotonic()

    @contextlib.contextmanager
    def _writing(self, doing: str) -> Iterator[None]:
        """A write the disk refuses (full, gone, read-only) ends the store: the run file keeps what
        is on disk (its last checkpoint is never the slot being written), is marked ``failed``
        where the disk still allows, and the run stops with one :class:`RunFileWriteError`."""
        try:
            yield
        except (OSError, RuntimeError) as error:
            if isinstance(error, RunFileError):
                raise
            raise self._fail(doing, error) from None

    def _fail(self, doing: str, error: BaseException) -> RunFileWriteError:
        code = getattr(error, "errno", None)
        if not code:  # h5py's errors carry the system's errno in their text only
            match = re.search(r"errno = (\d+)", str(error))
            code = int(match.group(1)) if match else None
        removed = code == errno.ENOENT or (self._live and not self.path.exists())
        if removed:
            reason = "the run file (or its folder) was removed while the run was going"
        elif code:
            reason = os.strerror(code).lower()
        else:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        file, self.file = self.file, None
        if file is not None:
            # Recording the status grows the file a little; HDF5 may crash (not raise) when a
            # write that grows a file fails, so it is tried only with room to spare. A file left
            # "running" reads as "interrupted" once the lock is gone, which is true as well.
            if _room(self.path.parent) > _STATUS_ROOM:
                with contextlib.suppress(Exception):
                    file.attrs.modify("message", f"the run file could not be written: {reason}")
                    file.attrs.modify("status", "failed")
                    file.flush()
            with contextlib.suppress(Exception):
                file.close()
        self._temporary.unlink(missing_ok=True)
        self.lock.release()
        self._closed = True
        message = f"{self.path}: the run stopped: {doing} failed: {reason}"
        if removed:
            return RunFileWriteError(message)
        if self._checkpoint_step is not None:
            return RunFileWriteError(
                f"{message}; its last checkpoint (step {self._checkpoint_step}) is intact: "
                f"make room, then continue with `stnkit run --resume {self.path}`"
            )
        return RunFileWriteError(f"{message}; it has no checkpoint yet")

    def _abandon(self) -> None:
        """Creation failed half-way: leave no half-written file (nor lock) behind."""
        if self.file is not None:
            # the file may be unusable; removing it is what matters
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None
        self._temporary.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
        self.lock.release()

    def close(self) -> None:
        """Close the file if the run ended without ``stnkit_run_end`` (status stays "running")."""
        try:
            if self.file is not None:
                try:
                    self.flush()
                finally:
                    if self.file is not None:
                        self.file.close()
                    self.file = None
        finally:
            self.lock.release()

    # -- resuming -------------------------------------------------------------------------------

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Lock the run file and read its newest intact checkpoint (``stnkit run --resume``).

        ``None``: the run has no checkpoint yet; it will start again from the beginning, in the
        same file, from its stored recipe and seed."""
        self.lock.acquire()
        try:
            with reading(self.path), _open_for_reading(self.path) as file:
                slots, damaged = inspect_slots(file)
            if slots is None and damaged:
                raise no_intact_checkpoint(str(self.path), damaged)
            if slots is None:
                return None
            blob, step, slot = slots
            if damaged:
                _log.warning(f"{self.path}: {'; '.join(damaged)}; continuing from slot {slot} (step {step})")
            found = deserialize(blob.tobytes(), str(self.path)), step
            check_version(found[0], str(self.path))
        except BaseException:
            self.lock.release()
            raise
        self._checkpoint = found
        self._checkpoint_step = step
        state = found[0]
        store_state = state.pop("store")
        self._loss_sum = float(store_state["loss_sum"])
        self._loss_count = int(store_state["loss_count"])
        self._penalty_sum = float(store_state["penalty_sum"])
        return state

    def _reopen(self, run: RunInfo) -> None:
        """Continue the run file from its checkpoint (or, with none, from the start): rebuild it
        with the history the checkpoint covers. A file whose writer was killed cannot be reopened
        for writing by HDF5 (its consistency flags stay set), but it can always be read in SWMR
        mode."""
        if self._checkpoint is None:
            state: dict[str, Any] | None = None
            step, epochs_done = 0, 0
        else:
            state, step = self._checkpoint
            epochs_done = int(state["epoch"]) - (1 if int(state["batch_in_epoch"]) else 0)
        try:
            with (
                reading(self.path),
                _open_for_reading(self.path) as old,
                self._writing("continuing it"),
            ):
                attrs: dict[str, Any] = {k: old.attrs[k] for k in _KEPT_ON_RESUME if k in old.attrs}
                attrs.update({k: v for k, v in old.attrs.items() if k.startswith("meta.")})
                attrs["resumed"] = int(old.attrs.get("resumed", 0)) + 1
                attrs["resumed_from_step"] = step
                capacities = self._capacities(run)
                for name in ("hyper", "train", "epochs"):
                    # a file may have grown past the estimate
                    capacities[name] = max(capacities[name], _stored_rows(old, name))
                checkpoints: tuple[tuple[np.ndarray, int], ...] = ()
                if state is not None:
                    store_state = {
                        "loss_sum": self._loss_sum,
                        "loss_count": self._loss_count,
                        "penalty_sum": self._penalty_sum,
                    }
                    checkpoints = ((serialize({**state, "store": store_state}), step),)
                self._rebuild(
                    run,
                    capacities,
                    _slot_size(max((len(b) for b, _ in checkpoints), default=0)),
                    source=old,
                    attrs=attrs,
                    rows=(step, epochs_done),
                    checkpoints=checkpoints,
                )
        except BaseException:
            if self.file is not None:
                with contextlib.suppress(Exception):
                    self.file.close()
                self.file = None
            self.lock.release()
            raise

    def _copy_tables(self, old: h5py.File, step: int | None, epochs_done: int | None) -> None:
        """Queue ``old``'s table rows up to weight step ``step`` and epoch ``epochs_done``."""
        for group, table in ((old["hyper"], self.hyper), (old["train"], self.train)):
            columns = read_table(group)
            for name in table.datasets:  # a column this file predates (train/penalty): unknown
                if name not in columns:
                    columns[name] = np.full(len(columns["step"]), math.nan)
            keep = np.ones(len(columns["step"]), dtype=bool) if step is None else columns["step"] <= step
            table.extend(_whole_rows(columns, table, keep))
        epochs = read_table(old["epochs"])
        metrics = read_table(old["epochs/metrics"])
        n = min(len(epochs["epoch"]), *(len(v) for v in metrics.values()))
        keep = np.ones(n, dtype=bool) if epochs_done is None else epochs["epoch"][:n] <= epochs_done
        self.epochs.extend(_whole_rows(epochs, self.epochs, keep))
        self.epoch_metrics.extend(_whole_rows(metrics, self.epoch_metrics, keep))


def _write_image(path: Path, image: bytes) -> None:
    """Write a file image to ``path`` and to the disk (``fsync``), or raise ``OSError``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


#: free bytes the end-of-run values (which grow the file a little) are written with at least
_STATUS_ROOM = 256 << 10


def _room(folder: Path) -> int:
    """Free bytes on ``folder``'s file system (0 when it is gone; unbounded for a file system that
    states no size, as some network and FUSE ones do)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return 0
    if not stats.f_blocks:
        return 1 << 62
    return stats.f_bavail * stats.f_frsize


def _slot_size(length: int) -> int:
    return math.ceil(length * _SLOT_SLACK) if length else 0


def _stored_rows(file: h5py.File, table: str) -> int:
    return int(file[table][ROWS][()])


def _whole_rows(columns: dict[str, np.ndarray], table: _Table, keep: np.ndarray) -> dict[str, np.ndarray]:
    """The rows ``keep`` marks, of every column ``table`` has; only rows present in every column
    count."""
    n = min(len(keep), *(len(columns[name]) for name in table.datasets))
    return {name: columns[name][:n][keep[:n]] for name in table.datasets}


def _open_for_reading(path: Path) -> h5py.File:
    """The run file, opened for reading, of a layout this stnkit reads (h5py's errors are left to
    the caller's :func:`~stnkit.store.reader.reading`)."""
    file = open_swmr(path)
    try:
        check_layout(path, file.attrs)
    except BaseException:
        file.close()
        raise
    return file


@hookimpl(trylast=True)
def stnkit_make_store(path: Path, settings: StoreSettings, resume: bool = False) -> HDF5Store:
    return HDF5Store(path, settings, resume=resume)
