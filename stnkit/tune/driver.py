"""``stnkit tune``: create or resume a study, run its worker processes, show progress.

The process that runs ``stnkit tune`` trains nothing itself: it checks the input, writes the study
folder, starts ``--jobs`` worker processes (:mod:`stnkit.tune.worker`) with the CPU threads split
between them, and reads the study's storage twice a second for the progress view. Ctrl-C (or
SIGTERM) is passed on to the workers, which checkpoint their runs, mark those trials failed and
queue them again; ``stnkit tune --resume DIR`` then continues.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stnkit.build import resolve
from stnkit.errors import UsageError
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import load_recipe
from stnkit.tune.progress import Snapshot, StudyView, TrialRow
from stnkit.tune.space import require_tuned, search_space
from stnkit.tune.study import (
    DEADLINE,
    FAILURE_LIMIT,
    JOURNAL,
    METHODS,
    PRUNERS,
    Manifest,
    StudyFolderError,
    abandon_stale_trials,
    check_journal,
    counted,
    failure_message,
    failure_run,
    import_optuna,
    load_optuna_study,
    make_storage,
    read_deadline,
    read_manifest,
    read_trials,
    remove_dead_staging,
    retried,
    session_ended,
    staging_folder,
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
SETTLE_SECONDS = 30.0  # the longest a session waits for a prior session's dying workers


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


def _free_name(parent: Path, name: str) -> str:
    """``name``, suffixed ``-1``, ``-2``... when a folder of that name exists."""
    for counter in range(10_000):
        candidate = f"{name}-{counter}" if counter else name
        if not (parent / candidate).exists():
            return candidate
    raise UsageError(f"cannot create the study folder in {parent}: every name {name}-N is taken")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while a study is being created, so a half-made one is
    removed; outside the main thread (or with a handler already set) nothing changes."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        previous = None
    if previous is not signal.SIG_DFL or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    label = recipe.source or recipe.name
    require_tuned(recipe.hyperparameters, label)
    space = search_space(resolve(recipe, plugins).kinds, label)
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
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the study folder in {parent}: {error.strerror or error}") from None
    remove_dead_staging(parent)
    stamp = f"{recipe.name}-tune-{utc_stamp()}"
    with _sigterm_interrupts():
        for _ in range(100):  # another study can take the name between the check and the rename
            name = _free_name(parent, stamp)
            manifest = Manifest(
                study_name=name,
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
            folder = _build_study(parent, manifest, optuna, options, recipe.name)
            if folder is not None:
                return folder
    raise UsageError(f"cannot create the study folder in {parent}: every name {stamp}-N is taken")


def _build_study(
    parent: Path, manifest: Manifest, optuna: Any, options: TuneOptions, name: str
) -> Path | None:
    """Build the study in a hidden staging folder, manifest last, and rename it into place: an
    interruption leaves no study folder or a whole one. None when the name was taken meanwhile."""
    staging = staging_folder(parent, manifest.study_name)
    folder = parent / manifest.study_name
    created_in_storage = False
    try:
        shutil.rmtree(staging, ignore_errors=True)  # this process's own, from a prior try
        staging.mkdir()
        study = optuna.create_study(
            study_name=manifest.study_name,
            storage=make_storage(manifest.storage_url(staging)),
            direction="minimize",
        )
        created_in_storage = True
        study.set_user_attr("stnkit_method", options.method)
        study.set_user_attr("stnkit_recipe", name)
        write_manifest(staging, manifest)
        try:
            os.rename(staging, folder)  # fails when another study has the name (a non-empty folder)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                _remove_staged(staging, manifest, created_in_storage)
                return None
            raise
        return folder
    except BaseException as error:
        _remove_staged(staging, manifest, created_in_storage)  # nothing half-written
        if isinstance(error, UsageError | KeyboardInterrupt) or not isinstance(error, Exception):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        where = options.storage or parent / manifest.study_name
        raise UsageError(f"cannot create the Optuna study in {where}: {reason}") from None


def _remove_staged(staging: Path, manifest: Manifest, created_in_storage: bool) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    if manifest.storage is not None and created_in_storage:  # a study left in a shared storage
        with contextlib.suppress(Exception):
            import_optuna().delete_study(study_name=manifest.study_name, storage=manifest.storage)


def trial_rows(study: Any, folder: Path) -> list[TrialRow]:
    rows: list[TrialRow] = []
    trials = read_trials(study, folder)
    again = retried(trials)
    for t in trials:
        state = trial_state(t)
        if state == "complete":
            value = t.value
        else:  # the latest validation loss it reported
            value = None if t.last_step is None else t.intermediate_values.get(t.last_step)
        message = ""
        if state == "failed":
            message = str(t.user_attrs.get("failed_because") or again.get(t.number, ""))
        rows.append(TrialRow(t.number, state, value, dict(t.params), message, t.number in again))
    return rows


def snapshot(
    study: Any, folder: Path, manifest: Manifest, started: float, budget_left: float | None
) -> Snapshot:
    """The study now; ``elapsed`` counts this session's wall time."""
    rows = trial_rows(study, folder)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    again = {row.number for row in rows if row.state == "failed" and row.retried}
    counts["done"] = sum(
        1 for r in rows if r.state in ("complete", "pruned", "failed") and r.number not in again
    )
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
    """Run a study's workers until it is done (or interrupted); one session at a time per folder.

    Before anything is written, the journal is checked: a damaged tail is cut off (with a notice),
    damage inside it refused (:class:`StudyFolderError`).
    """
    folder = folder.resolve() if folder.exists() else folder
    manifest = read_manifest(folder)
    # refuse inner damage, or a study that cannot be read, before taking any lock
    torn = check_journal(folder, repair=False) if manifest.storage is None else None
    if torn is None:
        read_trials(load_optuna_study(manifest, folder), folder)
    with try_hold(folder / "study.lock") as got:
        if not got:
            raise StudyFolderError(f"{folder} is being run by another stnkit tune process")
        notices: list[str] = []
        if manifest.storage is None:
            repaired = check_journal(folder, repair=True)
            if repaired:
                notices.append(repaired)
            # Optuna's journal lock: no writer of this study is alive now, so one left by a
            # killed process is stale (Optuna would wait 30 seconds before breaking it)
            stale_lock = folder / f"{JOURNAL}.lock"
            if stale_lock.is_symlink() or stale_lock.exists():
                stale_lock.unlink(missing_ok=True)
        return _drive(folder, manifest, view, resumed, notices)


