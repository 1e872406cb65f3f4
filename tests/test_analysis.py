"""Analysing stored runs: the reader API, ls/compare/plot/export, and replaying a found schedule.

Every test works on real run files written by ``stnkit.run`` on the small ridge problem.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import matplotlib.image
import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest

import stnkit
from stnkit import hookimpl
from stnkit.analysis.common import final_values
from stnkit.analysis.kinds import rebuild_kinds, strictly_inside
from stnkit.analysis.listing import list_runs
from stnkit.analysis.plot import plot_runs, trajectory
from stnkit.analysis.replay import plan_replay, replay, schedule_from
from stnkit.cli import main
from stnkit.errors import UsageError
from stnkit.events import EpochEnd, RunInfo, StepEnd
from stnkit.plugins import load_plugins
from stnkit.response.fixed import FixedResponse
from stnkit.runner import prepare
from tests.helpers import write_recipe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Recorder:
    """An observer keeping the events the engine sent, to check the file against."""

    def __init__(self) -> None:
        self.epochs: list[EpochEnd] = []
        self.hyper: list[StepEnd] = []
        self.weight: list[StepEnd] = []

    @hookimpl
    def stnkit_step_end(self, run: RunInfo, step: StepEnd) -> None:
        (self.hyper if step.phase == "hyper" else self.weight).append(step)

    @hookimpl
    def stnkit_epoch_end(self, run: RunInfo, epoch: EpochEnd) -> None:
        self.epochs.append(epoch)


class Runs:
    """The module's runs: an STN run (weight decay) and a fixed run (dropout) in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.recorder = Recorder()
        self.stn = stnkit.run(
            write_recipe(folder / "stn", train__epochs=6), out_dir=folder / "runs", observers=[self.recorder]
        )
        self.fixed = stnkit.run(
            write_recipe(
                folder / "fixed",
                name="ridge-dropout",
                response={"name": "fixed"},
                model__hidden_sizes=[4],
                hyperparameters={"dropout": {"kind": "unit", "init": 0.2}},
            ),
            out_dir=folder / "runs",
        )
        assert self.stn.status == "completed" and self.fixed.status == "completed"

    @property
    def stn_path(self) -> Path:
        assert self.stn.path is not None
        return self.stn.path

    @property
    def fixed_path(self) -> Path:
        assert self.fixed.path is not None
        return self.fixed.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("analysis"))


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return str(lines[0])


# -- the Python API ---------------------------------------------------------------------------------


def test_open_run_reads_what_the_engine_wrote(runs: Runs) -> None:
    record = stnkit.open_run(runs.stn_path)
    events = runs.recorder
    assert record.status == "completed" and record.hyperparameters == ("weight_decay",)
    assert record.epochs["epoch"].tolist() == [e.epoch for e in events.epochs] == [1, 2, 3, 4, 5, 6]
    assert record.epochs["step"].tolist() == [e.step for e in events.epochs]
    assert record.epochs["val_loss"].tolist() == [e.val_loss for e in events.epochs]
    assert record.hyper["step"].tolist() == [s.step for s in events.hyper]
    assert record.values("weight_decay").tolist() == [
        s.values["weight_decay"] for s in events.hyper if s.values
    ]
    assert record.steps == runs.stn.end.step == events.weight[-1].step
    assert record.final == runs.stn.end.final_values
    assert record.test == runs.stn.end.test_metrics


def test_to_pandas_has_named_columns_holding_the_trajectories(runs: Runs) -> None:
    record = stnkit.open_run(runs.stn_path)
    frames = record.to_pandas()
    assert set(frames) == {"hyper", "train", "epochs"}
    hyper, train, epochs = frames["hyper"], frames["train"], frames["epochs"]
    assert list(hyper.columns) == [
        "step", "hyper_step", "epoch", "time", "val_loss", "weight_decay", "sigma.weight_decay"
    ]  # fmt: skip
    assert list(train.columns) == ["step", "epoch", "time", "loss", "penalty", "lr"]
    assert list(epochs.columns) == [
        "epoch", "step", "hyper_step", "time", "train_loss", "val_loss", "lr", "best",
        "weight_decay", "sigma.weight_decay", "metric.loss", "metric.rmse",
    ]  # fmt: skip
    assert len(hyper) == len(record.hyper["step"]) > 0 and len(epochs) == 6
    np.testing.assert_array_equal(hyper["weight_decay"], record.values("weight_decay"))
    np.testing.assert_array_equal(hyper["sigma.weight_decay"], record.scales("weight_decay"))
    np.testing.assert_array_equal(epochs["metric.rmse"], record.epochs["metrics"]["rmse"])
    np.testing.assert_array_equal(train["loss"], record.train["loss"])


