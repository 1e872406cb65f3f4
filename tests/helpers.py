"""Helpers shared by the test modules (imported as ``tests.helpers``; fixtures live in conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stnkit_tabular.synthetic import make_ridge_problem, save_problem


def write_recipe(folder: Path, **changes: Any) -> Path:
    """A small ridge recipe (linear stn-mlp tuning weight decay) with its data, in ``folder``."""
    save_problem(make_ridge_problem(n_train=40, n_valid=100, n_test=100), folder / "ridge.npz")
    recipe: dict[str, Any] = {
        "name": "ridge",
        "seed": 0,
        "data": {"name": "tabular", "path": "ridge.npz", "batch_size": 20, "valid_batch_size": 50},
        "model": {"name": "stn-mlp", "hidden_sizes": []},
        "hyperparameters": {"weight_decay": {"kind": "positive", "init": 0.01, "per_example": False}},
        "train": {
            "epochs": 4,
            "warmup_epochs": 1,
            "optimizer": {"name": "adam", "lr": 0.01},
            "hyper_optimizer": {"name": "adam", "lr": 0.1},
        },
        "run": {"log_every": 2},
        "store": {"dir": str(folder / "runs")},
    }
    for key, value in changes.items():
        node = recipe
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
