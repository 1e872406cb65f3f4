"""The HDF5 run file: layout, contents, status, and the reader API."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

import stnkit
from stnkit.cli import main
from stnkit.errors import RunFileError
from stnkit.plugins import load_plugins
from stnkit.store import schema
from stnkit.store.checkpoint import read_latest
from tests.helpers import write_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> stnkit.RunResult:
    from tests.helpers import write_recipe

    path = write_recipe(tmp_path_factory.mktemp("store"), train__epochs=5)
    return stnkit.run(path)


def test_file_name_and_metadata(finished: stnkit.RunResult) -> None:
    path = finished.path
    assert path is not None and path.parent.name == "runs"
    assert path.name.startswith("ridge-") and path.name.endswith("Z.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "stnkit-run"
        assert f.attrs["status"] == "completed"
        assert f.attrs["seed"] == 0
        assert f.attrs["torch_version"] and f.attrs["stnkit_version"] == stnkit.__version__
        recipe = yaml.safe_load(f.attrs["recipe"])
        assert recipe["model"]["name"] == "stn-mlp" and recipe["train"]["epochs"] == 5


def test_trajectories_are_recorded(finished: stnkit.RunResult) -> None:
    record = stnkit.open_run(finished.path)  # type: ignore[arg-type]
    assert record.hyperparameters == ("weight_decay",)
    n_hyper = len(record.hyper["step"])
    assert n_hyper == 4  # 10 weight steps, warm-up 2, then one hyper step per 2 weight steps
    assert record.hyper["values"].shape == (n_hyper, 1) and record.hyper["scales"].shape == (n_hyper, 1)
    assert np.all(np.diff(record.hyper["step"]) > 0) and np.all(np.diff(record.hyper["time"]) >= 0)
    assert record.train["step"].tolist() == [2, 4, 6, 8, 10]  # log_every: 2
    assert record.epochs["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert set(record.epochs["metrics"]) == {"loss", "rmse"}
    np.testing.assert_allclose(record.epochs["metrics"]["loss"], record.epochs["val_loss"])
    assert record.values("weight_decay")[-1] == pytest.approx(record.final["weight_decay"], rel=1e-5)
    assert record.initial["weight_decay"] == pytest.approx(0.01, rel=1e-5)
    assert finished.end.test_metrics["loss"] == pytest.approx(record.test["loss"])


def test_summary_json(finished: stnkit.RunResult, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(finished.path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("status", "name", "steps", "epochs", "best_val_loss", "test", "hyperparameters"):
        assert key in summary
    assert summary["status"] == "completed" and summary["steps"] == 10 and summary["epochs"] == 5
    wd = summary["hyperparameters"]["weight_decay"]
    assert wd["initial"] == pytest.approx(0.01, rel=1e-5) and wd["final"] > 0
    assert summary["best_val_loss"] == pytest.approx(finished.end.best_val_loss)


def test_show_renders(finished: stnkit.RunResult, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(finished.path)]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and "weight_decay" in out and "test" in out


def test_plain_h5py_can_read_it(finished: stnkit.RunResult) -> None:
    with h5py.File(finished.path, "r") as f:  # type: ignore[arg-type]
        names = [n.decode() for n in f["hyperparameters/names"][()]]
        assert names == ["weight_decay"]
        assert f["hyper/values"].shape[1] == 1 and f["epochs/metrics/rmse"].shape == (5,)


def test_not_a_run_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(RunFileError, match="not a stnkit run file"):
        stnkit.open_run(other)
    (tmp_path / "text.h5").write_text("hello")
    assert main(["show", str(tmp_path / "text.h5")]) == 2
    assert "not a readable HDF5" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing.h5")]) == 2


def test_live_run_is_readable_while_written(ridge_recipe: Path) -> None:
    from stnkit.events import EpochEnd, RunInfo
    from stnkit.hookspecs import hookimpl

    seen: list[int] = []

    class Peek:
        @hookimpl
        def stnkit_epoch_end(self, run: RunInfo, epoch: EpochEnd) -> None:
            record = stnkit.open_run(run.path)  # type: ignore[arg-type]
            assert record.attrs["status"] == "running" and not record.stale
            seen.append(len(record.epochs["epoch"]))

    # the store observes first, so each epoch is on disk when other observers hear of it
    stnkit.run(ridge_recipe, observers=[Peek()])
    assert seen == [1, 2, 3, 4]


def test_tables_are_allocated_once_and_count_their_rows(finished: stnkit.RunResult) -> None:
    # ridge: 5 epochs of 2 weight steps, the first of warm-up; a hyper step after every 2 weight
    # steps past it (4); a loss point every 2 steps
    record = stnkit.open_run(finished.path)  # type: ignore[arg-type]
    expected_capacity = {"hyper": 8 // 2, "train": 10 // 2 + 1, "epochs": 5, "epochs/metrics": 5}
    with h5py.File(finished.path, "r") as f:  # type: ignore[arg-type]
        for table, capacity in expected_capacity.items():
            group = f[table]
            rows = int(group["_rows"][()])
            lengths = {
                name: ds.shape[0]
                for name, ds in group.items()
                if isinstance(ds, h5py.Dataset) and name != "_rows"
            }
            assert set(lengths.values()) == {capacity}, table  # never grown during the run
            assert rows <= capacity
        assert int(f["hyper/_rows"][()]) == len(record.hyper["step"]) > 0
        assert int(f["epochs/_rows"][()]) == len(record.epochs["epoch"]) == 5


def test_tables_and_checkpoints_that_outgrow_their_room_rebuild_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Growing a dataset in a live file is a structural change a kill can tear; the store instead
    writes a bigger copy beside it and renames it into place, losing no row."""
    from stnkit.store.hdf5 import HDF5Store

    reference = stnkit.run(write_recipe(tmp_path / "a", train__epochs=6, run__log_every=1))
    monkeypatch.setattr(HDF5Store, "_capacities", lambda self, run: {"hyper": 1, "train": 2, "epochs": 1})
    result = stnkit.run(write_recipe(tmp_path / "b", train__epochs=6, run__log_every=1))
    assert result.path is not None and reference.path is not None
    assert not Path(str(result.path) + ".new").exists()
    for name in ("hyper", "train", "epochs"):
        expected, got = stnkit.open_run(reference.path).table(name), stnkit.open_run(result.path).table(name)
        assert len(got["step"]) == len(expected["step"]) > 2
        for column in expected:
            if column != "time":
                np.testing.assert_array_equal(got[column], expected[column], err_msg=f"{name}.{column}")
    with h5py.File(result.path, "r") as f:
        assert f["train/loss"].shape[0] >= 12 and f["checkpoints/slot0"].shape[0] > 0
        assert read_latest(f, "x") is not None