def test_a_hyperparameter_named_like_a_column_gets_a_prefix(runs: Runs, tmp_path: Path) -> None:
    copy = tmp_path / "clash.h5"
    shutil.copy(runs.stn_path, copy)
    with h5py.File(copy, "r+") as f:
        f["hyperparameters/names"][0] = "lr"  # the epochs table has an "lr" column of its own
    record = stnkit.open_run(copy)
    epochs = record.table("epochs")
    assert "value.lr" in epochs and "sigma.lr" in epochs
    np.testing.assert_array_equal(epochs["lr"], record.epochs["lr"])
    np.testing.assert_array_equal(epochs["value.lr"], record.epochs["values"][:, 0])
    assert "lr" in record.table("hyper")  # no clash there


def test_to_pandas_without_pandas_is_a_usage_error(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    record = stnkit.open_run(runs.stn_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` fail
    with pytest.raises(UsageError, match=r"^pandas is not installed: pip install pandas$"):
        record.to_pandas()


def test_a_run_being_written_is_listed_and_read_as_running(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Peek:
        path: Path | None = None

        @hookimpl
        def stnkit_run_start(self, run: RunInfo) -> None:
            self.path = run.path

        @hookimpl
        def stnkit_epoch_end(self, run: RunInfo, epoch: EpochEnd) -> None:
            if epoch.epoch == 2:  # the store has flushed this epoch (it runs first)
                assert self.path is not None
                seen["listing"] = list_runs(self.path.parent)
                seen["epochs"] = stnkit.open_run(self.path).to_pandas()["epochs"]

    result = stnkit.run(write_recipe(tmp_path), observers=[Peek()])
    [entry] = seen["listing"]
    assert entry.status == "running" and entry.epochs == 2 and entry.name == "ridge"
    assert seen["epochs"]["epoch"].tolist() == [1, 2]
    assert stnkit.open_run(result.path).status == "completed"  # type: ignore[arg-type]


def test_final_values_fall_back_to_the_last_recorded_values(runs: Runs, tmp_path: Path) -> None:
    copy = tmp_path / "unfinished.h5"
    shutil.copy(runs.stn_path, copy)
    with h5py.File(copy, "r+") as f:
        f["hyperparameters/final"][...] = np.nan  # as in a run whose writer died
    record = stnkit.open_run(copy)
    assert math.isnan(record.final["weight_decay"])
    assert final_values(record) == {"weight_decay": float(record.values("weight_decay")[-1])}


# -- ls ---------------------------------------------------------------------------------------------


def _listing_folder(runs: Runs, folder: Path) -> dict[str, Path]:
    """Copies of the runs plus a stale "running" run, a foreign HDF5 file and a junk file."""
    folder.mkdir()
    files = {"stn": folder / runs.stn_path.name, "fixed": folder / "sub" / runs.fixed_path.name}
    files["fixed"].parent.mkdir()
    shutil.copy(runs.stn_path, files["stn"])
    shutil.copy(runs.fixed_path, files["fixed"])
    files["stale"] = folder / "stale.h5"
    shutil.copy(runs.stn_path, files["stale"])
    with h5py.File(files["stale"], "r+") as f:
        f.attrs["status"] = "running"
        f.attrs["created"] = "2020-01-01T00:00:00+00:00"
        f["heartbeat"][...] = time.time() - 3600
    with h5py.File(files["stn"], "r+") as f:
        f.attrs["created"] = "2030-01-01T00:00:00+00:00"  # the newest
    files["foreign"] = folder / "foreign.h5"
    with h5py.File(files["foreign"], "w") as f:
        f["x"] = [1, 2, 3]
    files["junk"] = folder / "junk.h5"
    files["junk"].write_text("not hdf5")
    (folder / "notes.txt").write_text("ignored: not *.h5")
    return files


def test_ls_lists_runs_newest_first_and_unreadable_files_as_such(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "listing"
    files = _listing_folder(runs, folder)
    assert main(["ls", str(folder), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    by_file = {e["file"]: e for e in entries}
    assert set(by_file) == {
        "stale.h5",
        "foreign.h5",
        "junk.h5",
        files["stn"].name,
        f"sub/{files['fixed'].name}",
    }
    assert by_file["stale.h5"]["status"] == "interrupted"
    assert (
        by_file["foreign.h5"]["status"] == "unreadable"
        and "not a stnkit run file" in by_file["foreign.h5"]["error"]
    )
    assert by_file["junk.h5"]["status"] == "unreadable"
    stn = by_file[files["stn"].name]
    record = stnkit.open_run(runs.stn_path)
    assert stn["status"] == "completed" and stn["name"] == "ridge" and stn["steps"] == record.steps
    assert stn["epochs"] == 6 and stn["best_val_loss"] == record.best_val_loss
    readable = [e["file"] for e in entries if e["status"] != "unreadable"]
    assert readable[0] == files["stn"].name and readable[-1] == "stale.h5"  # by creation time

    monkeypatch.setenv("COLUMNS", "160")
    assert main(["ls", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "ridge-dropout" in out and "interrupted" in out and "completed" in out
    assert "foreign.h5: not a stnkit run file" in out
    assert f"{record.best_val_loss:.4f}" in out
    assert out.index(files["stn"].name) < out.index("stale.h5")


def test_ls_of_an_empty_folder_and_of_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no run files in {tmp_path}"
    assert main(["ls", str(tmp_path / "missing")]) == 2
    assert one_error_line(capsys.readouterr().err) == f"no such folder: {tmp_path / 'missing'}"


def test_ls_defaults_to_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert main(["ls", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# -- compare ----------------------------------------------------------------------------------------


def test_compare_puts_runs_side_by_side(
    runs: Runs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stn, fixed = stnkit.open_run(runs.stn_path), stnkit.open_run(runs.fixed_path)
    assert main(["compare", str(runs.stn_path), str(runs.fixed_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in data["runs"]] == ["ridge", "ridge-dropout"]
    assert [r["response"] for r in data["runs"]] == ["stn", "fixed"]
    assert data["best_valid"]["loss"] == [stn.best_valid["loss"], fixed.best_valid["loss"]]
    assert data["test"]["rmse"] == [stn.test["rmse"], fixed.test["rmse"]]
    assert data["final"] == {
        "weight_decay": [stn.final["weight_decay"], None],
        "dropout": [None, fixed.final["dropout"]],
    }

    monkeypatch.setenv("COLUMNS", "160")
    assert main(["compare", str(runs.stn_path), str(runs.fixed_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "ridge-dropout" in line)
    assert header.index("ridge ") < header.index("ridge-dropout")
    row = next(line for line in lines if "final weight_decay" in line)
    assert f"{stn.final['weight_decay']:.4f}" in row and "–" in row
    row = next(line for line in lines if "test loss" in line)
    assert f"{stn.test['loss']:.4f}" in row and f"{fixed.test['loss']:.4f}" in row


def test_compare_labels_runs_of_one_recipe_apart(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(runs.stn_path), str(runs.stn_path), "--json"]) == 0
    labels = [r["label"] for r in json.loads(capsys.readouterr().out)["runs"]]
    assert labels == [runs.stn_path.stem, runs.stn_path.stem]  # same file twice: the file names


# -- plot -------------------------------------------------------------------------------------------


def _check_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert float(image[..., :3].std()) > 0.02  # something was drawn, not a blank canvas
    return image


def test_plot_writes_a_png_of_the_trajectories(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "figures" / "ridge.png"
    assert main(["plot", str(runs.stn_path), str(runs.fixed_path), "-o", str(output)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {output}"
    overlaid = _check_png(output)
    single = _check_png(plot_runs([stnkit.open_run(runs.stn_path)], tmp_path / "one.png"))
    # two hyperparameters and a loss panel against one and a loss panel: a bigger grid
    assert overlaid.shape[0] * overlaid.shape[1] > single.shape[0] * single.shape[1]


def test_plot_band_is_the_constrained_h_plus_minus_sigma(runs: Runs) -> None:
    record = stnkit.open_run(runs.stn_path)
    kinds = rebuild_kinds(record, load_plugins())
    assert set(kinds) == {"weight_decay"} and kinds["weight_decay"].name == "positive"
    path = trajectory(record, "weight_decay", kinds["weight_decay"])
    assert path.low is not None and path.high is not None
    assert path.steps.tolist() == [0, *record.hyper["step"].tolist()]
    assert path.values[0] == record.initial["weight_decay"]
    # a positive kind is exp(u): h ± σ in u is the value times or divided by e^σ
    sigma = np.concatenate([[record.initial_scales["weight_decay"]], record.scales("weight_decay")])
    np.testing.assert_allclose(path.high, path.values * np.exp(sigma), rtol=1e-6)
    np.testing.assert_allclose(path.low, path.values * np.exp(-sigma), rtol=1e-6)
    assert np.all(path.low < path.values) and np.all(path.values < path.high)
    # a run that does not tune (fixed) has no band
    fixed = stnkit.open_run(runs.fixed_path)
    assert trajectory(fixed, "dropout", None).low is None


def test_plot_errors_are_usage_errors(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="nothing to plot"):
        plot_runs([], tmp_path / "x.png")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["plot", str(runs.stn_path), "-o", str(blocker / "x.png")]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"cannot create the folder {blocker}")
    assert main(["plot", str(runs.stn_path), "-o", str(tmp_path / "x.unknown")]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("cannot tell the image format")
    assert not list(tmp_path.glob("x.*"))


# -- export -----------------------------------------------------------------------------------------


def _nan(values: list[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


@pytest.mark.parametrize("which", ["stn", "fixed"])
def test_export_json_round_trips(
    runs: Runs, which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = runs.stn_path if which == "stn" else runs.fixed_path
    record = stnkit.open_run(source)
    target = tmp_path / "export.json"
    assert main(["export", str(source), "--format", "json", "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {target}"
    data = json.loads(target.read_text())
    assert data["attrs"]["recipe"] == record.recipe_text and data["summary"] == record.summary()
    assert data["hyperparameters"]["names"] == list(record.hyperparameters)
    assert data["hyperparameters"]["final"] == record.final and data["test"] == record.test
    for table in ("hyper", "train", "epochs"):
        columns = record.table(table)
        assert list(data[table]) == list(columns)
        for name, column in columns.items():
            np.testing.assert_array_equal(_nan(data[table][name]), column.astype(np.float64), err_msg=name)
    # without -o the same document goes to standard output
    assert main(["export", str(source), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == data


@pytest.mark.parametrize("which", ["stn", "fixed"])
def test_export_csv_round_trips(
    runs: Runs, which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = runs.stn_path if which == "stn" else runs.fixed_path
    record = stnkit.open_run(source)
    folder = tmp_path / "csv"
    assert main(["export", str(source), "--format", "csv", "-o", str(folder)]) == 0
    written = [line.removeprefix("wrote ") for line in capsys.readouterr().out.splitlines()]
    assert written == [str(folder / f"{source.stem}.{t}.csv") for t in ("hyper", "train", "epochs")]
    frames = record.to_pandas()
    for table, frame in frames.items():
        path = folder / f"{source.stem}.{table}.csv"
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == list(frame.columns)  # header: the to_pandas names
        assert len(rows) - 1 == len(frame)
        for i, name in enumerate(rows[0]):
            np.testing.assert_array_equal(
                np.array([float(r[i]) for r in rows[1:]]), frame[name].to_numpy(np.float64), err_msg=name
            )
        back = pd.read_csv(path)
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)


def test_export_csv_wants_a_folder(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(runs.stn_path), "--format", "csv", "-o", str(tmp_path / "out.csv")]) == 2
    assert "give -o a folder" in one_error_line(capsys.readouterr().err)


# -- replay -----------------------------------------------------------------------------------------


def expected_values(record: stnkit.RunRecord, name: str, step: int) -> float:
    """The value the source run's weights used at weight ``step``: the last hyper step's values
    recorded before it (a hyper step after weight step s takes effect from s + 1)."""
    earlier = np.flatnonzero(record.hyper["step"] < step)
    return float(record.values(name)[earlier[-1]]) if len(earlier) else record.initial[name]


class Spy:
    """Records the hyperparameter values the fixed response set before each weight step."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.used: dict[int, dict[str, float]] = {}
        original = FixedResponse.before_weight_step

        def before_weight_step(response: FixedResponse, step: int) -> None:
            original(response, step)
            self.used[step] = response.space.values()

        monkeypatch.setattr(FixedResponse, "before_weight_step", before_weight_step)


def test_replay_follows_the_schedule_step_by_step(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = stnkit.open_run(runs.stn_path)
    spy = Spy(monkeypatch)
    result = replay(runs.stn_path, out_dir=tmp_path)
    assert result.status == "completed" and result.path is not None and result.path.parent == tmp_path
    assert sorted(spy.used) == list(range(1, source.steps + 1))
    for step, used in spy.used.items():
        expected = expected_values(source, "weight_decay", step)
        assert used["weight_decay"] == pytest.approx(expected, rel=1e-6), step
    # the check can tell a switch one step early or late: at a hyper step's own weight step the
    # old value is still in force, from the next one the new value
    for row, step in enumerate(source.hyper["step"].tolist()[:-1]):
        assert spy.used[step + 1]["weight_decay"] == pytest.approx(
            source.values("weight_decay")[row], rel=1e-6
        )
        assert spy.used[step]["weight_decay"] != pytest.approx(spy.used[step + 1]["weight_decay"], rel=1e-4)

    copy = stnkit.open_run(result.path)
    assert copy.name == "ridge-replay" and copy.attrs["response"] == "fixed" and copy.attrs["tunes"] is False
    assert copy.metadata == {"source_run": str(runs.stn_path.resolve()), "replay": "schedule"}
    assert copy.steps == source.steps and len(copy.hyper["step"]) == 0
    for step, value in zip(copy.epochs["step"], copy.epochs["values"][:, 0], strict=True):
        assert value == pytest.approx(expected_values(source, "weight_decay", int(step)), rel=1e-6)


def test_schedule_collapses_hyper_steps_after_one_weight_step(tmp_path: Path) -> None:
    result = stnkit.run(write_recipe(tmp_path, train__hyper_steps=2, train__epochs=3))
    record = stnkit.open_run(result.path)  # type: ignore[arg-type]
    steps = record.hyper["step"]
    assert len(steps) == 2 * len(set(steps.tolist())) > 0  # two hyper steps per cycle
    schedule = schedule_from(record)
    assert schedule is not None
    assert schedule["steps"] == [1, *[int(s) + 1 for s in sorted(set(steps.tolist()))]]
    assert schedule["values"]["weight_decay"][0] == record.initial["weight_decay"]
    assert schedule["values"]["weight_decay"][1:] == record.values("weight_decay")[1::2].tolist()


def test_replay_final_holds_the_final_values(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = stnkit.open_run(runs.stn_path)
    spy = Spy(monkeypatch)
    args = ["replay", str(runs.stn_path), "--final", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.parent == tmp_path and printed.suffix == ".h5"
    final = source.final["weight_decay"]
    assert spy.used and all(v["weight_decay"] == pytest.approx(final, rel=1e-6) for v in spy.used.values())
    copy = stnkit.open_run(printed)
    assert copy.name == "ridge-final" and copy.metadata["replay"] == "final"
    assert Path(copy.metadata["source_run"]) == runs.stn_path.resolve()
    assert copy.recipe["hyperparameters"]["weight_decay"]["init"] == final
    assert "schedule" not in copy.recipe["response"]
    np.testing.assert_allclose(copy.epochs["values"][:, 0], final, rtol=1e-6)


@pytest.mark.parametrize(
    ("kind", "options", "value", "expected"),
    [
        ("unit", {"init": 0.5}, 0.0, None),
        ("unit", {"init": 0.5}, 1.0, None),
        ("unit", {"init": 0.5}, 0.3, 0.3),
        ("interval", {"init": 1.5, "low": 1.0, "high": 2.0}, 2.0, None),
        ("positive", {"init": 1.0, "lower": 0.5}, 0.5, None),
        ("integer", {"init": 2, "low": 1, "high": 4}, 3.7, 3.0),
        ("integer", {"init": 2, "low": 1, "high": 4}, 4.99, 4.0),  # continuous values reach below high + 1
        ("integer", {"init": 2, "low": 1, "high": 4}, 0.2, 1.0),
    ],
)
def test_final_values_become_valid_inits(
    kind: str, options: dict[str, Any], value: float, expected: float | None
) -> None:
    kind_cls = load_plugins().kinds.get(kind)
    init = strictly_inside(kind_cls(kind_cls.Config(**options)), value)
    kind_cls.Config(**{**options, "init": init})  # accepted as a declaration's init
    if expected is None:
        assert init != value and abs(init - value) < 1e-5  # moved just inside the range
    else:
        assert init == expected


def test_replay_shows_progress_and_defaults_to_the_source_folder(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source" / runs.fixed_path.name
    source.parent.mkdir()
    shutil.copy(runs.fixed_path, source)
    assert main(["replay", str(source)]) == 0
    out = capsys.readouterr().out
    assert "run ridge-dropout-replay:" in out and "run completed" in out
    [made] = [p for p in source.parent.glob("*.h5") if p != source]
    assert out.strip().splitlines()[-1] == f"schedule replay of {source} recorded in {made}"
    assert stnkit.open_run(made).metadata["source_run"] == str(source.resolve())


def test_replay_resolves_data_against_the_recorded_folder(
    runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the stored data path "ridge.npz" is relative
    plan = plan_replay(runs.stn_path, final=True)
    assert plan.recipe.base_dir == runs.folder / "stn"
    assert plan.recipe.data.options()["path"] == "ridge.npz"
    assert plan.out_dir == runs.stn_path.parent


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["replay"], ["replay", "--final"], ["compare"], ["plot", "-o", "{tmp}/x.png"], ["export"], ["show"]],
)
@pytest.mark.parametrize("problem", ["missing", "not a run"])
def test_bad_run_files_exit_2_with_one_line(
    command: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.h5"
    if problem == "not a run":
        path.write_text("plain text")
    args = [command[0], str(path), *(a.format(tmp=tmp_path) for a in command[1:])]
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    expected = f"run file not found: {path}" if problem == "missing" else f"{path} is not a readable HDF5"
    assert line.startswith(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if problem == "missing" else ["run.h5"])


def test_show_states_the_models_size(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    """``parameters``: the plain network's count, and what the response branches and V add."""
    stn_recipe = Path(stnkit.open_run(runs.stn_path).attrs["recipe_source"])
    plain = prepare(stn_recipe, ["response={name: fixed}"]).parts.model
    elementary = sum(p.numel() for p in plain.parameters())
    total = sum(p.numel() for p in prepare(stn_recipe).parts.model.parameters())
    assert main(["show", "--json", str(runs.stn_path)]) == 0
    shown = json.loads(capsys.readouterr().out)["parameters"]
    assert shown == {"elementary": elementary, "response": total - elementary}
    assert shown["response"] > 0
    fixed = stnkit.open_run(runs.fixed_path)
    assert fixed.parameters is not None and fixed.parameters["response"] == 0
    assert fixed.parameters["elementary"] == int(fixed.attrs["parameters_elementary"]) > 0
    assert main(["show", str(runs.fixed_path)]) == 0
    assert f"{fixed.parameters['elementary']:,} elementary, 0 response" in capsys.readouterr().out
