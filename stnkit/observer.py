"""Run observers a recipe switches on: loggers and dashboards fed by the lifecycle hooks.

An observer class is registered through ``stnkit_register_observers`` and enabled per run by the
recipe's ``observers:`` section, ``observers: {NAME: {option: value}}``, validated against the
class's ``Config`` like any other component. For each run the runner builds one instance, registers
it as a plugin for the run's duration — so its ``@hookimpl`` methods (``stnkit_run_start``,
``stnkit_step_end``, ``stnkit_epoch_end``, ``stnkit_run_end``, ``stnkit_checkpoint``) receive the
run's events — and calls :meth:`Observer.close` at the end, whatever happened.

An observer that can also replay a stored run (``stnkit export RUN --format NAME DIR``) overrides
:meth:`Observer.export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from stnkit.config import Component

if TYPE_CHECKING:
    from stnkit.store.reader import RunRecord

__all__ = ["Observer"]


class Observer(Component):
    """Base class of observers. Subclasses set ``name`` and ``Config`` and add ``@hookimpl`` methods.

    ``exports``: whether :meth:`export` is implemented (``stnkit export --format NAME``).
    """

    exports: ClassVar[bool] = False

    def __init__(self, config: Any, base_dir: Path) -> None:
        #: the validated ``observers.NAME`` section; ``base_dir`` is the folder relative paths in
        #: it resolve against (the folder stnkit runs in, like ``store.dir``)
        self.config = config
        self.base_dir = base_dir

    @classmethod
    def check_environment(cls) -> str | None:
        """Why this observer cannot run here (say, a missing package), or ``None``.

        Called while the recipe is validated, so a missing dependency is reported before any
        run file exists.
        """
        return None

    def close(self) -> None:
        """Release files and threads. Called once at the end of every run, even a failed one."""

    @classmethod
    def export(cls, record: RunRecord, output: Path, config: Any) -> list[Path]:
        """Write a stored run ``record`` in this observer's format under ``output``; return the
        files written. ``config`` is the class's default ``Config``."""
        raise NotImplementedError
