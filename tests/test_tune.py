"""stnkit tune: baseline searches with Optuna over the same recipe (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend

import stnkit
from stnkit.cli import main
from stnkit.hyper.kinds import IntegerKind, IntervalKind, PositiveKind, SearchRange, UnitKind
from stnkit.store.reader import open_run
from stnkit.tune.analysis import best_of, open_study
from stnkit.tune.driver import TuneOptions, create_study, drive
from stnkit.tune.progress import StudyView
from stnkit.tune.study import held, parse_duration, read_manifest, trial_lock_path, write_manifest
from stnkit.tune.worker import TrialObserver
from stnkit_tabular.synthetic import make_ridge_problem, save_problem, validation_loss
from tests.test_ridge import best_closed_form

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "recipes" / "toy-ridge.yaml"
# short trials: 40 epochs at a higher learning rate get the ridge fit close to its optimum
FAST = ["train.epochs=40", "train.optimizer.lr=0.05"]


def studies(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (p / "study.json").is_file()) if folder.exists() else []


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def load(study: Path) -> optuna.Study:
    """The study opened with plain Optuna, as a user (or optuna-dashboard) would."""
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(study / "journal.log")))
    return optuna.load_study(study_name=study.name, storage=storage)


def quiet_view() -> StudyView:
    from rich.console import Console

    return StudyView(Console(), quiet=True)


@pytest.fixture
def ridge(tmp_path: Path) -> tuple[dict[str, np.ndarray], Path]:
    arrays = make_ridge_problem(seed=7)
    return arrays, save_problem(arrays, tmp_path / "ridge.npz")


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 240.0) -> Any:
    """Poll until ``condition()`` is truthy; only a generous safety limit, no timing assumption."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def start_cli(args: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "stnkit", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a SIGKILL takes the workers too
    )


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


# -- acceptance -------------------------------------------------------------------------------------


