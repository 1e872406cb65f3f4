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
import functools
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic

from stnkit.errors import UsageError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "FAILURE_LIMIT",
    "FORMAT",
    "JOURNAL",
    "MANIFEST",
    "METHODS",
    "VERSION",
    "Manifest",
    "StudyFolderError",
    "abandon_stale_trials",
    "check_journal",
    "counted",
    "fail_and_retry",
    "failure_message",
    "failure_run",
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
    "read_trials",
    "remove_dead_staging",
    "retried",
    "session_deadline",
    "session_ended",
    "staging_folder",
    "trial_lock_path",
    "trial_state",
    "try_hold",
    "utc_now",
    "utc_stamp",
    "write_manifest",
]

FORMAT = "stnkit-study"
VERSION = 1  # of study.json; a manifest of any other version is refused, naming both
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

    # checked when read: a manifest with a field of the wrong type or an unknown one is damaged
    __pydantic_config__: ClassVar[pydantic.ConfigDict] = pydantic.ConfigDict(extra="forbid")

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
        data: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        data.update(self.__dict__)
        return data


def is_study(path: Path) -> bool:
    """True when ``path`` is a study folder: it holds a ``study.json`` (damaged or not: reading it
    says what is wrong) and is not a folder still being created (see :func:`staging_folder`)."""
    return (path / MANIFEST).is_file() and not _STAGING.match(path.name)


def _damaged(folder: Path, why: str) -> StudyFolderError:
    return StudyFolderError(f"{folder / MANIFEST} is damaged ({why}); the study cannot be read")


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest. Raises :class:`StudyFolderError` when it is not a study folder, when
    its manifest is damaged or written by another manifest version."""
    if not folder.is_dir():
        raise StudyFolderError(f"{folder} is not a study folder (not a folder)")
    path = folder / MANIFEST
    if _STAGING.match(folder.name):
        raise StudyFolderError(f"{folder} is a study that was never finished being created; remove it")
    if not path.is_file():
        if (folder / JOURNAL).exists():
            raise StudyFolderError(
                f"{folder} has a {JOURNAL} but no {MANIFEST}: not a study folder stnkit tune finished "
                "creating; remove it"
            )
        raise StudyFolderError(f"{folder} is not a study folder (no {MANIFEST} written by stnkit tune)")
    try:
        data = json.loads(path.read_bytes())
    except OSError as error:
        raise StudyFolderError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise _damaged(folder, f"not JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _damaged(folder, "not a stnkit study manifest")
    version = data.pop("version", None)
    data.pop("format", None)
    if version != VERSION:
        raise StudyFolderError(
            f"{path} is study manifest version {version!r}; this stnkit reads version {VERSION} only"
        )
    try:
        return _manifest_adapter().validate_python(data)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "manifest"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise _damaged(folder, f"{where}: {first['msg']}{more}") from None


@functools.cache
def _manifest_adapter() -> pydantic.TypeAdapter[Manifest]:
    return pydantic.TypeAdapter(Manifest)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write atomically: a reader (another worker) never sees half a manifest."""
    temporary = folder / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest.to_json(), indent=1), encoding="utf-8")
    os.replace(temporary, folder / MANIFEST)


# A study is built in a hidden sibling folder and renamed into place when whole; one left behind
# by a SIGKILL is not a study.
_STAGING = re.compile(r"^\..+\.creating-\d+$")


def staging_folder(parent: Path, name: str) -> Path:
    return parent / f".{name}.creating-{os.getpid()}"