def _drive(
    folder: Path, manifest: Manifest, view: StudyView, resumed: bool, notices: list[str]
) -> StudyResult:
    study = load_optuna_study(manifest, folder)
    read_trials(study, folder)
    stale = abandon_stale_trials(study, folder, settle=SETTLE_SECONDS)
    started = time.time()
    budget_left = None
    if manifest.budget_seconds is not None:
        budget_left = max(0.0, manifest.budget_seconds - manifest.spent_seconds)
    (folder / DEADLINE).unlink(missing_ok=True)  # a prior session's
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
    for notice in notices:
        view.notice(notice)
    if stale:
        header += f"\nabandoned trial(s) {', '.join(map(str, stale))} marked failed and queued again"
    view.start(header)
    offsets = [_log_size(folder, i) for i in range(manifest.jobs)]
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
    if interrupted or any(w.returncode in (130, -signal.SIGINT) for w in workers):
        return StudyResult(folder, "interrupted", snap)
    trials = read_trials(study, folder)
    failures = failure_run(trials, manifest.sessions)
    if len(failures) >= FAILURE_LIMIT:
        first = failures[0]
        return StudyResult(
            folder,
            f"failed: stopped after {len(failures)} failed trials in a row; the first, trial "
            f"{first.number}: {failure_message(first)}",
            snap,
        )
    ended = session_ended(trials, manifest.sessions)
    completed_before = any(t.state.name == "COMPLETE" for t in trials)
    if failures and len(failures) == len(ended) and completed_before:
        # every trial this session ran failed while prior ones completed (a resumed study
        # whose data is gone): an error, however few they were
        first = failures[0]
        return StudyResult(
            folder,
            f"failed: every trial of this session failed ({len(failures)}); the first, trial "
            f"{first.number}: {failure_message(first)}",
            snap,
        )
    crashed = [i for i, w in enumerate(workers) if w.returncode != 0]
    if crashed and not _done(manifest, trials, folder):
        i = crashed[0]
        log = folder / "logs" / f"worker-{i}.log"
        reason = _worker_error(log, offsets[i]) or f"exit status {workers[i].returncode}"
        return StudyResult(folder, f"failed: worker {i} ended with an error: {reason} (see {log})", snap)
    if not any(t.state.name == "COMPLETE" for t in trials):
        failed = [t for t in counted(trials) if t.state.name == "FAIL"]
        if failed:
            return StudyResult(
                folder,
                f"failed: no trial completed; the first failure, trial {failed[0].number}: "
                f"{failure_message(failed[0])}",
                snap,
            )
    return StudyResult(folder, "completed", snap)


def _done(manifest: Manifest, trials: list[Any], folder: Path) -> bool:
    """Whether the study has what it asked for: its trials, or its budget spent."""
    if manifest.trials is not None and len(counted(trials)) >= manifest.trials:
        return True
    deadline = read_deadline(folder)
    return manifest.budget_seconds is not None and deadline is not None and time.time() >= deadline


def _log_size(folder: Path, index: int) -> int:
    try:
        return (folder / "logs" / f"worker-{index}.log").stat().st_size
    except OSError:
        return 0


def _worker_error(log: Path, offset: int) -> str | None:
    """The last line this session's worker wrote: its error (a JSON line for a stnkit error)."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1]
    with contextlib.suppress(ValueError):
        data = json.loads(last)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    return last


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
