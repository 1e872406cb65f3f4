"""``stnkit tune``: create or resume a study, run its worker processes, show progress.

The process that runs ``stnkit tune`` trains nothing itself: it checks the input, writes the study
folder, starts ``--jobs`` worker processes (:mod:`stnkit.tune.worker`) with the CPU threads split
between them, and reads the study's storage twice a second for the progress view. Ctrl-C (or
SIGTERM) is passed on to the workers, which checkpoint their runs, mark those trials failed and
queue them again; ``stnkit tune --resume DIR`` then continues.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stnkit.errors import UsageError
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import load_recipe
from stnkit.tune.progress import Snapshot, StudyView, TrialRow
from stnkit.tune.space import search_space
from stnkit.tune.study import (
    DEADLINE,
    METHODS,
    PRUNERS,
    Manifest,
    StudyFolderError,
    abandon_stale_trials,
    import_optuna,
    load_optuna_study,
    make_storage,
    read_deadline,
    read_manifest,
    trial_state,
    try_hold,
    utc_now,
    utc_stamp,
    write_manifest,
)

__all__ = ["StudyResult", "TuneOptions", "create_study", "drive", "snapshot", "tune"]

DEFAULT_TRIALS = 20
DEFAULT_GRID_POINTS = 5
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class TuneOptions:
    """``stnkit tune``'s options (see the command's help)."""

    method: str = "tpe"
    trials: int | None = None
    budget: float | None = None  # seconds
    jobs: int = 1
    prune: str = "none"
    seed: int | None = None
    grid_points: int = DEFAULT_GRID_POINTS
    storage: str | None = None


@dataclass(frozen=True)
class StudyResult:
    """How a session of a study ended: ``status`` is ``completed`` or ``interrupted``."""

    folder: Path
    status: str
    snapshot: Snapshot | None


def _check_options(options: TuneOptions) -> None:
    if options.method not in METHODS:
        raise UsageError(f"unknown method {options.method!r} (use one of: {', '.join(METHODS)})")
    if options.prune not in PRUNERS:
        raise UsageError(f"--prune {options.prune!r} is not one of: {', '.join(PRUNERS)}")
    if options.jobs < 1:
        raise UsageError(f"--jobs must be at least 1 (not {options.jobs})")
    if options.trials is not None and options.trials < 1:
        raise UsageError(f"--trials must be at least 1 (not {options.trials})")
    if options.grid_points < 1:
        raise UsageError(f"--grid-points must be at least 1 (not {options.grid_points})")


def _claim_folder(parent: Path, name: str) -> Path:
    """A new study folder ``<parent>/<name>``, suffixed ``-1``, ``-2``... if taken. Made with an
    exclusive ``mkdir`` so two studies started in the same second never share a folder."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for counter in range(10_000):
            folder = parent / (f"{name}-{counter}" if counter else name)
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return folder
    except OSError as error:
        raise UsageError(f"cannot create the study folder in {parent}: {error.strerror or error}") from None
    raise UsageError(f"cannot create the study folder in {parent}: every name {name}-N is taken")


def create_study(
    recipe_path: str | Path,
    options: TuneOptions,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    plugins: Plugins | None = None,
) -> Path:
    """Check everything, then write a new study folder and its Optuna study; return the folder.

    Bad input raises :class:`~stnkit.errors.UsageError` with no folder left behind.
    """
    _check_options(options)
    optuna = import_optuna()
    plugins = plugins or load_plugins()
    recipe = load_recipe(recipe_path, overrides)
    space = search_space(recipe, plugins)
    trials = options.trials
    grid: dict[str, list[float]] | None = None
    if options.method == "grid":
        grid = space.grid(options.grid_points)
        size = space.grid_size(grid)
        if trials is not None and size > trials:
            raise UsageError(
                f"the grid has {size} points ({options.grid_points} per hyperparameter over "
                f"{len(grid)}), more than --trials {trials}; lower --grid-points or raise --trials"
            )
        trials = size
    elif trials is None and options.budget is None:
        trials = DEFAULT_TRIALS
    parent = out if out is not None else recipe.store.dir
    if not parent.is_absolute() and out is None:
        parent = Path.cwd() / parent
    folder = _claim_folder(parent, f"{recipe.name}-tune-{utc_stamp()}")
    try:
        manifest = Manifest(
            study_name=folder.name,
            method=options.method,
            trials=trials,
            budget_seconds=options.budget,
            jobs=options.jobs,
            prune=options.prune,
            seed=options.seed,
            grid_points=options.grid_points,
            storage=options.storage,
            recipe=recipe.to_yaml(),
            recipe_source=str(recipe.source or recipe_path),
            base_dir=str(recipe.base_dir.resolve()),
            space=space.to_json(),
            grid=grid,
            created=utc_now(),
        )
        write_manifest(folder, manifest)
        study = optuna.create_study(
            study_name=manifest.study_name,
            storage=make_storage(manifest.storage_url(folder)),
            direction="minimize",
        )
        study.set_user_attr("stnkit_method", options.method)
        study.set_user_attr("stnkit_recipe", recipe.name)
    except Exception as error:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-written
        if isinstance(error, UsageError):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UsageError(f"cannot create the Optuna study in {options.storage or folder}: {reason}") from None
    return folder


