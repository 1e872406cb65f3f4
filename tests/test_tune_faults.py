"""stnkit tune under faults: damaged journals and manifests, failing trials, crashing workers,
interrupted creation, deleted run files, a SIGKILL across a budget."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from stnkit.cli import main
from stnkit.tune.analysis import open_study
from stnkit.tune.driver import TuneOptions, create_study, drive, snapshot
from stnkit.tune.progress import _counts_line
from stnkit.tune.study import FAILURE_LIMIT, VERSION, is_study, read_manifest, write_manifest
from stnkit_tabular.synthetic import make_ridge_problem, save_problem
from tests.test_tune import RECIPE, load, quiet_view, start_cli, studies, wait_for

SHORT = ["train.epochs=2"]


def complete(study: Path) -> list[optuna.trial.FrozenTrial]:
    return [t for t in load(study).get_trials(deepcopy=False) if t.state.name == "COMPLETE"]


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_problem(make_ridge_problem(seed=3), tmp_path_factory.mktemp("data") / "ridge.npz")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A study of two complete trials, made once; tests work on copies."""
    options = TuneOptions(method="random", trials=2, seed=0)
    folder = create_study(RECIPE, options, [f"data.path={data}", *SHORT], tmp_path_factory.mktemp("base"))
    assert drive(folder, quiet_view()).status == "completed"
    return folder