def test_a_file_damaged_by_a_crash_is_reported_in_a_second_not_waited_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real run file from a writer SIGKILLed while growing a table: one object header fails its
    checksum, and HDF5's default SWMR patience would retry it for many minutes. The file predates
    the current layout, so the answer is the layout refusal; what matters is that it comes at once,
    in one line naming the file."""
    import gzip
    import time

    damaged = tmp_path / "damaged.h5"
    source = Path(__file__).parent / "data" / "killed-mid-flush-schema1.h5.gz"
    damaged.write_bytes(gzip.decompress(source.read_bytes()))
    start = time.monotonic()
    assert main(["show", str(damaged)]) == 2
    assert time.monotonic() - start < 30  # the default would still be retrying
    err = capsys.readouterr().err
    assert str(damaged) in err and "layout version 1" in err
    assert len(err.strip().splitlines()) == 1


class _FrozenClock:
    """A stand-in for the ``datetime`` module whose ``now`` never moves: every run starts in the
    same second, as parallel seeds or ``tune --jobs`` workers do."""

    UTC = __import__("datetime").UTC

    class datetime:  # noqa: N801 - mirrors the module's class name
        @staticmethod
        def now(tz: object = None) -> object:
            import datetime as real

            return real.datetime(2026, 1, 2, 3, 4, 5, tzinfo=real.UTC)


def test_runs_started_in_the_same_second_get_distinct_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stnkit.runner

    monkeypatch.setattr(stnkit.runner, "_dt", _FrozenClock)
    runs = tmp_path / "runs"
    runs.mkdir()
    # a claimed name (another process about to create its file) is never handed out again
    claimed = stnkit.runner.run_path(runs, "ridge")
    assert claimed.name == "ridge-20260102T030405Z.h5" and not claimed.exists()
    assert stnkit.runner.run_path(runs, "ridge").name == "ridge-20260102T030405Z-1.h5"
    recipe = write_recipe(tmp_path, train__epochs=2)
    result = stnkit.run(recipe, out_dir=runs)
    assert result.path is not None and result.path.name == "ridge-20260102T030405Z-2.h5"
    assert stnkit.open_run(result.path).status == "completed"
    assert not result.path.with_name(result.path.name + ".lock").exists()
    # a claim whose run never started writing is dropped, not left behind as a stray lock file
    stnkit.runner.release_path(claimed)
    assert sorted(p.name for p in runs.iterdir()) == [
        "ridge-20260102T030405Z-1.h5.lock",
        "ridge-20260102T030405Z-2.h5",
    ]


def test_a_run_that_fails_before_writing_leaves_no_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stnkit.runner

    def broken_store(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store plugin failed")

    runs = tmp_path / "runs"
    recipe = write_recipe(tmp_path, train__epochs=2)
    plugins = load_plugins()
    monkeypatch.setattr(plugins.hook, "stnkit_make_store", broken_store)
    with pytest.raises(RuntimeError, match="store plugin failed"):
        stnkit.run(recipe, out_dir=runs, plugins=plugins)
    assert list(runs.iterdir()) == []


def test_the_tables_hold_exactly_the_declared_columns(finished: stnkit.RunResult) -> None:
    dtypes = {"i64": np.int64, "f64": np.float64, "i8": np.int8}
    with h5py.File(finished.path, "r") as f:  # type: ignore[arg-type]
        for declared in schema.TABLES:
            group = f[declared.name]
            stored = {name for name in group if isinstance(group[name], h5py.Dataset) and name != schema.ROWS}
            assert stored == {c.name for c in declared.columns}, declared.name
            for column in declared.columns:
                data = group[column.name]
                assert data.dtype == dtypes[column.dtype], (declared.name, column.name)
                assert data.ndim == (2 if column.per_hyperparameter else 1), (declared.name, column.name)
    record = stnkit.open_run(finished.path)  # type: ignore[arg-type]
    for declared in schema.TABLES:
        plain = [c.name for c in declared.columns if not c.per_hyperparameter]
        assert list(record.table(declared.name))[: len(plain)] == plain


def _doc_tool() -> Any:
    spec = importlib.util.spec_from_file_location("store_tables", ROOT / "docs" / "store_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_list_the_declared_tables() -> None:
    tool = _doc_tool()
    text = (ROOT / "docs" / "store.md").read_text(encoding="utf-8")
    assert tool.rewritten(text) == text, "docs/store.md is out of date: run python docs/store_tables.py"
    for declared in schema.TABLES:
        for column in declared.columns:
            assert f"| `{declared.name}/{column.name}` |" in text
    # and the check sees a stale page
    stale = text.replace("| hyper steps so far |", "| hyper steps |", 1)
    assert stale != text and tool.rewritten(stale) != stale
