"""Recipe keys and values that stnkit refuses, each with what replaces it.

A recipe that still uses one gets a problem naming the removal and the replacement at the key's
dotted location, rather than a bare "unknown key" or a silent default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stnkit.errors import Problem

__all__ = ["RETIRED_KEYS", "RETIRED_VALUES", "retired_problems"]

#: dotted key → what to write instead
RETIRED_KEYS: dict[str, str] = {
    "train.warmup_steps": "was removed: use train.warmup_epochs (whole epochs of weight steps "
    "before the first hyper step)",
    "store.checkpoint_minutes": "was removed: use store.checkpoint_steps (a mid-epoch checkpoint "
    "every N weight steps; every epoch end is checkpointed anyway)",
    "train.log_every": "moved to run.log_every",
    "store.flush_seconds": "moved to run.flush_seconds",
    "train.distributed.timeout": "moved to run.distributed_timeout",
    "response.follow_lr_decay": "was removed: the response optimizer's lr always follows "
    "train.lr_decay's decays of the weight lr",
    "response.hyper_init_std": "was removed: V starts from the released code's N(0, 0.01²)",
    "response.linearize_method": "was removed: delta-stn uses torch.func.jvp and falls back to "
    "the double-backward trick by itself where jvp cannot run",
    "data.keep_classes": "was removed: benchmarks/derived_data.py writes a data set of the kept "
    "classes; point data.root at it",
    "data.train_label_noise": "was removed: benchmarks/derived_data.py writes a data set with "
    "noisy training labels; point data.root at it",
    "data.label_noise_seed": "was removed: benchmarks/derived_data.py takes --noise-seed",
}

#: (dotted key, value) → what to write instead
RETIRED_VALUES: dict[tuple[str, str], str] = {
    ("response.hypernet_input", "auto"): "'auto' was removed: use 'centered' (the default) "
    "or 'unconstrained'",
    ("response.hypernet_input", "normalized"): "'normalized' was removed: use 'centered' "
    "(the default) or 'unconstrained'",
}


def _lookup(data: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def retired_problems(data: Mapping[str, Any]) -> list[Problem]:
    """One ``(dotted.key, message)`` for each retired key or value the raw recipe ``data`` uses."""
    problems: list[Problem] = []
    for key, message in RETIRED_KEYS.items():
        if _lookup(data, key)[0]:
            problems.append((key, message))
    for (key, value), message in RETIRED_VALUES.items():
        found, actual = _lookup(data, key)
        if found and actual == value:
            problems.append((key, message))
    return problems
