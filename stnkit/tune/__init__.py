"""Baseline searches from the same recipe: random, TPE, GP and grid search with Optuna.

``stnkit tune RECIPE --method tpe`` trains the plain network (``response: fixed``) at points that
an Optuna sampler picks within the search ranges the hyperparameters' kinds declare, one ordinary
run file per trial, in a study folder whose Optuna journal makes it resumable. Optuna is imported
by this package only (the ``stnkit[tune]`` extra installs it). See docs/tune.md.
"""

from __future__ import annotations

from stnkit.tune.driver import StudyResult, TuneOptions, create_study, drive, tune
from stnkit.tune.space import SearchSpace, search_space
from stnkit.tune.study import Manifest, is_study, parse_duration, read_manifest

__all__ = [
    "Manifest",
    "SearchSpace",
    "StudyResult",
    "TuneOptions",
    "create_study",
    "drive",
    "is_study",
    "parse_duration",
    "read_manifest",
    "search_space",
    "tune",
]
