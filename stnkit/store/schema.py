"""Names and version of the run-file layout. ``docs/store.md`` documents it for readers."""

from __future__ import annotations

__all__ = ["FORMAT", "SCHEMA_VERSION"]

FORMAT = "stnkit-run"
SCHEMA_VERSION = 1

#: seconds without a heartbeat after which a run marked "running" is presumed dead
STALE_AFTER_MIN = 120.0
