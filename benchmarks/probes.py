"""Hostile-input probes against the command line and the Python API, and their outcome counts.

Each probe is one tiny job (``recipes/toy-ridge.yaml`` at two epochs, or a command on a copy of
one small run file or study) run in its own process with a timeout, and classified:

``fine``          exit 0
``clean``         exit 1, 2 or 130 with a short readable message and no traceback
``traceback``     a Python traceback in the output
``hang``          still running at the timeout (killed)
``crash``         ended by a signal it was not sent (a segmentation fault, an abort)
``unclear``       any other ending: no message with exit 1/2, "Aborted!", an exit code the README
                  does not name, death by the very signal it was sent (no handler yet)
``silent-wrong``  exit 0 where the right answer is known to be different: bad input accepted,
                  damage shown as if intact
``leftover``      the right exit, but it left a half-made run file, lock or study folder behind
``data-lost``     a study that every later command can no longer read

Every probe states what it should give (``clean:2``, ``fine``, ...); the report lists every
probe that gave something else, and ends with one line of counts.

    OMP_NUM_THREADS=1 python benchmarks/probes.py --jobs 2
    OMP_NUM_THREADS=1 python benchmarks/probes.py --only 'damaged-run/*show*' -v

``tests/test_probes.py`` runs a few probes through the same code.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RIDGE = ROOT / "recipes" / "toy-ridge.yaml"
TINY = ("--set", "train.epochs=2")

OUTCOMES = (
    "fine",
    "clean",
    "traceback",
    "hang",
    "crash",
    "unclear",
    "silent-wrong",
    "leftover",
    "data-lost",
)

#: words by which a command may flag damage it found and still exit 0
FLAGS = ("damage", "corrupt", "checksum", "hash check", "integrity", "inconsistent", "unreadable", "invalid")


@dataclass(frozen=True)
class Fixtures:
    """What the probes damage copies of: a completed two-epoch run and a two-trial study."""

    run: Path
    study: Path


@dataclass
class Result:
    """How one probe's process ended."""

    code: int | None  # None: killed at the timeout
    out: str
    err: str
    sent: int | None = None  # the signal the probe sent it, if any

    @property
    def text(self) -> str:
        return self.out + self.err


#: a probe's command: prepared in its own empty folder from the fixtures
Prepare = Callable[[Path, Fixtures], list[str]]
#: a check after the command: the outcome to report instead of the plain one, or None
Check = Callable[[Path, Result, Fixtures], str | None]


@dataclass(frozen=True)
class Probe:
    name: str
    expect: tuple[str, ...]  # "fine", "clean:2", "clean:130", ...
    prepare: Prepare
    check: Check | None = None
    timeout: float = 90.0
    signal_at: tuple[int, float] | None = None  # (signal, seconds after the start)
    signal_after: str | None = None  # with signal_at: count its seconds from when this glob matches


@dataclass
class Outcome:
    probe: Probe
    outcome: str  # one of OUTCOMES
    code: int | None
    detail: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.outcome}:{self.code}" if self.outcome == "clean" else self.outcome

    @property
    def matches(self) -> bool:
        return self.label in self.probe.expect or self.outcome in self.probe.expect


# -- classifying ---------------------------------------------------------------------------------


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def classify(result: Result) -> tuple[str, str]:
    """The plain outcome of one process, before any probe-specific check, and a detail line."""
    if result.code is None:
        return "hang", "still running at the timeout"
    if "Traceback (most recent call last)" in result.text:
        return "traceback", last_line(result.err or result.out)
    if result.code < 0:
        number = -result.code
        name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
        if result.sent == number:
            return "unclear", f"killed by the {name} it was sent: no handler, no message"
        return "crash", f"killed by {name}"
    if result.code == 0:
        return "fine", ""
    message = [line for line in result.err.strip().splitlines() if line.strip()]
    if result.code == 130:
        return "clean", last_line(result.err)
    if result.code in (1, 2):
        if not message:
            return "unclear", f"exit {result.code} with no message"
        if [line.strip() for line in message] == ["Aborted!"]:
            return "unclear", "Aborted!"
        if len(message) > 6:
            return "unclear", f"{len(message)} lines: {last_line(result.err)}"
        return "clean", last_line(result.err)
    return "unclear", f"exit {result.code}: {last_line(result.text)}"


def _python() -> list[str]:
    return [sys.executable]


