"""Kill one run again and again, resume it each time, and compare it with an uninterrupted run.

The procedure of issue 15: start ``stnkit run RECIPE``, SIGKILL it 3-10 s later, then again and
again ``stnkit run --resume RUN`` and SIGKILL it 2-10 s later, up to ten kills, then one last
``--resume``. Every chain must end with a completed record identical to the uninterrupted run's,
table by table and row by row (every column but the wall-clock ``time``), with the same final,
best and test values and no inconsistency reported by ``stnkit show``.

    OMP_NUM_THREADS=1 python benchmarks/kill_chain.py recipes/fashion-mnist.yaml \\
        --set train.epochs=5 --chains 20
    OMP_NUM_THREADS=1 python benchmarks/kill_chain.py recipes/toy-ridge.yaml \\
        --set train.epochs=60 --mode fork --first 0.2 1.5 --delay 0.1 1.5 --chains 20

``--mode cli`` (default) runs the real command line in fresh processes, as a user would;
``--mode fork`` forks this process for each attempt (no interpreter start-up, so many more kills
per minute; the same library code runs in the killed process). A kill that comes before the run
file exists leaves nothing to resume: the chain starts the run again, as a user would.

``tests/test_kill_chain.py`` runs short chains of both kinds — random moments and the named kill
points of ``STNKIT_TEST_KILL_AT`` — on a tiny recipe.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

#: root attributes that legitimately differ between an interrupted run and an uninterrupted one
VOLATILE_ATTRS = frozenset({"created", "ended", "resumed", "resumed_from_step"})


class Attempt(Protocol):
    """One process of a chain: waited for with a timeout, SIGKILLed if still running."""

    pid: int

    def wait(self, timeout: float) -> int | None: ...

    def kill(self) -> None: ...


#: a launcher starts ``stnkit run`` (``path`` None) or ``stnkit run --resume path``, with the
#: ``STNKIT_TEST_KILL_AT`` spec ``kill_at`` (None: no named kill)
Launcher = Callable[[Path | None, str | None], Attempt]


# -- launchers -----------------------------------------------------------------------------------


class _Process:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self.process.kill()  # SIGKILL
        self.process.wait()


def cli_launcher(recipe: Path, overrides: Sequence[str], out_dir: Path) -> Launcher:
    """Each attempt is ``python -m stnkit run ...`` in a fresh interpreter."""

    def launch(path: Path | None, kill_at: str | None) -> Attempt:
        if path is None:
            args = ["run", str(recipe), "--out", str(out_dir), "--quiet"]
            for override in overrides:
                args += ["--set", override]
        else:
            args = ["run", "--resume", str(path), "--quiet"]
        env = dict(os.environ)
        env.pop("STNKIT_TEST_KILL_AT", None)
        if kill_at:
            env["STNKIT_TEST_KILL_AT"] = kill_at
        process = subprocess.Popen(
            [sys.executable, "-m", "stnkit", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        return _Process(process)

    return launch


class _Forked:
    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid = int(process.pid)

    def wait(self, timeout: float) -> int | None:
        self.process.join(max(timeout, 0.0))
        code = self.process.exitcode
        return None if code is None else int(code)

    def kill(self) -> None:
        self.process.kill()  # SIGKILL
        self.process.join()


def _forked_attempt(
    recipe: Path,
    overrides: Sequence[str],
    out_dir: Path,
    path: Path | None,
    kill_at: str | None,
    setup: Callable[[], None] | None,
) -> None:
    import torch

    import stnkit
    from stnkit import killpoints

    torch.set_num_threads(1)  # the parent's thread pool does not survive fork()
    os.environ.pop(killpoints.VARIABLE, None)
    if kill_at:
        os.environ[killpoints.VARIABLE] = kill_at
    killpoints._seen.clear()
    if setup is not None:
        setup()
    if path is None:
        result = stnkit.run(recipe, overrides=overrides, out_dir=out_dir)
    else:
        result = stnkit.resume(path, notice=lambda line: None)
    os._exit(0 if result.status == "completed" else 3)


def fork_launcher(
    recipe: Path, overrides: Sequence[str], out_dir: Path, setup: Callable[[], None] | None = None
) -> Launcher:
    """Each attempt is a fork of this process running ``stnkit.run`` / ``stnkit.resume``;
    ``setup`` runs first in the child (a test's patch)."""
    context = multiprocessing.get_context("fork")

    def launch(path: Path | None, kill_at: str | None) -> Attempt:
        process = context.Process(
            target=_forked_attempt, args=(recipe, tuple(overrides), out_dir, path, kill_at, setup)
        )
        process.start()
        return _Forked(process)

    return launch


# -- chains --------------------------------------------------------------------------------------


@dataclass
class Chain:
    """How one chain went: the run file, the kills that landed, every attempt's exit code."""

    path: Path | None = None
    kills: int = 0
    attempts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    restarts: int = 0  # kills that came before the run file existed


def _run_file(out_dir: Path) -> Path | None:
    files = sorted(out_dir.glob("*.h5"))
    return files[0] if files else None


#: an attempt that should die at a named point but runs longer than this has missed it
POINT_TIMEOUT = 300.0


def _wait_for_lock(attempt: Attempt, out_dir: Path, timeout: float = POINT_TIMEOUT) -> None:
    """Until ``attempt`` holds a run file's writer lock (it has built the run and is about to
    write), or has exited."""
    mark = f"stnkit process {attempt.pid}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for lock in out_dir.glob("*.h5.lock"):
            try:
                if lock.read_text() == mark:
                    return
            except OSError:
                continue
        if attempt.wait(0.005) is not None:
            return


def _inode(path: Path | None) -> int | None:
    try:
        return None if path is None else path.stat().st_ino
    except OSError:
        return None


def _wait_for_live(
    attempt: Attempt, out_dir: Path, path: Path | None, timeout: float = POINT_TIMEOUT
) -> None:
    """Until ``attempt``'s run file is live — created, or rebuilt by its resume (the file under
    the run's name is a new one) — so that it is training from here on; or until it exits."""
    before = _inode(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = path if path is not None else next(iter(sorted(out_dir.glob("*.h5"))), None)
        inode = _inode(current)
        if inode is not None and inode != before:
            return
        if attempt.wait(0.005) is not None:
            return


#: when a random kill's delay starts counting: at the attempt's start, once it holds the writer
#: lock, or once its run file is live (created or rebuilt)
ANCHORS = ("start", "lock", "live")


def _completed(path: Path) -> bool:
    import stnkit

    try:
        return str(stnkit.open_run(path).attrs.get("status")) == "completed"
    except Exception:
        return False


def run_chain(
    launch: Launcher, out_dir: Path, schedule: Sequence[float | str], anchor: str = "start"
) -> Chain:
    """Run the schedule, then one last attempt to completion.

    Each entry is one attempt: a number kills it (SIGKILL) that many seconds after ``anchor``
    (:data:`ANCHORS`; the later ones keep start-up from using up the kills), unless it has
    finished by then; a string is a ``STNKIT_TEST_KILL_AT`` spec, and the attempt must die there.
    An attempt that finishes ends the chain early.
    """
    chain = Chain()
    for entry in schedule:
        named = isinstance(entry, str)
        attempt = launch(chain.path, entry if named else None)
        chain.attempts += 1
        try:
            if anchor == "lock" and not named:
                _wait_for_lock(attempt, out_dir)
            elif anchor == "live" and not named:
                _wait_for_live(attempt, out_dir, chain.path)
            code = attempt.wait(POINT_TIMEOUT if named else float(entry))
        except BaseException:
            attempt.kill()  # never leave an attempt running behind a failed or stopped chain
            raise
        if code is None:
            attempt.kill()
            code = -9
            if named:
                raise AssertionError(f"attempt {chain.attempts} never reached kill point {entry!r}")
        chain.exit_codes.append(code)
        if code == 0 and named:
            raise AssertionError(f"attempt {chain.attempts} finished without reaching {entry!r}")
        if code == 0:
            return chain  # finished before the kill came
        if code != -9:
            raise AssertionError(f"attempt {chain.attempts} failed with exit code {code}")
        chain.kills += 1
        if chain.path is None:
            chain.path = _run_file(out_dir)
            chain.restarts += chain.path is None
        if chain.path is not None and _completed(chain.path):
            return chain  # the kill came after the run had ended: nothing left to resume
    attempt = launch(chain.path, None)
    chain.attempts += 1
    try:
        code = attempt.wait(POINT_TIMEOUT)
    except BaseException:
        attempt.kill()
        raise
    if code is None:
        attempt.kill()
        raise AssertionError("the last attempt did not finish")
    chain.exit_codes.append(code)
    if code != 0:
        raise AssertionError(f"the last attempt ended with exit code {code}")
    if chain.path is None:
        chain.path = _run_file(out_dir)
    return chain


# -- comparing -----------------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _scalar_dicts_differ(name: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b or not _same(a[key], b[key]):
            out.append(f"{name}[{key}]: {a.get(key)!r} != {b.get(key)!r}")
    return out


def differences(reference: Path, candidate: Path, ignore_attrs: frozenset[str] = frozenset()) -> list[str]:
    """Every way ``candidate``'s record differs from ``reference``'s: each table's rows, column
    by column (all but the wall-clock ``time``), the final, best, test and best-validation
    values, and the root attributes (except those that name times or resumes)."""
    import stnkit

    ref, got = stnkit.open_run(reference), stnkit.open_run(candidate)
    found: list[str] = []
    for table in ("hyper", "train", "epochs"):
        left, right = ref.table(table), got.table(table)
        if set(left) != set(right):
            found.append(f"{table}: columns {sorted(left)} != {sorted(right)}")
            continue
        rows_left = len(next(iter(left.values()), ()))
        rows_right = len(next(iter(right.values()), ()))
        if rows_left != rows_right:
            found.append(f"{table}: {rows_right} rows, the uninterrupted run has {rows_left}")
            continue
        for column in left:
            if column == "time":
                continue
            if not _same(left[column], right[column]):
                bad = np.flatnonzero(~np.isclose(left[column], right[column], rtol=0, atol=0, equal_nan=True))
                found.append(f"{table}.{column}: rows {bad[:5].tolist()} differ")
    for name in ("initial", "initial_scales", "final", "best", "test", "best_valid"):
        found += _scalar_dicts_differ(name, getattr(ref, name), getattr(got, name))
    skip = VOLATILE_ATTRS | ignore_attrs
    attrs_left = {k: v for k, v in ref.attrs.items() if k not in skip}
    attrs_right = {k: v for k, v in got.attrs.items() if k not in skip}
    found += _scalar_dicts_differ("attrs", attrs_left, attrs_right)
    if got.status != "completed":
        found.append(f"status {got.status}")
    found += [f"show: {problem}" for problem in got.problems()]
    leftovers = [p.name for p in candidate.parent.glob(candidate.name + ".new")]
    found += [f"leftover {name}" for name in leftovers]
    return found


# -- the benchmark -------------------------------------------------------------------------------


def _reference(launch: Launcher, out_dir: Path) -> Path:
    chain = run_chain(launch, out_dir, [])
    assert chain.path is not None
    return chain.path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--chains", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10, help="at most this many kills per chain")
    parser.add_argument("--first", type=float, nargs=2, default=(3.0, 10.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--delay", type=float, nargs=2, default=(2.0, 10.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--mode", choices=("cli", "fork"), default="cli")
    parser.add_argument(
        "--from",
        dest="anchor",
        choices=ANCHORS,
        default="start",
        help="time each kill from the attempt's start (the issue's procedure), from when it takes "
        "the run's writer lock, or from when its run file is live (created or rebuilt)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/kill-chain"))
    args = parser.parse_args(argv)
    # a SIGTERM unwinds like Ctrl-C, so the attempt in flight is killed too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def launcher(folder: Path) -> Launcher:
        folder.mkdir(parents=True, exist_ok=True)
        make = cli_launcher if args.mode == "cli" else fork_launcher
        return make(args.recipe, args.overrides, folder)

    stamp = time.strftime("%Y%m%dT%H%M%S")
    root = args.out / stamp
    reference = _reference(launcher(root / "reference"), root / "reference")
    print(f"uninterrupted run: {reference}")
    rng = random.Random(args.seed)
    identical = 0
    total_kills = 0
    for index in range(args.chains):
        schedule = [rng.uniform(*args.first)] + [rng.uniform(*args.delay) for _ in range(args.kills - 1)]
        folder = root / f"chain{index:02d}"
        try:
            chain = run_chain(launcher(folder), folder, schedule, anchor=args.anchor)
            assert chain.path is not None
            found = differences(reference, chain.path)
        except AssertionError as error:
            chain, found = Chain(), [str(error)]
        total_kills += chain.kills
        identical += not found
        import stnkit

        resumed = stnkit.open_run(chain.path).attrs.get("resumed", 0) if chain.path else "-"
        verdict = "identical" if not found else "DIFFERENT: " + "; ".join(found[:4])
        print(
            f"chain {index + 1:2d}: {chain.kills:2d} kills ({chain.restarts} before the file existed), "
            f"{chain.attempts:2d} processes, resumed {resumed}: {verdict}",
            flush=True,
        )
    record = __import__("stnkit").open_run(reference)
    rows = {name: len(record.table(name)["step"]) for name in ("hyper", "train", "epochs")}
    print(
        f"{identical}/{args.chains} chains complete and identical to the uninterrupted run "
        f"({total_kills} SIGKILLs in all; reference rows: {rows})"
    )
    return 0 if identical == args.chains else 1


if __name__ == "__main__":
    raise SystemExit(main())
