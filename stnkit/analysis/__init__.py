"""Analysis of stored runs: summaries now; comparison, plots and export build on these."""

from __future__ import annotations

from stnkit.analysis.show import render_run

__all__ = ["render_run"]
