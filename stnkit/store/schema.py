"""Names and version of the run-file layout. ``docs/store.md`` documents it for readers."""

from __future__ import annotations

__all__ = ["FORMAT", "ROWS", "SCHEMA_VERSION"]

FORMAT = "stnkit-run"
#: 2: tables are preallocated and hold a ``_rows`` count (1: tables grew row by row)
SCHEMA_VERSION = 2

#: in each table group, the number of rows written so far (schema 2)
ROWS = "_rows"

#: seconds without a heartbeat after which a run marked "running" is presumed dead
STALE_AFTER_MIN = 120.0
