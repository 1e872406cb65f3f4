"""``stnkit replay``: train the plain network on the schedule (or the final values) a run found.

This is the paper's check that an STN's hyperparameter *schedule* is worth something on its own:
the same recipe, trained with the ``fixed`` response, following the values the tuning run chose.

The schedule is piecewise constant. The values a run recorded at hyper step ``i`` were produced
after weight step ``hyper.step[i]``, so the tuning run's weights first used them at weight step
``hyper.step[i] + 1``; the replay switches to them at that same step. The initial values hold from
weight step 1 until the first switch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stnkit.analysis.common import final_values
from stnkit.analysis.kinds import rebuild_kinds, strictly_inside
from stnkit.errors import RunFileError
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import Recipe, parse_recipe
from stnkit.runner import RunResult
from stnkit.runner import run as run_recipe
from stnkit.store.reader import RunRecord, open_run

__all__ = ["ReplayPlan", "plan_replay", "replay", "schedule_from"]

ReplayMode = Literal["schedule", "final"]


@dataclass(frozen=True)
class ReplayPlan:
    """Everything a replay run needs: the recipe, where to record it, and the metadata that links
    the new run file to its source."""

    source: Path
    mode: ReplayMode
    recipe: Recipe
    out_dir: Path
    metadata: dict[str, str]


def schedule_from(record: RunRecord) -> dict[str, Any] | None:
    """The ``fixed`` response's ``schedule`` section for the run's hyper-step trajectory.

    ``steps[0]`` is 1 (the initial values); each hyper step adds an entry at ``hyper.step + 1``.
    Several hyper steps after one weight step collapse into one entry holding the last values.
    ``None`` for a run without hyperparameters.
    """
    names = record.hyperparameters
    if not names:
        return None
    steps: list[int] = [1]
    values: dict[str, list[float]] = {name: [float(record.initial[name])] for name in names}
    recorded = np.asarray(record.hyper.get("values", np.zeros((0, len(names)))), dtype=np.float64)
    for row, step in enumerate(np.asarray(record.hyper.get("step", ()), dtype=np.int64).tolist()):
        start = step + 1
        if start > steps[-1]:
            steps.append(start)
            for column in values.values():
                column.append(column[-1])
        for i, name in enumerate(names):
            value = float(recorded[row, i])
            # a missing (NaN) entry keeps the value in force rather than poisoning the replay
            if math.isfinite(value):
                values[name][-1] = value
    return {"steps": steps, "values": values}


def _final_declarations(record: RunRecord, declared: Mapping[str, Any], plugins: Plugins) -> dict[str, Any]:
    """The recipe's hyperparameter declarations with ``init`` set to the run's final values."""
    kinds = rebuild_kinds(record, plugins)
    finals = final_values(record)
    updated = copy.deepcopy(dict(declared))
    for i, name in enumerate(record.hyperparameters):
        if name not in updated or not isinstance(updated[name], dict):
            continue
        value = finals[name]
        if not math.isfinite(value):
            continue  # nothing was recorded: the declared init stands
        kind = kinds.get(name)
        if kind is not None:
            value = strictly_inside(kind, value)
        elif record.integer[i]:
            value = float(math.floor(value))
        updated[name]["init"] = value
    return updated


def _base_dir(record: RunRecord) -> Path:
    """The folder the run's relative data paths resolved against.

    Newer run files record it. For older ones, the folder of the recipe file the run started from
    (if that file is found from the current folder) is what ``stnkit run`` used; else the current
    folder.
    """
    if record.base_dir is not None:
        return record.base_dir
    source = str(record.attrs.get("recipe_source", ""))
    if source and Path(source).is_file():
        return Path(source).resolve().parent
    return Path.cwd()


def plan_replay(
    path: str | Path,
    *,
    final: bool = False,
    out_dir: str | Path | None = None,
    plugins: Plugins | None = None,
) -> ReplayPlan:
    """Build the replay of the run file ``path`` without running it.

    ``final=False`` follows the run's schedule; ``final=True`` holds the run's final values fixed.
    ``out_dir`` defaults to the source run's folder. Relative data paths in the stored recipe
    resolve against the folder recorded with the run (see :func:`_base_dir` for older files).
    """
    source = Path(path)
    record = open_run(source)
    record.require_intact("replay")
    data = record.recipe
    if not data:
        raise RunFileError(f"{source} has no stored recipe to replay")
    plugins = plugins or load_plugins()
    mode: ReplayMode = "final" if final else "schedule"
    data = copy.deepcopy(data)
    name = str(data.get("name") or record.name or "run")
    data["name"] = f"{name}-{'final' if final else 'replay'}"
    data["description"] = f"{mode} replay of {source.name}"
    if final:
        data["response"] = {"name": "fixed"}
        declared = data.get("hyperparameters")
        if isinstance(declared, dict):
            data["hyperparameters"] = _final_declarations(record, declared, plugins)
    else:
        schedule = schedule_from(record)
        data["response"] = {"name": "fixed"} if schedule is None else {"name": "fixed", "schedule": schedule}
    recipe = parse_recipe(data, base_dir=_base_dir(record), source=record.attrs.get("recipe_source") or None)
    return ReplayPlan(
        source=source,
        mode=mode,
        recipe=recipe,
        out_dir=Path(out_dir) if out_dir is not None else source.resolve().parent,
        metadata={"source_run": str(source.resolve()), "replay": mode},
    )


def replay(
    path: str | Path,
    *,
    final: bool = False,
    out_dir: str | Path | None = None,
    observers: Iterable[object] = (),
    plugins: Plugins | None = None,
) -> RunResult:
    """Replay the run file ``path`` (see :func:`plan_replay`) and return how the replay ended.

    The new run file records ``meta.source_run`` (the source's absolute path) and ``meta.replay``
    (``schedule`` or ``final``); read them back as ``open_run(result.path).metadata``.
    """
    plugins = plugins or load_plugins()
    plan = plan_replay(path, final=final, out_dir=out_dir, plugins=plugins)
    return run_recipe(
        plan.recipe, out_dir=plan.out_dir, plugins=plugins, observers=observers, metadata=plan.metadata
    )