def trial_rows(study: Any) -> list[TrialRow]:
    rows: list[TrialRow] = []
    for t in study.get_trials(deepcopy=False):
        state = trial_state(t)
        if state == "complete":
            value = t.value
        else:  # the latest validation loss it reported
            value = None if t.last_step is None else t.intermediate_values.get(t.last_step)
        message = str(t.user_attrs.get("failed_because", "")) if state == "failed" else ""
        rows.append(TrialRow(t.number, state, value, dict(t.params), message))
    return rows


def snapshot(
    study: Any, folder: Path, manifest: Manifest, started: float, budget_left: float | None
) -> Snapshot:
    """The study now; ``elapsed`` counts this session's wall time."""
    rows = trial_rows(study)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    left = budget_left
    if left is not None:
        deadline = read_deadline(folder)
        left = left if deadline is None else max(0.0, deadline - time.time())
    return Snapshot(rows, manifest.trials, left, time.time() - started, counts)


def _threads(jobs: int) -> int:
    """CPU threads per worker: the threads this process may use, shared out."""
    try:
        available = int(os.environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, available // jobs)


def _start_worker(
    folder: Path, index: int, budget_left: float | None, threads: int
) -> subprocess.Popen[bytes]:
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "stnkit.tune.worker", str(folder), "--worker", str(index)]
    command += ["--threads", str(threads)]
    if budget_left is not None:
        command += ["--budget-left", repr(budget_left)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with (logs / f"worker-{index}.log").open("ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def drive(folder: Path, view: StudyView, resumed: bool = False) -> StudyResult:
    """Run a study's workers until it is done (or interrupted); one session at a time per folder."""
    folder = folder.resolve() if folder.exists() else folder
    manifest = read_manifest(folder)
    with try_hold(folder / "study.lock") as got:
        if not got:
            raise StudyFolderError(f"{folder} is being run by another stnkit tune process")
        return _drive(folder, manifest, view, resumed)


def _drive(folder: Path, manifest: Manifest, view: StudyView, resumed: bool) -> StudyResult:
    study = load_optuna_study(manifest, folder)
    stale = abandon_stale_trials(study, folder)
    started = time.time()
    budget_left = None
    if manifest.budget_seconds is not None:
        budget_left = max(0.0, manifest.budget_seconds - manifest.spent_seconds)
    (folder / DEADLINE).unlink(missing_ok=True)  # an earlier session's
    manifest.sessions += 1
    write_manifest(folder, manifest)
    threads = _threads(manifest.jobs)
    verb = "resuming" if resumed else "study"
    limits = []
    if manifest.trials is not None:
        limits.append(f"{manifest.trials} trials")
    if manifest.budget_seconds is not None:
        limits.append(f"budget {manifest.budget_seconds:g}s")
    header = (
        f"{verb} {folder.name}: {manifest.method} search over {', '.join(manifest.space)}; "
        f"{' or '.join(limits)}; {manifest.jobs} job(s) × {threads} thread(s); writing {folder}"
    )
    if stale:
        header += f"\nabandoned trial(s) {', '.join(map(str, stale))} marked failed and queued again"
    view.start(header)
    workers = [_start_worker(folder, i, budget_left, threads) for i in range(manifest.jobs)]
    interrupted = False
    last_save = time.monotonic()
    snap: Snapshot | None = None

    def forward(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # installed explicitly: a process started in the background inherits SIGINT ignored
    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(w.poll() is None for w in workers):
            snap = snapshot(study, folder, manifest, started, budget_left)
            view.update(snap)
            if time.monotonic() - last_save > 2.0:
                _save_spent(folder, manifest, budget_left)
                last_save = time.monotonic()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        interrupted = True
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
        try:
            for w in workers:
                w.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; --resume retries their trials
            for w in workers:
                if w.poll() is None:
                    w.kill()
            for w in workers:
                w.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _save_spent(folder, manifest, budget_left)
    # a worker that crashed leaves its trial RUNNING without a holder: fail it now, retried later
    abandon_stale_trials(study, folder)
    snap = snapshot(study, folder, manifest, started, budget_left)
    view.stop(snap)
    crashed = [i for i, w in enumerate(workers) if w.returncode not in (0, 130, -signal.SIGINT)]
    if interrupted or any(w.returncode in (130, -signal.SIGINT) for w in workers):
        return StudyResult(folder, "interrupted", snap)
    if crashed and not snap.counts.get("complete"):
        logs = ", ".join(str(folder / "logs" / f"worker-{i}.log") for i in crashed)
        return StudyResult(folder, f"failed: worker(s) ended with an error; see {logs}", snap)
    return StudyResult(folder, "completed", snap)


def _save_spent(folder: Path, manifest: Manifest, budget_left: float | None) -> None:
    """Record the budget time this session has used: since its first worker was ready."""
    deadline = read_deadline(folder)
    if budget_left is None or deadline is None:
        return
    current = read_manifest(folder)
    current.spent_seconds = manifest.spent_seconds + max(0.0, time.time() - (deadline - budget_left))
    write_manifest(folder, current)


def tune(
    recipe_path: str | Path,
    options: TuneOptions,
    view: StudyView,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    plugins: Plugins | None = None,
) -> StudyResult:
    """Create a study and run it to the end. The Python face of ``stnkit tune``."""
    folder = create_study(recipe_path, options, overrides, out, plugins)
    return drive(folder, view)


def base_recipe(manifest: Manifest) -> dict[str, Any]:
    data = yaml.safe_load(manifest.recipe)
    return data if isinstance(data, dict) else {}
