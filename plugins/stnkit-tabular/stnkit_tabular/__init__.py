"""stnkit plugin: tabular data sets (``tabular``) and a best-response MLP (``stn-mlp``)."""

from __future__ import annotations

from stnkit_tabular.data import TabularData
from stnkit_tabular.model import STNMLP
from stnkit_tabular.synthetic import make_ridge_problem, ridge_solution

__all__ = ["STNMLP", "TabularData", "make_ridge_problem", "ridge_solution"]