def _stnkit(*args: str | Path) -> list[str]:
    return [*_python(), "-m", "stnkit", *map(str, args)]


def run_probe(probe: Probe, fixtures: Fixtures, workdir: Path) -> Outcome:
    """Prepare the probe in ``workdir``, run it, classify and check it."""
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        command = probe.prepare(workdir, fixtures)
    except Exception as error:  # a probe that cannot even be set up says so in the report
        return Outcome(probe, "unclear", None, f"probe setup failed: {error!r}")
    result = execute(command, workdir, probe.timeout, probe.signal_at, probe.signal_after)
    outcome, detail = classify(result)
    if outcome == "fine" and not any(e == "fine" for e in probe.expect):
        outcome, detail = "silent-wrong", "exit 0 where an error was due: " + last_line(result.text)
    if probe.check is not None and outcome not in ("hang", "crash", "traceback"):
        verdict = probe.check(workdir, result, fixtures)
        if verdict is not None:
            outcome, _, detail = verdict.partition(": ")
            detail = f"exit {result.code}; {detail}"
    return Outcome(probe, outcome, result.code, detail, time.monotonic() - start)


def execute(
    command: list[str],
    cwd: Path,
    timeout: float,
    signal_at: tuple[int, float] | None,
    signal_after: str | None = None,
) -> Result:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["COLUMNS"] = "200"
    env.pop("STNKIT_TEST_KILL_AT", None)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # its own session: a hang is killed with everything it started, and a signal reaches the
        # whole group as Ctrl-C in a terminal would
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, env=env, start_new_session=True)
        sent = None
        deadline = time.monotonic() + timeout
        code: int | None
        try:
            if signal_at is not None:
                number, delay = signal_at
                while signal_after and process.poll() is None and time.monotonic() < deadline:
                    if next(iter(cwd.glob(signal_after)), None) is not None:
                        break
                    time.sleep(0.01)
                try:
                    process.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, number)
                    sent = number
            try:
                code = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                code = None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            else:
                with contextlib.suppress(ProcessLookupError):  # anything it left in its group
                    os.killpg(process.pid, signal.SIGKILL)
        out.seek(0)
        err.seek(0)
        return Result(code, out.read().decode(errors="replace"), err.read().decode(errors="replace"), sent)


# -- damage --------------------------------------------------------------------------------------


def flip(path: Path, offset: int, count: int = 8) -> None:
    """Invert ``count`` bytes of ``path`` from ``offset``."""
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _chunk_offset(path: Path, dataset: str) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        data = f[dataset]
        if data.chunks is None:
            return int(data.id.get_offset())
        return int(data.id.get_chunk_info(0).byte_offset)


def _header_offset(path: Path, group: str) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        info = h5py.h5o.get_info(f[group].id)
        return int(info.addr)


def _latest_checkpoint(path: Path) -> str:
    import h5py

    with h5py.File(path, "r") as f:
        return f"checkpoints/slot{int(f['checkpoints/latest'][()])}"


