"""Names and version of the run-file layout. ``docs/store.md`` documents it for readers."""

from __future__ import annotations

__all__ = ["FORMAT", "READABLE_VERSIONS", "ROWS", "SCHEMA_VERSION", "TABLE_CAPACITY_CAP"]

FORMAT = "stnkit-run"
#: the layout this stnkit writes. 3: table columns carry a fletcher32 checksum per chunk;
#: 2: tables are preallocated and hold a ``_rows`` count; 1: tables grew row by row
SCHEMA_VERSION = 3

#: the layouts this stnkit reads (every earlier one: the differences are handled on reading)
READABLE_VERSIONS = (1, 2, 3)

#: rows a table is allocated at most when a run starts; a longer run's tables grow (the file is
#: rebuilt with twice the room), so a huge ``train.epochs`` costs disk only as the run reaches it
TABLE_CAPACITY_CAP = 4096

#: in each table group, the number of rows written so far (schema 2)
ROWS = "_rows"

#: seconds without a heartbeat after which a run marked "running" is presumed dead
STALE_AFTER_MIN = 120.0
