"""Names and version of the run-file layout. ``docs/store.md`` documents it for readers."""

from __future__ import annotations

__all__ = ["FORMAT", "ROWS", "SCHEMA_VERSION", "TABLE_CAPACITY_CAP"]

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
