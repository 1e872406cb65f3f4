"""The run-file layout: its version, names and trajectory tables, declared once.

The writer (:mod:`stnkit.store.hdf5`) creates the tables from :data:`TABLES`, the reader
(:mod:`stnkit.store.reader`) orders their columns by it, and the tables in ``docs/store.md`` are
generated from it (``python docs/store_tables.py``; a test checks they match).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FORMAT",
    "ROWS",
    "SCHEMA_VERSION",
    "TABLES",
    "TABLE_CAPACITY_CAP",
    "Column",
    "Table",
    "table",
]

FORMAT = "stnkit-run"
#: the one layout this stnkit writes and reads: preallocated tables holding a ``_rows`` count,
#: each column chunk with a fletcher32 checksum; it changes whenever the layout does, and a file
#: of another version is refused
SCHEMA_VERSION = 3

#: rows a table is allocated at most when a run starts; a longer run's tables grow (the file is
#: rebuilt with twice the room), so a huge ``train.epochs`` costs disk only as the run reaches it
TABLE_CAPACITY_CAP = 4096

#: in each table group, the number of rows written so far
ROWS = "_rows"

#: seconds without a heartbeat after which a run marked "running" is presumed dead
STALE_AFTER_MIN = 120.0


Dtype = Literal["i64", "f64", "i8"]


@dataclass(frozen=True)
class Column:
    """One column of a trajectory table: ``(rows,)``, or ``(rows, H)`` with ``per_hyperparameter``
    (one entry per declared hyperparameter, in ``hyperparameters/names`` order)."""

    name: str
    dtype: Dtype
    meaning: str
    per_hyperparameter: bool = False


@dataclass(frozen=True)
class Table:
    """A group of equal-length columns with a ``_rows`` count; ``rows`` names its length in the
    docs (``N``, ``M``, ``E``)."""

    name: str
    rows: str
    when: str
    columns: tuple[Column, ...]


_VALUES = "constrained values, one column per hyperparameter"
_SCALES = "perturbation scales σ (unconstrained units), one column per hyperparameter"

#: the trajectory tables, columns in the order readers list them; ``epochs`` also holds the group
#: ``metrics`` of the task's validation metrics, one ``(E,)`` f64 column each
TABLES: tuple[Table, ...] = (
    Table(
        "hyper",
        "N",
        "one row per hyper step",
        (
            Column("step", "i64", "weight steps so far"),
            Column("hyper_step", "i64", "hyper steps so far"),
            Column("epoch", "i64", "the epoch it fell in (numbered from 1)"),
            Column("time", "f64", "seconds since the run started"),
            Column("val_loss", "f64", "the hyper step's validation-batch objective"),
            Column("values", "f64", _VALUES + ", after the hyper step's update", per_hyperparameter=True),
            Column("scales", "f64", _SCALES + ", after the hyper step's update", per_hyperparameter=True),
        ),
    ),
    Table(
        "train",
        "M",
        "one row every `run.log_every` weight steps",
        (
            Column("step", "i64", "weight steps so far"),
            Column("epoch", "i64", "the epoch of the latest weight step (numbered from 1)"),
            Column("time", "f64", "seconds since the run started"),
            Column(
                "loss",
                "f64",
                "mean training loss over the interval: the task's loss only, without the regularizer penalty",
            ),
            Column(
                "penalty",
                "f64",
                "mean regularizer penalty over the interval (the weight steps minimised loss + penalty); "
                "NaN where a response model does not report it",
            ),
            Column("lr", "f64", "the weight optimizer's learning rate"),
        ),
    ),
    Table(
        "epochs",
        "E",
        "one row per epoch",
        (
            Column("epoch", "i64", "the epoch (numbered from 1)"),
            Column("step", "i64", "weight steps so far"),
            Column("hyper_step", "i64", "hyper steps so far"),
            Column("time", "f64", "seconds since the run started"),
            Column("train_loss", "f64", "mean training loss over the epoch, without the penalty"),
            Column("val_loss", "f64", "full validation loss at the unperturbed h"),
            Column("lr", "f64", "the weight optimizer's learning rate after any decay"),
            Column("values", "f64", _VALUES + ", at the epoch's end", per_hyperparameter=True),
            Column("scales", "f64", _SCALES + ", at the epoch's end", per_hyperparameter=True),
            Column("best", "i8", "1 where the epoch improved the best validation loss"),
        ),
    ),
)


def table(name: str) -> Table:
    """The declared table ``name``; :class:`KeyError` for another name."""
    for declared in TABLES:
        if declared.name == name:
            return declared
    raise KeyError(name)
