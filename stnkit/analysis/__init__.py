"""Analysis of stored runs: summaries, listings, comparisons, plots, exports and replays.

Each command of the CLI has its logic here, one module per command, usable from Python:
:mod:`~stnkit.analysis.show`, :mod:`~stnkit.analysis.listing` (``ls``),
:mod:`~stnkit.analysis.compare`, :mod:`~stnkit.analysis.plot`, :mod:`~stnkit.analysis.export` and
:mod:`~stnkit.analysis.replay`. ``plot`` is not imported here: it loads matplotlib, which only
plotting needs; nor is ``replay.replay``, so that ``stnkit.analysis.replay`` stays the module.
"""

from __future__ import annotations

from stnkit.analysis.compare import Comparison, compare_runs
from stnkit.analysis.export import record_to_json, write_export
from stnkit.analysis.listing import RunEntry, list_runs
from stnkit.analysis.replay import ReplayPlan, plan_replay, schedule_from
from stnkit.analysis.show import render_run

__all__ = [
    "Comparison",
    "ReplayPlan",
    "RunEntry",
    "compare_runs",
    "list_runs",
    "plan_replay",
    "record_to_json",
    "render_run",
    "schedule_from",
    "write_export",
]