def damaged_copy(kind: str, source: Path, folder: Path) -> Path:
    """A copy of ``source`` in ``folder`` damaged as ``kind`` says."""
    target = folder / source.name
    shutil.copyfile(source, target)
    size = target.stat().st_size
    if kind == "truncated-10b":
        truncate(target, 10)
    elif kind == "truncated-50pct":
        truncate(target, size // 2)
    elif kind == "truncated-90pct":
        truncate(target, size * 9 // 10)
    elif kind == "flipped-superblock":
        flip(target, 40, 16)  # the superblock's addresses
    elif kind == "flipped-group-header":
        flip(target, _header_offset(source, "epochs") + 16, 16)
    elif kind == "flipped-table-data":
        # row 1's validation loss and row 0's hyperparameter value: the exponent bytes, so the
        # numbers change by orders of magnitude
        flip(target, _chunk_offset(source, "epochs/val_loss") + 8 + 6, 2)
        flip(target, _chunk_offset(source, "hyper/values") + 6, 2)
    elif kind == "flipped-checkpoint":
        offset = _chunk_offset(source, _latest_checkpoint(source))
        flip(target, offset + 2000, 64)
    else:
        raise ValueError(kind)
    return target


def _flagged(_: Path, result: Result, __: Fixtures) -> str | None:
    """Exit 0 is right only if the output names the damage."""
    if result.code == 0 and not any(word in result.text.lower() for word in FLAGS):
        return "silent-wrong: damage not flagged: " + last_line(result.text)
    return None


def _run_probes() -> list[Probe]:
    kinds = (
        "truncated-10b",
        "truncated-50pct",
        "truncated-90pct",
        "flipped-superblock",
        "flipped-group-header",
        "flipped-table-data",
    )
    commands: dict[str, Callable[[Path, Path, Fixtures], list[str]]] = {
        "show": lambda w, p, fx: _stnkit("show", p),
        "show-json": lambda w, p, fx: _stnkit("show", p, "--json"),
        "ls": lambda w, p, fx: _stnkit("ls", p.parent),
        "compare": lambda w, p, fx: _stnkit("compare", fx.run, p),
        "plot": lambda w, p, fx: _stnkit("plot", p, "-o", w / "plot.png"),
        "export": lambda w, p, fx: _stnkit("export", p, "-o", w / "export.json"),
        "replay": lambda w, p, fx: _stnkit("replay", p, "--out", w / "replay", "--quiet"),
        "resume": lambda w, p, fx: _stnkit("run", "--resume", p, "--quiet"),
    }
    probes = []
    for kind in kinds:
        for command, make in commands.items():
            # a listing may go on past a damaged file if it marks it; the other commands refuse it,
            # or (only for damage inside table data) show it flagged
            expect: tuple[str, ...] = ("clean:2",)
            check: Check | None = None
            if command == "ls" or (kind == "flipped-table-data" and command != "resume"):
                expect, check = ("clean:2", "fine"), _flagged
            if kind == "flipped-table-data" and command == "resume":
                # the run is complete: resuming it is refused, damaged or not
                expect = ("clean:2",)

            def prepare(
                w: Path, fx: Fixtures, kind: str = kind, make: Callable[..., list[str]] = make
            ) -> list[str]:
                (w / "runs").mkdir()
                return make(w, damaged_copy(kind, fx.run, w / "runs"), fx)

            probes.append(Probe(f"damaged-run/{kind}/{command}", expect, prepare, check))

    def checkpoint(w: Path, fx: Fixtures) -> list[str]:
        import h5py

        (w / "runs").mkdir()
        path = damaged_copy("flipped-checkpoint", fx.run, w / "runs")
        with h5py.File(path, "r+") as f:  # as if it crashed mid-run: resumable
            f.attrs["status"] = "crashed"
        return _stnkit("run", "--resume", path, "--quiet")

    probes.append(Probe("damaged-run/flipped-checkpoint/resume", ("clean:2", "fine"), checkpoint, _flagged))
    return probes


# -- studies -------------------------------------------------------------------------------------


def damaged_study(kind: str, source: Path, folder: Path) -> Path:
    target = folder / source.name
    shutil.copytree(source, target)
    journal, manifest = target / "journal.log", target / "study.json"
    if kind == "journal-torn":
        data = journal.read_bytes().rstrip(b"\n")
        journal.write_bytes(data[: len(data) - 40])  # the last line cut short
    elif kind == "journal-garbage":
        lines = journal.read_bytes().rstrip(b"\n").split(b"\n")
        journal.write_bytes(b"\n".join([*lines[:-1], b'{"op_code":6,"trial_\xff\x00garbage']) + b"\n")
    elif kind == "journal-missing":
        journal.unlink()
    elif kind == "journal-empty":
        journal.write_bytes(b"")
    elif kind == "manifest-missing":
        manifest.unlink()
    elif kind == "manifest-garbage":
        manifest.write_bytes(b"\x00\xffnot json at all")
    elif kind == "manifest-truncated":
        manifest.write_bytes(manifest.read_bytes()[:100])
    elif kind == "best-run-deleted":
        for run in target.glob("*.h5"):
            run.unlink()
    else:
        raise ValueError(kind)
    return target


def _study_readable(w: Path, result: Result, fx: Fixtures) -> str | None:
    """After a resume, the study must still be readable, with its trials done if it said so."""
    (study,) = (w / "studies").iterdir()
    shown = execute(_stnkit("show", study, "--json"), w, 60.0, None)
    if shown.code != 0:
        return "data-lost: `show` fails after the resume: " + last_line(shown.text)
    if result.code == 0:
        trials = json.loads(shown.out)["trials"]
        if trials["complete"] < trials["target"]:
            return f"silent-wrong: exit 0 with {trials['complete']} of {trials['target']} trials complete"
    return None


def _names_missing(_: Path, result: Result, __: Fixtures) -> str | None:
    if result.code == 0 and not any(
        w in result.text.lower() for w in ("missing", "deleted", "not found", "no such")
    ):
        return "silent-wrong: names a deleted run file as if it existed"
    return None


def _study_probes() -> list[Probe]:
    kinds = (
        "journal-torn",
        "journal-garbage",
        "journal-missing",
        "journal-empty",
        "manifest-missing",
        "manifest-garbage",
        "manifest-truncated",
    )
    probes = []
    for kind in kinds:
        # a torn or garbage last line is repaired (or the resume refused); anything else is refused
        repairable = kind in ("journal-torn", "journal-garbage")
        for command in ("resume", "show", "ls"):
            expect: tuple[str, ...] = ("clean:2",)
            check: Check | None = None
            if command == "resume":
                expect = ("fine", "clean:2") if repairable else ("clean:2",)
                check = _study_readable if repairable else None
            elif command == "ls" or repairable:
                expect, check = ("fine", "clean:2"), None

            def prepare(w: Path, fx: Fixtures, kind: str = kind, command: str = command) -> list[str]:
                (w / "studies").mkdir()
                study = damaged_study(kind, fx.study, w / "studies")
                if command == "resume":
                    return _stnkit("tune", "--resume", study, "--quiet")
                if command == "show":
                    return _stnkit("show", study)
                return _stnkit("ls", w / "studies")

            probes.append(Probe(f"damaged-study/{kind}/{command}", expect, prepare, check, timeout=120))

    def deleted(w: Path, fx: Fixtures) -> list[str]:
        (w / "studies").mkdir()
        return _stnkit("show", damaged_study("best-run-deleted", fx.study, w / "studies"))

    probes.append(Probe("damaged-study/best-run-deleted/show", ("fine", "clean:2"), deleted, _names_missing))

    def data_gone(w: Path, fx: Fixtures) -> list[str]:
        # the recipe's folder (its data with it) gone, and trials still to run
        (w / "studies").mkdir()
        study = w / "studies" / fx.study.name
        shutil.copytree(fx.study, study)
        manifest = json.loads((study / "study.json").read_text())
        manifest.update(base_dir=str(w / "gone"), trials=4)
        (study / "study.json").write_text(json.dumps(manifest))
        return _stnkit("tune", "--resume", study, "--quiet")

    # trials that cannot succeed: the study must stop, with the failure's message, not go on
    probes.append(Probe("failing-trials/resume-data-gone", ("clean:2", "clean:1"), data_gone, timeout=90))

    def nan_targets(w: Path, fx: Fixtures) -> list[str]:
        recipe = write_data_recipe(w, bad_data("nan-train-targets"))
        return _stnkit("tune", recipe, *TINY, "-n", "3", "-m", "random", "--out", w / "out", "--quiet")

    probes.append(Probe("failing-trials/nan-targets", ("clean:2", "clean:1"), nan_targets, timeout=90))
    return probes


# -- recipes and data ----------------------------------------------------------------------------


def _no_run_file(w: Path, result: Result, _: Fixtures) -> str | None:
    """A refused run leaves no run file, lock or study folder behind."""
    made = [p for p in (w / "out").rglob("*")] if (w / "out").exists() else []
    if result.code != 0 and made:
        return "leftover: " + ", ".join(sorted(str(p.relative_to(w)) for p in made)[:3])
    return None


def _recipe_probes() -> list[Probe]:
    cases = {
        "name-300-chars": ("name=" + "n" * 300, ("clean:2", "fine")),
        "epochs-1e13": ("train.epochs=10000000000000", ("clean:2",)),
        "epochs-true": ("train.epochs=true", ("clean:2",)),
        "epochs-float": ("train.epochs=2.5", ("clean:2",)),
        "unknown-key": ("train.epocs=2", ("clean:2",)),
        "batch-size-0": ("data.batch_size=0", ("clean:2",)),
    }
    probes = []
    for case, (override, expect) in cases.items():
        for command in ("run", "validate"):

            def prepare(w: Path, fx: Fixtures, override: str = override, command: str = command) -> list[str]:
                if command == "validate":
                    return _stnkit("validate", RIDGE, *TINY, "--set", override)
                return _stnkit("run", RIDGE, *TINY, "--set", override, "--out", w / "out", "--quiet")

            check = _no_run_file if command == "run" else None
            probes.append(Probe(f"recipe/{case}/{command}", expect, prepare, check, timeout=60))
    return probes


def _ridge_arrays() -> dict[str, np.ndarray]:
    with np.load(ROOT / "recipes" / "data" / "toy-ridge.npz") as data:
        return {key: data[key] for key in data.files}


def _classes(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ridge problem as a three-class problem (integer targets)."""
    return {
        k: (np.digitize(v, [-0.5, 0.5]).astype(np.int64) if k.startswith("y") else v)
        for k, v in arrays.items()
    }


def bad_data(kind: str) -> dict[str, np.ndarray] | None:
    """The arrays of one bad data file (None: a 0-byte file)."""
    a = _ridge_arrays()
    if kind == "nan-train-targets":
        a["y_train"][3] = np.nan
    elif kind == "inf-train-targets":
        a["y_train"][3] = np.inf
    elif kind == "nan-test-targets":
        a["y_test"][5] = np.nan
    elif kind == "nan-features":
        a["x_valid"][2, 4] = np.nan
    elif kind == "complex-features":
        a["x_train"] = a["x_train"].astype(np.complex64) + 1j
    elif kind == "string-labels":
        a["y_train"] = np.array([f"c{int(v > 0)}" for v in a["y_train"]])
    elif kind == "mismatched-lengths":
        a["y_train"] = a["y_train"][:-3]
    elif kind == "label-1e14":
        a = _classes(a)
        a["y_train"][0] = 10**14
    elif kind == "negative-label":
        a = _classes(a)
        a["y_valid"][0] = -1
    elif kind == "features-1d":
        a["x_train"] = a["x_train"][:, 0]
    elif kind == "missing-y-valid":
        del a["y_valid"]
    elif kind == "zero-byte":
        return None
    else:
        raise ValueError(kind)
    return a


DATA_KINDS = (
    "nan-train-targets",
    "inf-train-targets",
    "nan-test-targets",
    "nan-features",
    "complex-features",
    "string-labels",
    "mismatched-lengths",
    "label-1e14",
    "negative-label",
    "features-1d",
    "missing-y-valid",
    "zero-byte",
)


def write_data_recipe(w: Path, arrays: dict[str, np.ndarray] | None) -> Path:
    import yaml

    if arrays is None:
        (w / "data.npz").write_bytes(b"")
    else:
        np.savez(w / "data.npz", **arrays)  # type: ignore[arg-type]
    recipe = yaml.safe_load(RIDGE.read_text())
    recipe["data"]["path"] = "data.npz"
    path = w / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _data_probes() -> list[Probe]:
    probes = []
    for kind in DATA_KINDS:
        for command in ("run", "validate"):

            def prepare(w: Path, fx: Fixtures, kind: str = kind, command: str = command) -> list[str]:
                recipe = write_data_recipe(w, bad_data(kind))
                if command == "validate":
                    return _stnkit("validate", recipe, *TINY)
                return _stnkit("run", recipe, *TINY, "--out", w / "out", "--quiet")

            check = _no_run_file if command == "run" else None
            probes.append(Probe(f"data/{kind}/{command}", ("clean:2",), prepare, check, timeout=60))
    return probes


# -- signals -------------------------------------------------------------------------------------


def _nothing_half_made(w: Path, result: Result, _: Fixtures) -> str | None:
    """Interrupted: no lock without its run, no empty run file or folder, no study folder without
    its manifest, and whatever run file or study is left readable by ``stnkit show``."""
    out = w / "out"
    if not out.exists():
        return None
    found: list[str] = []
    for path in sorted(out.rglob("*")):
        name = str(path.relative_to(w))
        if path.name.endswith(".h5.lock") and not path.with_name(path.name[: -len(".lock")]).exists():
            found.append(f"lock without its run: {name}")
        elif path.suffix == ".h5" and path.stat().st_size == 0:
            found.append(f"empty run file: {name}")
        elif path.is_dir() and not any(path.iterdir()):
            found.append(f"empty folder: {name}")
    studies = [p for p in out.iterdir() if p.is_dir()]
    found += [
        f"study folder without study.json: {p.relative_to(w)}"
        for p in studies
        if not (p / "study.json").exists()
    ]
    if not found:
        for left in [*out.glob("*.h5"), *(p for p in studies if (p / "study.json").exists())]:
            shown = execute(_stnkit("show", left), w, 60.0, None)
            if shown.code != 0:
                found.append(f"`show` fails on {left.relative_to(w)}: {last_line(shown.text)}")
    return "leftover: " + "; ".join(found[:3]) if found else None


def _signal_probes() -> list[Probe]:
    probes = []
    moments = (0.05, 0.3, 0.8, 1.5, 2.5, 4.0)
    for number in (signal.SIGINT, signal.SIGTERM):
        for delay in moments:
            for command in ("run", "tune"):
                if command == "tune" and delay not in (0.3, 1.5, 4.0):
                    continue

                def prepare(w: Path, fx: Fixtures, command: str = command) -> list[str]:
                    if command == "tune":
                        return _stnkit(
                            "tune", RIDGE, *TINY, "-n", "20", "-m", "random", "--out", w / "out", "--quiet"
                        )
                    return _stnkit("run", RIDGE, "--set", "train.epochs=400", "--out", w / "out", "--quiet")

                name = f"signal/{number.name}-at-{delay}s/{command}"
                # the first tens of milliseconds are the interpreter's own start-up, before any
                # stnkit code runs: Python's defaults answer there (a KeyboardInterrupt traceback,
                # or death by SIGTERM), and nothing has been written; README says so
                expect: tuple[str, ...] = ("clean:130",)
                if delay < 0.1:
                    expect = ("clean:130", "traceback", "unclear")
                probes.append(Probe(name, expect, prepare, _nothing_half_made, 90, (number, delay)))
        # moments named by what exists: the writer lock just taken, a run training, a study just
        # made, its first trial running
        anchored = {
            "run-lock-taken": ("run", "out/*.h5.lock", 0.0),
            "run-training": ("run", "out/*.h5", 1.0),
            "study-created": ("tune", "out/*/study.json", 0.0),
            "trial-running": ("tune", "out/*/*.h5", 0.3),
        }
        for moment, (command, pattern, delay) in anchored.items():

            def prepare(w: Path, fx: Fixtures, command: str = command) -> list[str]:
                if command == "tune":
                    return _stnkit(
                        "tune", RIDGE, *TINY, "-n", "20", "-m", "random", "--out", w / "out", "--quiet"
                    )
                return _stnkit("run", RIDGE, "--set", "train.epochs=400", "--out", w / "out", "--quiet")

            probes.append(
                Probe(
                    f"signal/{number.name}-at-{moment}/{command}",
                    ("clean:130",),
                    prepare,
                    _nothing_half_made,
                    120,
                    (number, delay),
                    pattern,
                )
            )
    return probes


# -- command line and Python API ------------------------------------------------------------------


def _cli_probes() -> list[Probe]:
    def fixed(*args: str) -> Prepare:
        return lambda w, fx: _stnkit(*args)

    return [
        Probe("cli/bad-option", ("clean:2",), fixed("run", str(RIDGE), "--bogus")),
        Probe("cli/no-recipe", ("clean:2",), fixed("run")),
        Probe("cli/missing-recipe-file", ("clean:2",), fixed("run", "/nonexistent/recipe.yaml")),
        Probe("cli/show-missing-file", ("clean:2",), fixed("show", "/nonexistent/run.h5")),
        Probe("cli/tune-negative-trials", ("clean:2",), fixed("tune", str(RIDGE), "-n", "-1")),
        Probe("cli/tune-bad-budget", ("clean:2",), fixed("tune", str(RIDGE), "--budget", "soon")),
        Probe("cli/set-without-equals", ("clean:2",), fixed("validate", str(RIDGE), "--set", "train.epochs")),
        Probe("cli/show-good-run", ("fine",), lambda w, fx: _stnkit("show", fx.run)),
        Probe("cli/show-good-study", ("fine",), lambda w, fx: _stnkit("show", fx.study)),
    ]


def _api_edited_recipe(w: Path, fx: Fixtures) -> None:
    import stnkit

    recipe = stnkit.load_recipe(RIDGE, overrides=["train.epochs=2"])
    recipe.train.epochs = 0
    recipe.name = "bad name with spaces"
    result = stnkit.run(recipe, out_dir=w / "out")
    raise SystemExit(0 if result.status == "completed" else 1)


def _api_open_damaged(w: Path, fx: Fixtures) -> None:
    import stnkit

    path = damaged_copy("truncated-50pct", fx.run, w)
    stnkit.open_run(path).table("epochs")


def _api_classification_info(w: Path, fx: Fixtures) -> None:
    from stnkit.data import DataInfo
    from stnkit.task import ClassificationTask

    info = DataInfo(task=ClassificationTask(10), input_shape=(4,), steps_per_epoch=1, n_train=8, n_valid=8)
    if info.output_size != 10:
        print(f"DataInfo(task=ClassificationTask(10)).output_size is {info.output_size}")
        raise SystemExit(3)


def _api_help_names(w: Path, fx: Fixtures) -> None:
    import re

    import stnkit

    # the names a reader of help() is sent to: stnkit.NAME, not stnkit.module.NAME
    named = set(re.findall(r"stnkit\.(\w+)(?![.\w])", stnkit.load_recipe.__doc__ or ""))
    missing = sorted(n for n in named if not hasattr(stnkit, n))
    if missing:
        print("help(stnkit.load_recipe) names what does not exist: " + ", ".join(missing))
        raise SystemExit(3)


def _api_python_data_nan_targets(w: Path, fx: Fixtures) -> None:
    """A data set built in Python (no loader checked it) with one NaN training target."""
    from collections.abc import Iterator

    import torch

    import stnkit
    from stnkit import hookimpl
    from stnkit.data import Batch, DataInfo, Dataset
    from stnkit.errors import StnkitError
    from stnkit.plugins import load_plugins
    from stnkit.recipe import parse_recipe
    from stnkit.task import RegressionTask

    class Line(Dataset):
        name = "probe-python-line"

        def __init__(self, config: Any, context: Any) -> None:
            super().__init__(config, context)
            self.x = torch.linspace(-1, 1, 64).unsqueeze(1)
            self.y = 2 * self.x.squeeze(1)
            self.y[37] = float("nan")

        @property
        def info(self) -> DataInfo:
            return DataInfo(RegressionTask(), (1,), steps_per_epoch=2, n_train=32, n_valid=32)

        def _rows(self, start: int) -> Iterator[Batch]:
            for i in range(start, start + 32, 16):
                yield Batch(self.x[i : i + 16], self.y[i : i + 16], first=i == start)

        def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
            return self._rows(32)  # the NaN is a training target

        def valid_batches(self) -> Iterator[Batch]:
            return self._rows(0)

    class Register:
        @hookimpl
        def stnkit_register_datasets(self, register: Any) -> None:
            register(Line)

    recipe = parse_recipe(
        {
            "name": "python-data",
            "data": {"name": Line.name},
            "model": {"name": "stn-mlp", "hidden_sizes": []},
            "hyperparameters": {"weight_decay": {"kind": "positive", "init": 0.01, "per_example": False}},
            "train": {
                "epochs": 2,
                "warmup_epochs": 0,
                "optimizer": {"name": "sgd", "lr": 0.1},
                "hyper_optimizer": {"name": "adam", "lr": 0.01},
            },
        }
    )
    out = w / "out"
    try:
        result = stnkit.run(recipe, plugins=load_plugins(extra=[("probe-line", Register())]), out_dir=out)
    except StnkitError:
        if out.exists() and any(out.iterdir()):
            print(f"a data error left {sorted(p.name for p in out.iterdir())}")
            raise SystemExit(3) from None
        raise
    print(f"NaN targets ended the run as {result.status!r}: {result.end.message}")
    raise SystemExit(3)


#: Python API probes, each run in a fresh interpreter by this file's ``--api NAME`` mode; a
#: StnkitError is a clean error (exit 2), exit 3 a known wrong answer
API: dict[str, tuple[Callable[[Path, Fixtures], None], tuple[str, ...]]] = {
    "edited-recipe-revalidated": (_api_edited_recipe, ("clean:2",)),
    "open-run-damaged-file": (_api_open_damaged, ("clean:2",)),
    "datainfo-classification-output-size": (_api_classification_info, ("fine",)),
    "help-load-recipe-names": (_api_help_names, ("fine",)),
    "python-data-nan-targets": (_api_python_data_nan_targets, ("clean:2",)),
}


def _known_answer(_: Path, result: Result, __: Fixtures) -> str | None:
    if result.code == 3:
        return "silent-wrong: " + last_line(result.out)
    return None


def _api_probes() -> list[Probe]:
    probes = []
    for name, (_, expect) in API.items():

        def prepare(w: Path, fx: Fixtures, name: str = name) -> list[str]:
            return [
                *_python(),
                str(Path(__file__).resolve()),
                "--api",
                name,
                str(w),
                str(fx.run),
                str(fx.study),
            ]

        probes.append(Probe(f"api/{name}", expect, prepare, _known_answer, timeout=60))
    return probes


def _api_main(name: str, workdir: str, run: str, study: str) -> int:
    from stnkit.errors import StnkitError

    function, _ = API[name]
    try:
        function(Path(workdir), Fixtures(Path(run), Path(study)))
    except StnkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


# -- the benchmark -------------------------------------------------------------------------------


def all_probes() -> list[Probe]:
    return [
        *_cli_probes(),
        *_recipe_probes(),
        *_data_probes(),
        *_run_probes(),
        *_study_probes(),
        *_signal_probes(),
        *_api_probes(),
    ]


def select(probes: Sequence[Probe], patterns: Sequence[str]) -> list[Probe]:
    if not patterns:
        return list(probes)
    return [p for p in probes if any(fnmatch.fnmatch(p.name, pat) or pat in p.name for pat in patterns)]


def make_fixtures(folder: Path) -> Fixtures:
    """A completed two-epoch run and a completed two-trial study, made by the command line."""
    folder.mkdir(parents=True, exist_ok=True)
    runs, studies = folder / "runs", folder / "studies"
    made = [
        execute(_stnkit("run", RIDGE, *TINY, "--out", runs, "--quiet"), folder, 300, None),
        execute(
            _stnkit(
                "tune", RIDGE, *TINY, "-n", "2", "-m", "random", "--seed", "0", "--out", studies, "--quiet"
            ),
            folder,
            300,
            None,
        ),
    ]
    for result in made:
        if result.code != 0:
            raise RuntimeError("fixtures failed: " + result.text[-2000:])
    (run,) = runs.glob("*.h5")
    (study,) = studies.iterdir()
    return Fixtures(run, study)


def run_probes(
    probes: Sequence[Probe],
    folder: Path,
    jobs: int = 2,
    fixtures: Fixtures | None = None,
    report: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    fixtures = fixtures or make_fixtures(folder / "fixtures")
    work = folder / "probes"

    def one(index: int, probe: Probe) -> Outcome:
        outcome = run_probe(probe, fixtures, work / f"{index:03d}")
        if report is not None:
            report(outcome)
        return outcome

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, range(len(probes)), probes))


@dataclass
class Summary:
    counts: Counter[str] = field(default_factory=Counter)
    mismatches: list[Outcome] = field(default_factory=list)

    @property
    def line(self) -> str:
        parts = ", ".join(f"{self.counts.get(name, 0)} {name}" for name in OUTCOMES)
        total = sum(self.counts.values())
        return f"{total} probes: {parts}; {len(self.mismatches)} not as expected"


def summarize(outcomes: Sequence[Outcome]) -> Summary:
    summary = Summary()
    for outcome in outcomes:
        summary.counts[outcome.outcome] += 1
        if not outcome.matches:
            summary.mismatches.append(outcome)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--api"]:
        return _api_main(*arguments[1:5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--only", action="append", default=[], metavar="PATTERN", help="glob or substring of probe names"
    )
    parser.add_argument("--list", action="store_true", help="list the probes and what each expects")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every probe's outcome")
    args = parser.parse_args(arguments)
    probes = select(all_probes(), args.only)
    if args.list:
        for probe in probes:
            print(f"{probe.name:60s} {' or '.join(probe.expect)}")
        return 0
    if not probes:
        print("no probe matches", file=sys.stderr)
        return 2
    folder = args.keep or Path(tempfile.mkdtemp(prefix="stnkit-probes-"))

    def report(outcome: Outcome) -> None:
        if args.verbose or not outcome.matches:
            mark = "ok  " if outcome.matches else "MISS"
            detail = f"  {outcome.detail}" if outcome.detail else ""
            expected = " or ".join(outcome.probe.expect)
            print(
                f"{mark} {outcome.probe.name}: {outcome.label} (expected {expected}){detail}",
                flush=True,
            )

    try:
        summary = summarize(run_probes(probes, folder, args.jobs, report=report))
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(summary.line)
    return 0 if not summary.mismatches else 1


if __name__ == "__main__":
    raise SystemExit(main())