@pytest.fixture
def study(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs" / finished.name
    shutil.copytree(finished, copy)
    return copy


def ask_for(study: Path, trials: int) -> None:
    """Raise the study's --trials (setup: a resume then has trials to run)."""
    manifest = read_manifest(study)
    manifest.trials = trials
    write_manifest(study, manifest)


# -- a damaged journal tail is cut back before anything is appended ---------------------------------


def _torn(last: bytes) -> bytes:
    return last[: len(last) * 3 // 5]  # a record cut short, no newline


TAILS = {
    "torn last line": _torn,
    "garbage bytes": lambda last: b"\x00\xff\x13garbage\n\x07more junk",
    "half a JSON record": lambda last: last[: len(last) // 2] + b"\n",
    "empty trailing line": lambda last: b"\n",
}


@pytest.mark.parametrize("variant", list(TAILS))
def test_a_damaged_journal_tail_is_repaired_and_the_study_stays_readable(
    study: Path, variant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = study / "journal.log"
    whole = journal.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    tail = TAILS[variant](last)
    journal.write_bytes(whole + tail)
    ask_for(study, 3)
    capsys.readouterr()

    assert main(["tune", "--resume", str(study), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "notice: journal.log ended in" in err and "cut back to its last complete record" in err
    (kept,) = study.glob("journal.log.torn-*")
    assert kept.read_bytes() == tail  # the cut bytes are kept, not thrown away
    assert len(complete(study)) == 3  # plain Optuna reads the resumed journal
    run = complete(study)[0].user_attrs["run"]

    # every later command reads the study
    for command in (
        ["show", str(study), "--json"],
        ["ls", str(study.parent), "--json"],
        ["compare", str(study / run), str(study), "--json"],
        ["export", str(study), "--format", "csv", "-o", str(study.parent / "csv")],
        ["plot", str(study), "-o", str(study.parent / "search.png")],
    ):
        capsys.readouterr()
        assert main(command) == 0, (command, capsys.readouterr().err)
    listing = json.loads(_json_of(capsys, ["ls", str(study.parent), "--json"]))
    (entry,) = [e for e in listing if e.get("kind") == "study"]
    assert entry["error"] is None and entry["complete"] == 3


def _json_of(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def test_damage_inside_the_journal_is_refused_and_nothing_is_written(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = study / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    at = len(lines) // 2
    lines.insert(at, b"\x00\x01 not a record\n")
    journal.write_bytes(b"".join(lines))
    before = journal.read_bytes()
    ask_for(study, 3)
    capsys.readouterr()

    assert main(["tune", "--resume", str(study)]) == 2
    err = one_line_error(capsys)
    assert f"{journal} is damaged at line {at + 1}" in err
    assert journal.read_bytes() == before and not list(study.glob("journal.log.torn-*"))
    assert read_manifest(study).sessions == 1  # no session was started
    assert main(["show", str(study)]) == 2
    assert f"is damaged at line {at + 1}" in one_line_error(capsys)


# -- a worker that crashes on resume ------------------------------------------------------------------


def test_a_resume_whose_worker_crashes_exits_non_zero_with_its_error(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The study has complete trials but fewer than asked for; its worker cannot run (its recipe
    is not a mapping): the resume must not report success."""
    ask_for(study, 4)
    manifest = read_manifest(study)
    manifest.recipe = "[1, 2]"
    write_manifest(study, manifest)
    capsys.readouterr()
    assert main(["tune", "--resume", str(study), "--quiet"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "worker 0 ended with an error" in err and "is not a recipe mapping with a name" in err
    assert len(complete(study)) == 2


# -- failing trials count and end the study -----------------------------------------------------------


@pytest.fixture
def nan_data(tmp_path: Path) -> Path:
    arrays = make_ridge_problem(seed=3)
    for split in ("train", "valid", "test"):
        arrays[f"y_{split}"] = np.full_like(arrays[f"y_{split}"], np.nan)
    return save_problem(arrays, tmp_path / "nan.npz")


def _trial_states(study: Path) -> list[str]:
    return [t.state.name for t in load(study).get_trials(deepcopy=False)]


def test_a_study_stops_after_a_run_of_failed_trials_with_the_first_failure(
    tmp_path: Path, nan_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    args = ["tune", str(RECIPE), "--method", "random", "--trials", "50", "--out", str(out), "--quiet"]
    assert main([*args, "--set", f"data.path={nan_data}", "--set", "train.epochs=2"]) == 1
    (folder,) = studies(out)
    assert _trial_states(folder) == ["FAIL"] * FAILURE_LIMIT
    first = load(folder).trials[0].user_attrs["failed_because"]
    err = " ".join(capsys.readouterr().err.split())  # the CLI wraps the status line
    assert f"stopped after {FAILURE_LIMIT} failed trials in a row; the first, trial 0: {first}" in err


def test_failed_trials_count_towards_trials(
    tmp_path: Path, nan_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    args = ["tune", str(RECIPE), "--method", "random", "--trials", "2", "--out", str(out), "--quiet"]
    assert main([*args, "--set", f"data.path={nan_data}", "--set", "train.epochs=2"]) == 1
    (folder,) = studies(out)
    assert _trial_states(folder) == ["FAIL", "FAIL"]
    assert "no trial completed; the first failure, trial 0:" in " ".join(capsys.readouterr().err.split())
    # a resume has nothing left to do: the two failures are the two trials asked for
    assert main(["tune", "--resume", str(folder), "--quiet"]) == 1
    assert _trial_states(folder) == ["FAIL", "FAIL"]
    snap = snapshot(load(folder), folder, read_manifest(folder), time.time(), None)
    assert "trials 2/2 done, 0 complete, 0 pruned, 2 failed" in _counts_line(snap)


def test_a_resumed_study_whose_data_folder_is_gone_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = save_problem(make_ridge_problem(seed=3), tmp_path / "data" / "ridge.npz")
    options = TuneOptions(method="random", trials=1, seed=0)
    folder = create_study(RECIPE, options, [f"data.path={data}", *SHORT], tmp_path / "runs")
    assert drive(folder, quiet_view()).status == "completed"
    ask_for(folder, 1000)
    shutil.rmtree(tmp_path / "data")
    capsys.readouterr()
    assert main(["tune", "--resume", str(folder), "--quiet"]) == 1
    assert _trial_states(folder) == ["COMPLETE"] + ["FAIL"] * FAILURE_LIMIT
    err = " ".join(capsys.readouterr().err.split())
    assert "failed trials in a row; the first, trial 1:" in err and "ridge.npz" in err


def test_a_resumed_session_whose_every_trial_failed_is_an_error_below_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two trials left, both failing: fewer than the limit in a row, but nothing this session ran
    succeeded, so the session reports the failure rather than exit 0."""
    data = save_problem(make_ridge_problem(seed=3), tmp_path / "data" / "ridge.npz")
    options = TuneOptions(method="random", trials=1, seed=0)
    folder = create_study(RECIPE, options, [f"data.path={data}", *SHORT], tmp_path / "runs")
    assert drive(folder, quiet_view()).status == "completed"
    ask_for(folder, 3)
    shutil.rmtree(tmp_path / "data")
    capsys.readouterr()
    assert main(["tune", "--resume", str(folder), "--quiet"]) == 1
    assert _trial_states(folder) == ["COMPLETE", "FAIL", "FAIL"]
    err = " ".join(capsys.readouterr().err.split())
    assert "every trial of this session failed (2); the first, trial 1:" in err and "ridge.npz" in err


# -- damaged or missing study files: one line, exit 2 -----------------------------------------------------


def _remove_journal(study: Path) -> None:
    (study / "journal.log").unlink()


def _truncate_manifest(study: Path) -> None:
    text = (study / "study.json").read_bytes()
    (study / "study.json").write_bytes(text[: len(text) // 2])


def _garbage_manifest(study: Path) -> None:
    (study / "study.json").write_bytes(os.urandom(300).replace(b"{", b"x"))


def _half_created(study: Path) -> None:
    """What an interruption during creation used to leave: the Optuna journal, no manifest."""
    (study / "study.json").unlink()
    for run in study.glob("*.h5"):
        run.unlink()


def _empty_journal(study: Path) -> None:
    (study / "journal.log").write_bytes(b"")


def _empty_folder(study: Path) -> None:
    shutil.rmtree(study)
    study.mkdir()


def _unknown_version(study: Path) -> None:
    data = json.loads((study / "study.json").read_text())
    data["version"] = VERSION + 1
    (study / "study.json").write_text(json.dumps(data))


def _wrong_field(study: Path) -> None:
    data = json.loads((study / "study.json").read_text())
    data["trials"] = "many"
    (study / "study.json").write_text(json.dumps(data))


DAMAGE = {
    "missing journal": (_remove_journal, "has no journal.log"),
    "truncated manifest": (_truncate_manifest, "study.json is damaged (not JSON"),
    "garbage manifest": (_garbage_manifest, "study.json is damaged (not JSON"),
    "half-created": (_half_created, "has a journal.log but no study.json"),
    "empty journal": (_empty_journal, "holds no study named"),
    "empty folder": (_empty_folder, "is not a study folder (no study.json"),
    "another version": (
        _unknown_version,
        f"manifest version {VERSION + 1}; this stnkit reads version {VERSION}",
    ),
    "a field of the wrong type": (_wrong_field, "study.json is damaged (trials:"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_study_is_one_line_and_exit_2_everywhere(
    study: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = next(study.glob("*.h5"))
    other = study.parent / "other.h5"
    shutil.copy(run, other)
    spoil, message = DAMAGE[damage]
    spoil(study)
    before = sorted((p.relative_to(study), p.stat().st_size) for p in study.rglob("*"))
    for command in (
        ["show", str(study)],
        ["show", str(study), "--json"],
        ["compare", str(other), str(study)],
        ["export", str(study)],
        ["export", str(study), "--format", "csv", "-o", str(study.parent / "csv")],
        ["plot", str(study), "-o", str(study.parent / "search.png")],
        ["tune", "--resume", str(study)],
    ):
        capsys.readouterr()
        assert main(command) == 2, command
        assert message in one_line_error(capsys), command
    assert sorted((p.relative_to(study), p.stat().st_size) for p in study.rglob("*")) == before
    # ls lists what it can: a damaged study is one row saying why, the other runs are listed
    capsys.readouterr()
    assert main(["ls", str(study.parent), "--json"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    listing = json.loads(captured.out)
    assert str(other) in [e["path"] for e in listing]
    broken = [e for e in listing if e.get("kind") == "study"]
    if is_study(study):
        assert len(broken) == 1 and message in broken[0]["error"]


# -- creating a study is all or nothing ---------------------------------------------------------------------


_INTERRUPT_AT_MANIFEST = """
import os, signal, sys, time
import stnkit.tune.driver as driver
from stnkit.cli import main

def interrupted(folder, manifest):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(30)

driver.write_manifest = interrupted
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_during_creation_leaves_no_study_folder(tmp_path: Path, data: Path, signame: str) -> None:
    out = tmp_path / "runs"
    args = ["tune", str(RECIPE), "--out", str(out), "--set", f"data.path={data}", "--quiet"]
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_AT_MANIFEST, signame, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []  # neither the study folder nor its staging folder


def test_a_staging_folder_left_by_a_sigkill_is_not_a_study(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    staging = study.parent / f".{study.name}.creating-4242"
    study.rename(staging)
    assert not is_study(staging)
    assert main(["show", str(staging)]) == 2
    assert "never finished being created" in one_line_error(capsys)
    assert main(["ls", str(staging.parent), "--json"]) == 0
    assert [e for e in json.loads(capsys.readouterr().out) if e.get("kind") == "study"] == []


def test_a_new_study_removes_staging_folders_whose_process_is_gone(
    study: Path, data: Path, tmp_path: Path
) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = study.parent / f".{study.name}.creating-{int(gone.stdout)}"
    alive = study.parent / f".{study.name}.creating-{os.getpid()}"
    shutil.copytree(study, dead)
    alive.mkdir()
    create_study(RECIPE, TuneOptions(trials=1), [f"data.path={data}"], study.parent)
    assert not dead.exists() and alive.is_dir()  # a live process's staging folder is left alone


# -- a deleted best-trial run file -------------------------------------------------------------------------


def test_show_says_the_best_trials_run_file_is_missing(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    best = open_study(study).best
    assert best is not None and best.run is not None
    best.run.unlink()
    text = _json_of(capsys, ["show", str(study)])
    assert f"run file missing (deleted or moved): {best.run}" in " ".join(text.split())
    summary = json.loads(_json_of(capsys, ["show", str(study), "--json"]))
    assert summary["best"]["run_missing"] is True
    other = next(study.glob("*.h5"))
    assert main(["compare", str(other), str(study)]) == 2
    assert f"the run file of its best trial ({best.number}) is missing" in one_line_error(capsys)


def test_show_of_an_intact_study_names_its_run_file(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads(_json_of(capsys, ["show", str(study), "--json"]))
    assert summary["best"]["run_missing"] is False
    assert Path(summary["best"]["run"]).is_file()


# -- the budget across a SIGKILL, measured ------------------------------------------------------------------


def test_the_budget_across_a_sigkill_is_neither_lost_nor_counted_twice(tmp_path: Path, data: Path) -> None:
    """A real `stnkit tune --budget` is SIGKILLed mid-trial; the time it had spent is in the
    manifest, the resume gets only what is left, and no trial is lost or counted twice."""
    budget, killed_after = 30.0, 12.0
    out = tmp_path / "runs"
    args = ["tune", str(RECIPE), "--method", "random", "--budget", f"{budget:g}s", "--seed", "2"]
    process = start_cli([*args, "--out", str(out), "--set", f"data.path={data}", "--set", "train.epochs=40"])
    try:
        folder = wait_for(lambda: (studies(out) or [None])[0], "the study folder")

        def spent_mid_trial() -> bool:
            trials = load(folder).get_trials(deepcopy=False)
            done = any(t.state.name == "COMPLETE" for t in trials)
            running = any(t.state.name == "RUNNING" for t in trials)
            return done and running and read_manifest(folder).spent_seconds >= killed_after

        wait_for(spent_mid_trial, "a trial done, one under way and part of the budget spent")
        os.killpg(process.pid, signal.SIGKILL)
        killed_at = time.time()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    spent = read_manifest(folder).spent_seconds
    first_deadline = float((folder / "deadline").read_text())
    session_start = first_deadline - budget
    assert killed_after <= spent <= killed_at - session_start  # measured from the session's own clock
    before = load(folder).get_trials(deepcopy=False)
    finished = {t.number: t.value for t in before if t.state.name == "COMPLETE"}
    (killed,) = [t for t in before if t.state.name == "RUNNING"]

    assert drive(folder, quiet_view(), resumed=True).status == "completed"
    after = load(folder).get_trials(deepcopy=False)
    # the resumed session's budget is what was left: its deadline minus the start of its first
    # trial (which starts after the deadline is set) is at most budget - spent
    second = [t for t in after if t.user_attrs.get("session") == 2]
    assert second, "the resume ran no trial"
    start = min(t.datetime_start.timestamp() for t in second if t.datetime_start is not None)
    left = float((folder / "deadline").read_text()) - start
    assert budget - spent - 5.0 <= left <= budget - spent
    # nothing lost, nothing counted twice
    assert {t.number: t.value for t in after if t.number in finished} == finished
    assert after[killed.number].state.name == "FAIL"
    retries = [t for t in after if t.user_attrs.get("retry_of") == killed.number]
    (retry,) = retries  # the killed trial's point, run once more in the resumed session
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert retry.user_attrs["session"] == 2
    assert not [t for t in after if t.state.name in ("RUNNING", "WAITING")]
    assert read_manifest(folder).spent_seconds >= budget
