"""A worker process of a study: ask Optuna for a point, train the plain network there, tell.

``stnkit tune`` starts ``--jobs`` of these (``python -m stnkit.tune.worker FOLDER ...``); they
share the study through its Optuna storage. Asking is serialised by a lock on the folder so that
two workers never both start the last trial of ``--trials``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stnkit.errors import StnkitError
from stnkit.events import EpochEnd, RunEnd, RunInfo, StepEnd, StopRun
from stnkit.markers import hookimpl
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import parse_recipe
from stnkit.tune.space import SearchSpace, trial_recipe_data
from stnkit.tune.study import (
    FAILURE_LIMIT,
    Manifest,
    counted,
    fail_and_retry,
    failure_run,
    hold,
    import_optuna,
    load_optuna_study,
    make_pruner,
    make_sampler,
    read_manifest,
    session_deadline,
    trial_lock_path,
)

__all__ = ["TrialObserver", "main", "work"]

CLAIM_LOCK = "claim.lock"


class TrialObserver:
    """Lifecycle plugin of one trial's run: records the run file in the trial, reports each
    epoch's validation loss to Optuna and ends the run as ``pruned`` when the pruner says so."""

    def __init__(self, trial: Any, folder: Path, prune: bool, stop: dict[str, bool] | None = None) -> None:
        self.trial = trial
        self.folder = folder
        self.prune = prune
        self.stop = stop if stop is not None else {}

    @hookimpl
    def stnkit_run_start(self, run: RunInfo) -> None:
        if run.path is not None:
            self.trial.set_user_attr("run", os.path.relpath(run.path, self.folder))

    @hookimpl
    def stnkit_step_end(self, run: RunInfo, step: StepEnd) -> None:
        # a Ctrl-C that came before the run could install its own handler
        if self.stop.get("asked"):
            raise StopRun("interrupted", f"stopped by the user at weight step {step.step}")

    @hookimpl
    def stnkit_epoch_end(self, run: RunInfo, epoch: EpochEnd) -> None:
        self.trial.report(epoch.val_loss, step=epoch.epoch)
        if self.prune and self.trial.should_prune():
            raise StopRun("pruned", f"pruned by the median pruner after epoch {epoch.epoch}")


def _tell(study: Any, trial: Any, end: RunEnd, optuna: Any) -> None:
    trial.set_user_attr("status", end.status)
    trial.set_user_attr("best_epoch", end.best_epoch)
    trial.set_user_attr("test", {k: v for k, v in end.test_metrics.items() if math.isfinite(v)})
    trial.set_user_attr(
        "best_val_metrics", {k: v for k, v in end.best_val_metrics.items() if math.isfinite(v)}
    )
    if end.status == "completed" and end.best_val_loss is not None and math.isfinite(end.best_val_loss):
        study.tell(trial, end.best_val_loss)
    elif end.status == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        trial.set_user_attr("failed_because", end.message or end.status)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def work(folder: Path, worker: int, budget_left: float | None, plugins: Plugins | None = None) -> int:
    """Run trials until the study has its count, the budget is spent or a stop is asked for.

    Returns 130 when interrupted (Ctrl-C or SIGTERM: the running trial is checkpointed, marked
    failed and queued again), else 0.
    """
    optuna = import_optuna()
    plugins = plugins or load_plugins()
    manifest: Manifest = read_manifest(folder)
    study = load_optuna_study(
        manifest, folder, sampler=make_sampler(manifest, worker), pruner=make_pruner(manifest)
    )
    space = SearchSpace.from_json(manifest.space)
    base = yaml.safe_load(manifest.recipe)
    if not isinstance(base, dict) or not isinstance(base.get("name"), str):
        raise StnkitError(f"{folder / 'study.json'}: its recipe is not a recipe mapping with a name")
    stop = {"asked": False}

    def on_signal(signum: int, frame: Any) -> None:
        # between trials: stop before asking for another; during one the runner's own handler
        # (installed over this one) stops the run first and then puts this one back
        stop["asked"] = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)

    while not stop["asked"]:
        with hold(folder / CLAIM_LOCK):
            if budget_left is not None:
                deadline = session_deadline(folder, budget_left)  # before reading the clock
                if time.time() >= deadline:
                    break
            trials = study.get_trials(deepcopy=False)
            if manifest.trials is not None and len(counted(trials)) >= manifest.trials:
                break
            if len(failure_run(trials, manifest.sessions)) >= FAILURE_LIMIT:
                break  # the driver reports the first failure of the run
            trial = study.ask()
            number = trial.number
            lock = hold(trial_lock_path(folder, number))
            lock.__enter__()  # taken before the claim lock is let go: never seen running but unheld
        try:
            trial.set_user_attr("session", manifest.sessions)
            try:
                result = _run_trial(trial, manifest, space, base, folder, plugins, stop)
            except Exception as error:  # a trial that cannot run is a failed trial, not a crash
                message = str(error) if isinstance(error, StnkitError) else f"{type(error).__name__}: {error}"
                trial.set_user_attr("failed_because", (message.strip().splitlines() or ["?"])[0])
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            if result.status == "interrupted":
                _interrupted(study, trial)
                return 130
            _tell(study, trial, result.end, optuna)
        except KeyboardInterrupt:
            _interrupted(study, trial)
            return 130
        finally:
            with contextlib.suppress(Exception):
                lock.__exit__(None, None, None)
    return 130 if stop["asked"] else 0


def _run_trial(
    trial: Any,
    manifest: Manifest,
    space: SearchSpace,
    base: dict[str, Any],
    folder: Path,
    plugins: Plugins,
    stop: dict[str, bool],
) -> Any:
    from stnkit.runner import run as run_recipe

    values = space.sample(trial)
    name = f"{base['name']}-trial-{trial.number:04d}"
    data = trial_recipe_data(base, space, values, name)
    recipe = parse_recipe(data, base_dir=Path(manifest.base_dir), source=manifest.recipe_source)
    observer = TrialObserver(trial, folder, manifest.prune == "median", stop)
    return run_recipe(
        recipe,
        out_dir=folder,
        plugins=plugins,
        observers=[observer],
        metadata={"study": str(folder.resolve()), "trial": str(trial.number)},
    )


def _interrupted(study: Any, trial: Any) -> None:
    """Ctrl-C or SIGTERM during a trial: failed, saying why, and its point queued again."""
    trial.set_user_attr("failed_because", "interrupted by the user")
    fail_and_retry(study, trial.number, "interrupted by the user", trial.params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stnkit.tune.worker")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--budget-left", type=float, default=None, help="seconds of the budget left")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    _die_with_parent()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return work(args.folder, args.worker, args.budget_left)
    except StnkitError as error:
        print(json.dumps({"error": str(error)}), file=sys.stderr)
        return error.exit_code


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker if the ``stnkit tune`` process dies (a SIGKILL
    of the coordinator must not leave trials training unsupervised); its trial then shows as
    abandoned and ``--resume`` retries it."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