def remove_dead_staging(parent: Path) -> None:
    """Remove the staging folders in ``parent`` whose creating process is gone (a SIGKILL)."""
    with contextlib.suppress(OSError):
        for path in parent.glob(".*.creating-*"):
            if not _STAGING.match(path.name):
                continue
            pid = int(path.name.rsplit("-", 1)[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(path, ignore_errors=True)
            except PermissionError:  # alive, another user's
                pass


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
    """The study in its storage. Raises :class:`StudyFolderError` when the journal is missing or
    cannot be read (never creates one: Optuna's file backend makes a missing file empty)."""
    optuna = import_optuna()
    url = manifest.storage_url(folder)
    if manifest.storage is None and not Path(url).is_file():
        raise StudyFolderError(f"{folder} has no {JOURNAL} (removed?); the study's trials cannot be read")
    try:
        return optuna.load_study(
            study_name=manifest.study_name, storage=make_storage(url), sampler=sampler, pruner=pruner
        )
    except KeyError:
        raise StudyFolderError(
            f"{url} holds no study named {manifest.study_name!r}; the study cannot be read"
        ) from None
    except (ValueError, OSError) as error:  # JSONDecodeError, "Invalid log format.", I/O
        torn = check_journal(folder, repair=False) if manifest.storage is None else None
        if torn is not None:
            raise StudyFolderError(f"{url} {torn}; stnkit tune --resume {folder} cuts them off") from None
        raise StudyFolderError(f"cannot read {url}: {_first_line(error)}") from None


def read_trials(study: Any, folder: Path) -> list[Any]:
    """Every trial of ``study``, a damaged journal being a :class:`StudyFolderError`."""
    try:
        return list(study.get_trials(deepcopy=False))
    except (ValueError, KeyError, OSError) as error:
        raise StudyFolderError(f"cannot read the trials of {folder}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _is_record(line: bytes) -> bool:
    try:
        data = json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return False
    return isinstance(data, dict) and isinstance(data.get("op_code"), int)


def check_journal(folder: Path, repair: bool) -> str | None:
    """Check that every line of the folder's ``journal.log`` is a complete Optuna record.

    A damaged *tail* (a write cut short: a torn last line, a half record, garbage after the last
    record) is what a crash leaves; Optuna's reader skips a one-line one, but anything appended
    after it makes the whole journal unreadable. Without ``repair``, what is wrong with the tail is
    returned; with it, the tail is cut off (kept beside the journal in ``journal.log.torn-<stamp>``)
    and a notice returned. None: the journal is whole. Damage *followed* by records is not a cut
    short write, and is refused: :class:`StudyFolderError`, nothing changed.
    """
    path = folder / JOURNAL
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StudyFolderError(
            f"{folder} has no {JOURNAL} (removed?); the study's trials cannot be read"
        ) from None
    except OSError as error:
        raise StudyFolderError(f"cannot read {path}: {error.strerror or error}") from None
    good_end = 0
    records = 0
    first_bad: int | None = None
    line_number = 0
    position = 0
    while position < len(data):
        newline = data.find(b"\n", position)
        following = len(data) if newline < 0 else newline + 1
        line_number += 1
        if newline >= 0 and _is_record(data[position:following]):
            if first_bad is not None:
                raise StudyFolderError(
                    f"{path} is damaged at line {first_bad} and has records after it; the study cannot "
                    "be read or resumed"
                )
            good_end = following
            records += 1
        elif first_bad is None:
            first_bad = line_number
        position = following
    if good_end == len(data):
        return None
    if not repair:
        return f"ends in {len(data) - good_end} byte(s) that are not a complete record"
    kept = folder / f"{JOURNAL}.torn-{utc_stamp()}"
    kept.write_bytes(data[good_end:])
    os.truncate(path, good_end)
    return (
        f"{JOURNAL} ended in {len(data) - good_end} byte(s) that are not a complete record (a write "
        f"cut short); cut back to its last complete record ({records}), the bytes kept in {kept.name}"
    )


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


def fail_and_retry(study: optuna.Study, number: int, reason: str, params: dict[str, Any]) -> None:
    """Mark an unfinished trial failed and queue its point again, so the study still gets it.

    The retry records ``retry_of`` (the failed trial's number) and ``retry_reason``: a failed
    trial with a retry does not count towards ``--trials`` (the retry does). Grid studies too:
    Optuna's grid sampler counts a failed point as visited. A trial killed before it drew its
    point is retried with none given, and the sampler draws one.
    """
    optuna = import_optuna()
    study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(dict(params), user_attrs={"retry_of": number, "retry_reason": reason})


def abandon_stale_trials(study: optuna.Study, folder: Path, settle: float = 0.0) -> list[int]:
    """Trials Optuna still calls RUNNING whose process is gone (SIGKILL, a crash): failed and
    queued again. Returns their numbers.

    ``settle``: seconds to wait for locks still held. A session starts under the study lock, so no
    worker of a prior session is still running one of its trials: one whose lock is held is a
    worker still dying (the kernel kills a worker whose ``stnkit tune`` process was killed, and
    frees its locks only once it has exited)."""
    optuna = import_optuna()
    stale: list[int] = []
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    end = time.monotonic() + settle
    while any(held(trial_lock_path(folder, t.number)) for t in running) and time.monotonic() < end:
        time.sleep(0.1)
    for trial in running:
        if held(trial_lock_path(folder, trial.number)):
            continue
        fail_and_retry(study, trial.number, "its process ended before the trial did", trial.params)
        stale.append(trial.number)
    return stale


# -- what counts -----------------------------------------------------------------------------------

FAILURE_LIMIT = 5
"""A session of a study stops after this many failed trials in a row (see :func:`failure_run`)."""


def retried(trials: Sequence[Any]) -> dict[int, str]:
    """``{number: reason}`` of the failed trials that were queued again."""
    found: dict[int, str] = {}
    for t in trials:
        number = t.user_attrs.get("retry_of")
        if isinstance(number, int):
            found[number] = str(t.user_attrs.get("retry_reason", ""))
    return found


def counted(trials: Sequence[Any]) -> list[Any]:
    """The trials that count towards ``--trials``: complete, pruned, failed (unless queued again:
    then its retry counts) and those under way."""
    again = retried(trials)
    kept = ("COMPLETE", "PRUNED", "RUNNING")
    return [t for t in trials if t.state.name in kept or (t.state.name == "FAIL" and t.number not in again)]


def session_ended(trials: Sequence[Any], session: int) -> list[Any]:
    """The trials the session finished, in the order they ended; trials interrupted and queued
    again are not results of the search."""
    again = retried(trials)
    ended = [
        t
        for t in trials
        if t.user_attrs.get("session") == session
        and t.datetime_complete is not None
        and t.state.name in ("COMPLETE", "PRUNED", "FAIL")
        and t.number not in again
    ]
    ended.sort(key=lambda t: (t.datetime_complete, t.number))
    return ended


def failure_run(trials: Sequence[Any], session: int) -> list[Any]:
    """The failed trials in a row that the session's finished trials end with (in the order they
    ended)."""
    run: list[Any] = []
    for t in reversed(session_ended(trials, session)):
        if t.state.name != "FAIL":
            break
        run.append(t)
    return run[::-1]


def failure_message(trial: Any) -> str:
    return str(trial.user_attrs.get("failed_because") or "no reason recorded")