def test_tpe_finds_a_weight_decay_near_the_closed_form_optimum(
    tmp_path: Path, ridge: tuple[dict[str, np.ndarray], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    arrays, data = ridge
    out = tmp_path / "runs"
    args = ["tune", str(RECIPE), "--method", "tpe", "--trials", "20", "--seed", "0", "--out", str(out)]
    assert main([*args, *sets(f"data.path={data}", *FAST), "--quiet"]) == 0
    (study,) = studies(out)
    assert capsys.readouterr().out.strip() == str(study)
    loaded = load(study)  # the journal opens with plain Optuna
    assert len([t for t in loaded.trials if t.state.name == "COMPLETE"]) == 20
    found = loaded.best_trial.params["weight_decay"]
    best_wd, best_loss = best_closed_form(arrays)
    ratio = validation_loss(arrays, found) / best_loss
    assert ratio < 1.05, f"TPE found weight decay {found:.4g}, the optimum is {best_wd:.4g}"
    # each trial is an ordinary, completed run of the plain network at its sampled value
    best_run = open_run(study / loaded.best_trial.user_attrs["run"])
    assert best_run.status == "completed" and best_run.recipe["response"] == {"name": "fixed"}
    assert best_run.recipe["hyperparameters"]["weight_decay"]["init"] == pytest.approx(found)
    assert best_run.best_val_loss == pytest.approx(loaded.best_value)

    summary = json.loads(_cli_out(capsys, ["show", str(study), "--json"]))
    assert summary["method"] == "tpe"
    assert summary["trials"]["complete"] == 20 and summary["trials"]["failed"] == 0
    best = summary["best"]
    assert best["run"] == str(study / loaded.best_trial.user_attrs["run"])
    assert best["best_val_loss"] == pytest.approx(loaded.best_value)
    assert best["hyperparameters"] == {"weight_decay": pytest.approx(found)}
    assert set(best["test"]) == {"loss", "rmse"}


def _cli_out(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def test_sigkill_mid_trial_then_resume_keeps_finished_trials(
    tmp_path: Path, ridge: tuple[dict[str, np.ndarray], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, data = ridge
    out = tmp_path / "runs"
    args = ["tune", str(RECIPE), "--method", "random", "--trials", "3", "--seed", "1", "--out", str(out)]
    process = start_cli([*args, *sets(f"data.path={data}", "train.epochs=300"), "--quiet"])
    try:
        study_dir = wait_for(lambda: (studies(out) or [None])[0], "the study folder")
        wait_for(lambda: (study_dir / "journal.log").exists(), "the journal")

        def mid_trial() -> bool:
            # one trial finished and the next one under way, with epochs already in its run file
            trials = load(study_dir).get_trials(deepcopy=False)
            done = [t for t in trials if t.state.name == "COMPLETE"]
            running = [t for t in trials if t.state.name == "RUNNING" and "run" in t.user_attrs]
            if not done or not running:
                return False
            run = open_run(study_dir / running[0].user_attrs["run"])
            return run.n_epochs > 0

        wait_for(mid_trial, "a finished trial and one in progress")
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = load(study_dir).get_trials(deepcopy=False)
    finished = {t.number: (t.params, t.value) for t in before if t.state.name == "COMPLETE"}
    killed = [t for t in before if t.state.name == "RUNNING"]
    assert finished and len(killed) == 1, [(t.number, t.state.name, t.user_attrs) for t in before]

    assert main(["tune", "--resume", str(study_dir), "--quiet"]) == 0
    after = load(study_dir).get_trials(deepcopy=False)
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert len(complete) == 3  # the requested count, nothing counted twice
    for number, (params, value) in finished.items():
        assert after[number].state.name == "COMPLETE"
        assert (after[number].params, after[number].value) == (params, value)
    # the killed trial is failed, and its point was retried
    assert after[killed[0].number].state.name == "FAIL"
    retries = [t for t in complete if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(retries) == 1 and retries[0].params == killed[0].params
    assert open_run(study_dir / killed[0].user_attrs["run"]).status == "interrupted"
    summary = json.loads(_cli_out(capsys, ["show", str(study_dir), "--json"]))
    assert summary["trials"]["complete"] == 3 and summary["trials"]["failed"] == 1


def test_two_jobs_run_two_trials_at_once(tmp_path: Path, ridge: tuple[dict[str, np.ndarray], Path]) -> None:
    """Trials long enough (minutes) not to end before the other starts: only parallel workers can
    have two under way, each holding its running-trial lock. Ctrl-C then stops both cleanly."""
    _, data = ridge
    out = tmp_path / "runs"
    args = ["tune", str(RECIPE), "--method", "random", "--trials", "4", "--jobs", "2", "--out", str(out)]
    process = start_cli([*args, *sets(f"data.path={data}", "train.epochs=20000"), "--quiet"])
    try:
        study_dir = wait_for(lambda: (studies(out) or [None])[0], "the study folder")
        wait_for(lambda: (study_dir / "journal.log").exists(), "the journal")

        def both_running() -> list[int]:
            trials = load(study_dir).get_trials(deepcopy=False)
            running = [t.number for t in trials if t.state.name == "RUNNING" and "run" in t.user_attrs]
            return running if len(running) == 2 else []

        numbers = wait_for(both_running, "two trials running at once")
        assert all(held(trial_lock_path(study_dir, n)) for n in numbers)
        os.kill(process.pid, signal.SIGINT)  # Ctrl-C: the workers checkpoint and stop
        assert process.wait(timeout=240) == 130
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    trials = load(study_dir).get_trials(deepcopy=False)
    assert [trials[n].state.name for n in numbers] == ["FAIL", "FAIL"]
    for n in numbers:
        assert trials[n].user_attrs["failed_because"] == "interrupted by the user"
        assert open_run(study_dir / trials[n].user_attrs["run"]).status == "interrupted"
    # each interrupted point waits in the queue for --resume
    waiting = [t for t in trials if t.state.name == "WAITING"]
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == sorted(numbers)
    assert read_manifest(study_dir).jobs == 2


# -- pruning ----------------------------------------------------------------------------------------


class _PruneAt:
    """A stand-in for an Optuna trial whose pruner says stop after epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.reported: dict[int, float] = {}
        self.attrs: dict[str, Any] = {}

    def report(self, value: float, step: int) -> None:
        self.reported[step] = value

    def should_prune(self) -> bool:
        return max(self.reported) >= self.epoch

    def set_user_attr(self, key: str, value: Any) -> None:
        self.attrs[key] = value


def test_a_pruned_trial_ends_as_pruned_in_its_run_file(tmp_path: Path, ridge: tuple[dict, Path]) -> None:
    _, data = ridge
    trial = _PruneAt(3)
    overrides = [f"data.path={data}", "response={name: fixed}", "train.epochs=50"]
    result = stnkit.run(
        RECIPE, overrides=overrides, out_dir=tmp_path, observers=[TrialObserver(trial, tmp_path, True)]
    )
    assert result.status == "pruned"
    assert sorted(trial.reported) == [1, 2, 3]  # every epoch's validation loss was reported
    record = open_run(result.path)
    assert record.status == "pruned" and record.n_epochs == 3
    assert trial.attrs["run"] == result.path.name


def test_the_median_pruner_stops_a_trial_behind_the_others(
    tmp_path: Path, ridge: tuple[dict, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Five earlier trials reported a validation loss of 0 at every epoch: the median pruner must
    stop the next real trial at its first epoch."""
    _, data = ridge
    options = TuneOptions(method="random", trials=6, prune="median", seed=0)
    folder = create_study(RECIPE, options, [f"data.path={data}", "train.epochs=30"], tmp_path)
    study = load(folder)
    distribution = optuna.distributions.FloatDistribution(1e-5, 10.0, log=True)
    for _ in range(5):
        study.add_trial(
            optuna.trial.create_trial(
                params={"weight_decay": 0.5},
                distributions={"weight_decay": distribution},
                value=0.0,
                intermediate_values={epoch: 0.0 for epoch in range(1, 31)},
            )
        )
    assert drive(folder, quiet_view()).status == "completed"
    trials = load(folder).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5 + ["PRUNED"]
    record = open_run(folder / trials[5].user_attrs["run"])
    assert record.status == "pruned" and record.n_epochs == 1
    summary = json.loads(_cli_out(capsys, ["show", str(folder), "--json"]))
    assert summary["trials"]["pruned"] == 1


# -- grid, budget, analysis ------------------------------------------------------------------------------


def test_grid_search_visits_every_grid_point_and_analysis_reads_the_study(
    tmp_path: Path, ridge: tuple[dict, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, data = ridge
    out = tmp_path / "runs"
    args = ["tune", str(RECIPE), "--method", "grid", "--grid-points", "3", "--out", str(out), "--quiet"]
    assert main([*args, *sets(f"data.path={data}", "train.epochs=10")]) == 0
    (study,) = studies(out)
    values = sorted(t.params["weight_decay"] for t in load(study).trials)
    assert values == pytest.approx([1e-5, np.sqrt(1e-5 * 10.0), 10.0])  # log-spaced, the documented range

    # ls lists the study, not its trial files; an STN run beside it is listed as a run
    stn = stnkit.run(RECIPE, overrides=[f"data.path={data}", "train.epochs=10"], out_dir=out)
    listing = json.loads(_cli_out(capsys, ["ls", str(out), "--json"]))
    runs = [e for e in listing if e.get("kind") != "study"]
    (entry,) = [e for e in listing if e.get("kind") == "study"]
    assert [e["path"] for e in runs] == [str(stn.path)]
    assert entry["method"] == "grid" and entry["complete"] == 3 and entry["path"] == str(study)

    # compare: the STN run beside the study's best trial
    comparison = json.loads(_cli_out(capsys, ["compare", str(stn.path), str(study), "--json"]))
    best = open_study(study).best
    assert [r["path"] for r in comparison["runs"]] == [str(stn.path), str(best.run)]

    # export: the trials table
    _cli_out(capsys, ["export", str(study), "--format", "csv", "-o", str(tmp_path / "csv")])
    rows = (tmp_path / "csv" / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,value,weight_decay,test_loss,test_rmse")
    assert len(rows) == 4 and all(",complete," in row for row in rows[1:])

    # plot: best so far against wall time, with the STN run marked
    image = tmp_path / "search.png"
    _cli_out(capsys, ["plot", str(study), str(stn.path), "-o", str(image)])
    assert image.stat().st_size > 10_000
    times, best_so_far = open_study(study).best_so_far()
    assert len(times) == 3 and times == sorted(times)
    assert best_so_far == sorted(best_so_far, reverse=True) and best_so_far[-1] == pytest.approx(best.value)
    # read at a budget: only the trials that had finished by then (the benchmarks' 1x/3x/10x rows)
    record = open_study(study)
    assert record.finished_within(times[0] - 1e-3) == [] and best_of([]) is None
    first = record.finished_within(times[0])
    assert len(first) == 1 and first[0].value == pytest.approx(best_so_far[0])
    assert len(record.finished_within(times[-1])) == 3 and best_of(record.finished_within(times[-1])) == best

    text = _cli_out(capsys, ["show", str(study)])
    assert "grid" in text and "3 complete" in text


def test_a_spent_budget_starts_no_more_trials(tmp_path: Path, ridge: tuple[dict, Path]) -> None:
    _, data = ridge
    options = TuneOptions(method="random", budget=parse_duration("20m"))
    folder = create_study(RECIPE, options, [f"data.path={data}"], tmp_path)
    manifest = read_manifest(folder)
    assert manifest.trials is None and manifest.budget_seconds == 1200
    manifest.spent_seconds = 1200.0  # as if an earlier session had used it all
    write_manifest(folder, manifest)
    assert drive(folder, quiet_view(), resumed=True).status == "completed"
    assert load(folder).trials == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("20m", 1200), ("1h", 3600), ("1.5h", 5400), ("45", 45)]
)
def test_budgets_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "bayes"], "unknown method 'bayes'"),
        (["--budget", "ten minutes"], "--budget 'ten minutes' is not a duration"),
        (["--budget", "0s"], "is not a duration"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--set", "hyperparameters.weight_decay.tune=false"], "nothing to tune"),
        (["--method", "grid", "--trials", "4", "--grid-points", "5"], "the grid has 5 points"),
        (["--prune", "hyperband"], "--prune 'hyperband' is not one of"),
        (["--storage", "nosuchdb://nowhere"], "cannot create the Optuna study in nosuchdb://nowhere"),
        (
            ["--set", "hyperparameters.weight_decay.search={low: 0, high: 1}"],
            "search.low (0) is not a valid value",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_study_folder(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    assert main(["tune", str(RECIPE), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("command", [["tune", "--resume"], ["show"], ["export"]])
def test_a_folder_that_is_not_a_study_is_refused(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert main([*command, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a study folder" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# -- search ranges from the kinds ------------------------------------------------------------------------


def test_kinds_declare_their_search_ranges() -> None:
    assert UnitKind(UnitKind.Config(init=0.5)).search_range() == SearchRange(0.01, 0.99)
    interval = IntervalKind(IntervalKind.Config(init=0.1, low=0.0, high=0.3)).search_range()
    assert (interval.low, interval.high, interval.log) == (pytest.approx(0.003), pytest.approx(0.297), False)
    assert IntegerKind(IntegerKind.Config(init=2, low=0, high=4)).search_range() == SearchRange(
        0, 4, integer=True
    )
    assert PositiveKind(PositiveKind.Config(init=0.1)).search_range() == SearchRange(1e-5, 10.0, log=True)
    above = PositiveKind(PositiveKind.Config(init=2.0, lower=1.0)).search_range()
    assert above.log and above.low > 1.0 and above.high == 1000 * above.low


def test_a_recipe_overrides_a_search_range() -> None:
    kind = PositiveKind(PositiveKind.Config(init=0.1, search={"low": 0.01, "high": 2.0, "log": True}))
    assert kind.search_range() == SearchRange(0.01, 2.0, log=True)
    integer = IntegerKind(IntegerKind.Config(init=2, low=0, high=8, search={"low": 1, "high": 3}))
    assert integer.search_range() == SearchRange(1, 3, integer=True)
    unit = UnitKind(UnitKind.Config(init=0.5, search={"low": 0.2, "high": 1.0}))
    with pytest.raises(ValueError, match="search.high"):
        unit.search_range()  # a dropout rate of 1 is not a value the kind takes


def test_an_unbounded_third_party_kind_must_be_given_a_range() -> None:
    from stnkit.hyper.kinds import HyperConfig, HyperKind

    class Free(HyperKind):
        name = "free"

    with pytest.raises(ValueError, match="no default search range"):
        Free(HyperConfig(init=0.0)).search_range()
    given = Free(HyperConfig(init=0.0, search={"low": -1.0, "high": 1.0})).search_range()
    assert given == SearchRange(-1.0, 1.0)


def test_trials_train_the_plain_network_at_the_sampled_value(
    tmp_path: Path, ridge: tuple[dict, Path]
) -> None:
    """The trial's recipe is the study's recipe with response: fixed, init at the sample, and
    nothing else changed."""
    from stnkit.tune.space import SearchSpace, trial_recipe_data

    base = yaml.safe_load(RECIPE.read_text())
    space = SearchSpace({"weight_decay": SearchRange(1e-5, 10.0, log=True)})
    data = trial_recipe_data(base, space, {"weight_decay": 0.25}, "toy-ridge-trial-0007")
    assert data["response"] == {"name": "fixed"}
    assert data["hyperparameters"]["weight_decay"] == {
        **base["hyperparameters"]["weight_decay"],
        "init": 0.25,
    }
    assert {k: v for k, v in data.items() if k not in ("response", "hyperparameters", "name")} == {
        k: v for k, v in base.items() if k not in ("response", "hyperparameters", "name")
    }


def test_gp_search_runs_past_its_random_start(tmp_path: Path, ridge: tuple[dict, Path]) -> None:
    """Optuna's GPSampler draws its first 10 points at random; the 11th and 12th are its own."""
    _, data = ridge
    options = TuneOptions(method="gp", trials=12, seed=0)
    folder = create_study(RECIPE, options, [f"data.path={data}", "train.epochs=3"], tmp_path)
    assert drive(folder, quiet_view()).status == "completed"
    trials = load(folder).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 12
    assert all(1e-5 <= t.params["weight_decay"] <= 10.0 for t in trials)


def test_progress_lines_off_a_terminal_and_a_live_view_on_one() -> None:
    import io

    from rich.console import Console

    from stnkit.tune.progress import Snapshot, TrialRow

    rows = [
        TrialRow(0, "complete", 1.5, {"weight_decay": 0.1}),
        TrialRow(1, "pruned", 2.0, {"weight_decay": 5.0}),
        TrialRow(2, "running", 1.7, {"weight_decay": 0.3}),
    ]
    snap = Snapshot(rows, 10, 42.0, 5.0, {"complete": 1, "pruned": 1, "running": 1})
    plain = io.StringIO()
    view = StudyView(Console(file=plain, width=120), every=0.0)
    view.start("study x")
    view.update(snap)
    view.stop(snap)
    text = plain.getvalue()
    assert "trial 0 complete val 1.5000 *best  [weight_decay=0.1]" in text
    assert "trial 1 pruned val 2.0000  [weight_decay=5]" in text
    assert "trial 2" not in text  # still running: no line yet
    assert "trials 2/10 done, 1 complete, 1 pruned, 0 failed, 1 running, budget left 42s" in text

    live = io.StringIO()
    terminal = StudyView(Console(file=live, width=120, force_terminal=True))
    terminal.start("study x")
    terminal.update(snap)
    terminal.stop(snap)
    shown = live.getvalue()
    assert "best so far" in shown and "weight_decay=0.3" in shown  # the best and the running trial

    silent = io.StringIO()
    quiet = StudyView(Console(file=silent, force_terminal=True), quiet=True)
    quiet.start("study x")
    quiet.update(snap)
    quiet.stop(snap)
    assert silent.getvalue() == ""
