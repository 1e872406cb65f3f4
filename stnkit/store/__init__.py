"""The on-disk run store: HDF5 writer and reader."""

from __future__ import annotations

from stnkit.store.base import RunStore
from stnkit.store.reader import RunRecord, open_run

__all__ = ["RunRecord", "RunStore", "open_run"]
