"""One run SIGKILLed again and again — at random moments and at named points (mid-epoch, in
checkpoint writes, in table flushes, while its file is rebuilt, in the final evaluation, in the
end-of-run writes) — and resumed each time must end identical to an uninterrupted run, table by
table and row by row. ``benchmarks/kill_chain.py`` runs the same chains at scale."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import pytest

import stnkit
from stnkit.cli import main
from tests.helpers import write_recipe

_spec = importlib.util.spec_from_file_location(
    "kill_chain", Path(__file__).parents[1] / "benchmarks" / "kill_chain.py"
)
assert _spec is not None and _spec.loader is not None
kill_chain: Any = importlib.util.module_from_spec(_spec)
sys.modules["kill_chain"] = kill_chain
_spec.loader.exec_module(kill_chain)

#: two weight steps an epoch; each epoch end is a checkpoint
SETTINGS = {"train__epochs": 60, "run__log_every": 1, "run__flush_seconds": 0.05}


def reference_run(recipe: Path, overrides: Sequence[str], folder: Path) -> Path:
    """The uninterrupted run, in a fork like every attempt of a chain. A fork trains on one
    thread; a run in this process trains on torch's default thread count, and a sum split over
    another number of threads rounds differently, so on a model large enough for torch to split
    its sums (the image recipe's convolutions) such a reference differs from every chain."""
    path = kill_chain.run_chain(kill_chain.fork_launcher(recipe, overrides, folder), folder, []).path
    assert path is not None
    return Path(path)


def setup_chain(folder: Path, **changes: Any) -> tuple[Path, Any]:
    """The recipe, the uninterrupted run's file and a fork launcher writing into ``folder/chain``."""
    recipe = write_recipe(folder, **{**SETTINGS, **changes})
    reference = reference_run(recipe, (), folder / "reference")
    return reference, kill_chain.fork_launcher(recipe, (), folder / "chain")


def chain_with_moments(
    recipe: Path,
    reference: Path,
    folder: Path,
    moments: int,
    span: float,
    seed: int,
    then: Sequence[str] = (),
) -> Any:
    """A chain whose first ``moments`` kills come at random moments within ``span`` seconds of
    each attempt's run file going live, followed by the named kills ``then``; every kill must land.

    The span comes from the reference's training time, but on a shared machine a chain can run
    several times faster than its reference did and finish before its last kill. Such a chain is
    compared with the reference all the same; then the moments are drawn again over a span a
    third as long, until every kill lands."""
    rng = random.Random(seed)
    for attempt in range(4):
        schedule = [*(rng.uniform(0.0, span / 3**attempt) for _ in range(moments)), *then]
        out = folder / f"chain{attempt}"
        chain = kill_chain.run_chain(kill_chain.fork_launcher(recipe, (), out), out, schedule, anchor="live")
        assert kill_chain.differences(reference, chain.path) == []
        if chain.kills == len(schedule):
            return chain
    raise AssertionError(f"the run finished before its last kill at every span: {chain}")


def test_a_run_killed_at_a_dozen_random_moments_ends_identical(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, **{**SETTINGS, "train__epochs": 80, "store__checkpoint_steps": 3})
    reference = reference_run(recipe, (), tmp_path / "reference")
    training = float(stnkit.open_run(reference).epochs["time"][-1])  # scales with this machine
    # the twelve kills together take at most 40% of the reference's training time (20% on average)
    chain = chain_with_moments(recipe, reference, tmp_path, 12, training / 30, seed=15)
    assert stnkit.open_run(chain.path).attrs["resumed"] == 12  # every resume got to train


NAMED = [
    "weight-step:5",  # mid-epoch, after epoch 2's checkpoint
    "rebuild",  # the resume's new file is complete but not yet in place
    "rebuilt",  # just in place, nothing trained: the window that emptied every table
    "flush-rows:3",  # rows written, their count not yet
    "checkpoint-bytes:2",  # a checkpoint's bytes on disk, "latest" not yet moved
    "checkpoint-done:3",
    "weight-step:7",
    "final-eval",  # the first test batch of the final evaluation
    "final-eval:2",  # the second
    "end-tables",  # every row flushed, no result written
    "end-results",  # results written, no end-of-run attribute
    "end-attrs",  # counters written, status not yet
]


def test_kills_at_every_named_point_end_identical(tmp_path: Path) -> None:
    reference, launch = setup_chain(tmp_path)
    chain = kill_chain.run_chain(launch, tmp_path / "chain", NAMED)
    assert chain.kills == len(NAMED) and chain.restarts == 0
    assert kill_chain.differences(reference, chain.path) == []


def test_a_kill_after_the_status_is_written_leaves_a_complete_record(tmp_path: Path) -> None:
    reference, launch = setup_chain(tmp_path, train__epochs=4)
    assert launch(None, "end-status").wait(120) == -9
    (path,) = (tmp_path / "chain").glob("*.h5")
    assert kill_chain.differences(reference, path) == []  # complete, though never closed


def test_a_fixed_response_run_killed_again_and_again(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, **{**SETTINGS, "response": {"name": "fixed"}})
    reference = reference_run(recipe, (), tmp_path / "reference")
    assert not len(stnkit.open_run(reference).hyper["step"])
    training = float(stnkit.open_run(reference).epochs["time"][-1])
    # four timed kills at most 40% of the reference's training in all, then three named ones
    chain_with_moments(
        recipe,
        reference,
        tmp_path,
        4,
        training / 10,
        seed=3,
        then=["weight-step:9", "final-eval", "end-attrs"],
    )


@pytest.mark.parametrize(
    "stop", [{"train__max_steps": 9}, {"train__patience": 1}], ids=["max_steps", "patience"]
)
def test_a_run_that_stopped_early_resumes_into_its_final_test_not_more_training(
    tmp_path: Path, stop: dict[str, int]
) -> None:
    reference, launch = setup_chain(tmp_path, **stop)
    record = stnkit.open_run(reference)
    assert record.steps < 2 * SETTINGS["train__epochs"]  # it did stop early
    chain = kill_chain.run_chain(launch, tmp_path / "chain", ["final-eval", "end-attrs"])
    assert kill_chain.differences(reference, chain.path) == []


def _tiny_tables() -> None:
    from stnkit.store.hdf5 import HDF5Store

    HDF5Store._capacities = lambda self, run: {"hyper": 2, "train": 3, "epochs": 2}  # type: ignore[method-assign]


def test_kills_while_tables_and_checkpoints_outgrow_the_file(tmp_path: Path) -> None:
    """Tables preallocated too small and the first checkpoint (which needs slots) force the
    file to be rebuilt mid-run; kills land on those rebuilds, and on the creation itself."""
    recipe = write_recipe(tmp_path, **{**SETTINGS, "train__epochs": 12, "store__checkpoint_steps": 3})
    reference = reference_run(recipe, (), tmp_path / "reference")
    launch = kill_chain.fork_launcher(recipe, (), tmp_path / "chain", setup=_tiny_tables)
    schedule = ["rebuild", "rebuild:2", "rebuilt:3", "rebuild:2", "flush-rows:4", "rebuilt:2"]
    chain = kill_chain.run_chain(launch, tmp_path / "chain", schedule)
    assert chain.kills == len(schedule)
    assert chain.restarts == 1  # killed while creating the file: no file, so the run starts anew
    assert kill_chain.differences(reference, chain.path) == []
    with h5py.File(chain.path, "r") as f:
        assert f["hyper/step"].shape[0] > 2  # it did outgrow the estimate


def test_a_run_killed_before_its_first_checkpoint_restarts_in_the_same_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, launch = setup_chain(tmp_path, train__epochs=4)
    assert launch(None, "weight-step:1").wait(120) == -9  # an epoch is two steps: no checkpoint yet
    (path,) = (tmp_path / "chain").glob("*.h5")
    capsys.readouterr()
    assert main(["run", "--resume", str(path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "has no checkpoint yet: starting the run again from the beginning" in err
    assert len(err.strip().splitlines()) == 1
    assert kill_chain.differences(reference, path) == []
    record = stnkit.open_run(path)
    assert record.attrs["resumed"] == 1 and record.attrs["resumed_from_step"] == 0


def test_show_flags_a_record_whose_tables_contradict_its_counters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stnkit.run(write_recipe(tmp_path, train__epochs=4)).path
    assert path is not None
    assert stnkit.open_run(path).problems() == []
    with h5py.File(path, "r+") as f:  # what the table-emptying resume left behind
        for table in ("hyper", "train", "epochs", "epochs/metrics"):
            f[f"{table}/_rows"][()] = 0
    problems = stnkit.open_run(path).problems()
    assert any("0 epoch rows, but the run ended in epoch 4" in p for p in problems)
    assert any("0 train rows" in p for p in problems)
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "inconsistent" in out and "0 epoch rows" in out
    assert main(["show", str(path), "--json"]) == 0
    assert '"problems": [' in capsys.readouterr().out


def test_a_file_left_flagged_open_for_writing_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ending a run used to risk (reopening it "r+" for its attributes, killed there)."""
    import multiprocessing
    import os
    import signal

    path = stnkit.run(write_recipe(tmp_path, train__epochs=2)).path
    assert path is not None

    def killed_while_writing() -> None:
        with h5py.File(path, "r+") as f:
            f.attrs["status"] = "completed"
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    child = multiprocessing.get_context("fork").Process(target=killed_while_writing)
    child.start()
    child.join()
    assert child.exitcode == -9
    assert main(["show", str(path)]) == 2
    assert f"h5clear -s {path}" in capsys.readouterr().err


IMAGE_DATA = Path(__file__).parents[1] / "plugins" / "stnkit-cnn" / "tests" / "data" / "fashion-mnist"
#: the Fashion-MNIST recipe — three dropout rates, five augmentations, all drawn per example — at toy
#: size on the committed slice: four weight steps an epoch, a checkpoint every two
IMAGE = [
    f"data.root={IMAGE_DATA}",
    "data.valid_size=100",
    "data.train_subset=100",
    "data.valid_subset=null",
    "data.test_subset=100",
    "data.batch_size=25",
    "data.eval_batch_size=50",
    "model.channels=[4,8]",
    "model.hidden=16",
    "train.epochs=3",
    "train.warmup_epochs=1",
    "run.log_every=1",
    "store.checkpoint_steps=2",
    "run.flush_seconds=0.05",
]

IMAGE_KILLS = [
    "weight-step:3",  # mid-epoch, a step after the first checkpoint
    "checkpoint-bytes:2",
    "weight-step:5",
    "flush-rows:2",
    "final-eval",
    "end-results",
]


@pytest.mark.parametrize("response", ["stn", "delta-stn"])
def test_an_image_run_with_dropout_augmentation_and_per_example_draws_killed_again_and_again(
    tmp_path: Path, response: str
) -> None:
    recipe = Path(__file__).parents[1] / "recipes" / "fashion-mnist.yaml"
    overrides = [*IMAGE, f"response.name={response}"]
    reference = reference_run(recipe, overrides, tmp_path / "reference")
    record = stnkit.open_run(reference)
    assert record.steps == 12 and len(record.hyperparameters) == 9
    per_example = record.recipe["hyperparameters"]
    assert all(spec.get("per_example", True) for spec in per_example.values())
    launch = kill_chain.fork_launcher(recipe, overrides, tmp_path / "chain")
    chain = kill_chain.run_chain(launch, tmp_path / "chain", IMAGE_KILLS)
    assert chain.kills == len(IMAGE_KILLS) and chain.restarts == 0
    assert kill_chain.differences(reference, chain.path) == []
