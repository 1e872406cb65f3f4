"""What a run store is: a plugin object observing the lifecycle hooks, closed at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["RunStore"]


@runtime_checkable
class RunStore(Protocol):
    """A store records one run. It is registered as a plugin for the run's duration and so
    receives ``stnkit_run_start``/``step_end``/``epoch_end``/``run_end``; ``close`` must be
    idempotent and leave a readable file whatever happened before it.
    """

    path: Path

    def close(self) -> None: ...

    def load_checkpoint(self) -> dict[str, Any] | None:
        """For a resumed run: the latest complete checkpoint (what ``stnkit_checkpoint`` saved),
        or ``None`` when the run has none yet (it then starts again from the beginning)."""
        ...
