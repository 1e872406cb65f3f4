"""A study folder: its manifest, its Optuna storage, samplers, pruner and trial bookkeeping.

A study folder ``<store.dir>/<name>-tune-<UTC timestamp>/`` holds:

- ``study.json`` — the manifest: method, limits, the base recipe, the search space;
- ``journal.log`` — Optuna's JournalStorage (unless ``--storage`` named another Optuna storage);
- one run file per trial, ``<name>-trial-NNNN-<stamp>.h5``, an ordinary stnkit run;
- ``running/trial-NNNN.lock`` — held (``flock``) by the process running that trial, so a trial
  Optuna still calls RUNNING after a crash or SIGKILL is recognisably abandoned;
- ``logs/worker-K.log`` — each worker process's output.

Optuna is imported here and in the rest of :mod:`stnkit.tune` only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stnkit.errors import UsageError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "FORMAT",
    "JOURNAL",
    "MANIFEST",
    "METHODS",
    "Manifest",
    "StudyFolderError",
    "abandon_stale_trials",
    "fail_and_retry",
    "held",
    "hold",
    "import_optuna",
    "is_study",
    "load_optuna_study",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "parse_duration",
    "read_deadline",
    "read_manifest",
    "session_deadline",
    "trial_lock_path",
    "trial_state",
    "try_hold",
    "utc_now",
    "utc_stamp",
    "write_manifest",
]

FORMAT = "stnkit-study"
MANIFEST = "study.json"
JOURNAL = "journal.log"
METHODS = ("random", "tpe", "gp", "grid")
PRUNERS = ("median", "none")


class StudyFolderError(UsageError):
    """A path given as a study folder is not one (or cannot be used)."""


def import_optuna() -> Any:
    """Optuna, or a clear error naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise UsageError("stnkit tune needs Optuna: pip install 'stnkit[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90s``, ``20m``, ``1.5h``, ``2d`` or plain seconds → seconds. Raises :class:`UsageError`."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(f"--budget {text!r} is not a duration like 90s, 20m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Manifest:
    """What ``study.json`` records: everything a worker or ``--resume`` needs."""

    study_name: str
    method: str
    trials: int | None
    budget_seconds: float | None
    jobs: int
    prune: str
    seed: int | None
    grid_points: int
    storage: str | None  # None: the journal file in the folder
    recipe: str  # the base recipe as YAML, overrides applied
    recipe_source: str
    base_dir: str
    space: dict[str, dict[str, Any]]
    grid: dict[str, list[float]] | None
    created: str
    spent_seconds: float = 0.0
    sessions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def storage_url(self, folder: Path) -> str:
        return self.storage or str(folder / JOURNAL)

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, "version": 1}
        data.update(self.__dict__)
        return data


def is_study(path: Path) -> bool:
    """True when ``path`` is a folder with a stnkit study manifest."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest. Raises :class:`StudyFolderError` when it is not a study folder."""
    if not folder.is_dir():
        raise StudyFolderError(f"{folder} is not a study folder (not a folder)")
    if not is_study(folder):
        raise StudyFolderError(f"{folder} is not a study folder (no {MANIFEST} written by stnkit tune)")
    data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    data.pop("format", None)
    data.pop("version", None)
    try:
        return Manifest(**data)
    except TypeError as error:
        raise StudyFolderError(f"{folder / MANIFEST} is damaged: {error}") from None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write atomically: a reader (another worker) never sees half a manifest."""
    temporary = folder / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest.to_json(), indent=1), encoding="utf-8")
    os.replace(temporary, folder / MANIFEST)


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


_TRIAL_STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


def trial_state(trial: Any) -> str:
    """An Optuna trial's state as stnkit's tables and records spell it."""
    name: str = trial.state.name
    return _TRIAL_STATES.get(name, name.lower())


# -- Optuna objects -------------------------------------------------------------------------------


def make_storage(url: str) -> Any:
    """A JournalStorage on a file path; any other Optuna storage URL (``sqlite:///...``) as is."""
    optuna = import_optuna()
    if "://" in url:
        return url
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(url))


def load_optuna_study(manifest: Manifest, folder: Path, sampler: Any = None, pruner: Any = None) -> Any:
    optuna = import_optuna()
    storage = make_storage(manifest.storage_url(folder))
    return optuna.load_study(study_name=manifest.study_name, storage=storage, sampler=sampler, pruner=pruner)


def make_sampler(manifest: Manifest, worker: int = 0) -> Any:
    """The study's sampler for one worker process. Each worker (and each resumed session) gets its
    own seed, derived from ``--seed``: the same seed everywhere would draw the same points."""
    optuna = import_optuna()
    seed = None if manifest.seed is None else manifest.seed + 7919 * worker + 104729 * manifest.sessions
    if manifest.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if manifest.method == "tpe":
        # constant liar: parallel workers do not all sample next to the same running trial
        return optuna.samplers.TPESampler(seed=seed, constant_liar=manifest.jobs > 1)
    if manifest.method == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if manifest.method == "grid":
        assert manifest.grid is not None
        return optuna.samplers.GridSampler(manifest.grid, seed=seed)
    raise UsageError(f"unknown method {manifest.method!r} (use one of: {', '.join(METHODS)})")


def make_pruner(manifest: Manifest) -> Any:
    optuna = import_optuna()
    if manifest.prune == "median":
        return optuna.pruners.MedianPruner()
    return optuna.pruners.NopPruner()


# -- running-trial locks --------------------------------------------------------------------------


DEADLINE = "deadline"


def session_deadline(folder: Path, budget_left: float) -> float:
    """The UNIX time after which this session starts no trial. The budget's clock starts when the
    first worker is ready to ask for a trial (process start-up and imports are not search time);
    that worker writes the deadline, the others read it. Call under the claim lock."""
    path = folder / DEADLINE
    if not path.exists():
        temporary = folder / f".{DEADLINE}.tmp"
        temporary.write_text(repr(time.time() + budget_left), encoding="utf-8")
        os.replace(temporary, path)
    return float(path.read_text(encoding="utf-8"))


def read_deadline(folder: Path) -> float | None:
    try:
        return float((folder / DEADLINE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def trial_lock_path(folder: Path, number: int) -> Path:
    return folder / "running" / f"trial-{number:04d}.lock"


@contextlib.contextmanager
def hold(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (blocking); the kernel drops it if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def held(path: Path) -> bool:
    """True while some live process holds ``path``'s lock."""
    if not path.exists():
        return False
    try:
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


@contextlib.contextmanager
def try_hold(path: Path) -> Iterator[bool]:
    """Hold ``path``'s lock if free; yields whether it was got."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fail_and_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Mark an unfinished trial failed and queue its point again, so the study still gets it.

    (Grid studies too: Optuna's grid sampler counts a failed point as visited.)
    """
    optuna = import_optuna()
    study._storage.set_trial_user_attr(trial._trial_id, "failed_because", reason)
    study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    if trial.params:
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})


def abandon_stale_trials(study: optuna.Study, folder: Path) -> list[int]:
    """Trials Optuna still calls RUNNING whose process is gone (SIGKILL, a crash): failed and
    queued again. Returns their numbers."""
    optuna = import_optuna()
    stale: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if held(trial_lock_path(folder, trial.number)):
            continue
        fail_and_retry(study, trial, "its process ended before the trial did")
        stale.append(trial.number)
    return stale
