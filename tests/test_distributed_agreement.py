"""One process and two torchrun ranks (gloo on the CPU) follow the same trajectory.

Checked as a property over ridge problems of several shapes — steps per epoch even and odd, a
short last batch that does not divide by the world size (training and hyper batches), hyper
cycles that cross epoch ends, per-batch and per-example perturbations — with both responses; a
run killed under torchrun resumes onto the same trajectory; and an image recipe with dropout,
augmentation and per-example draws keeps its ranks identical and follows one process.
Each case is one in-process run and one two-rank run of a few epochs on a small problem.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import stnkit
from stnkit import distributed
from stnkit.data import Batch
from stnkit_tabular.synthetic import make_ridge_problem, save_problem
from tests.test_resume import trajectories

ROOT = Path(__file__).parents[1]
FASHION = ROOT / "plugins" / "stnkit-cnn" / "tests" / "data" / "fashion-mnist"
# the hyper trajectory agrees to this relative tolerance; float sums in another order only
RTOL = 1e-5


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_port()}",
        "-m",
        "stnkit",
        "run",
        *args,
        "--quiet",
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env or _env(), timeout=240, cwd=ROOT)


def _write(folder: Path, recipe: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    recipe["store"] = {"dir": str(folder / "runs"), **recipe.get("store", {})}
    path = folder / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def _one_file(folder: Path) -> Path:
    (path,) = (folder / "runs").glob("*.h5")
    return path


def _in(folder: Path) -> Path:
    (path,) = folder.glob("*.h5")
    return path


def _one_process(recipe: Path) -> Path:
    result = stnkit.run(recipe)
    assert result.status == "completed"
    assert result.path is not None
    return Path(result.path)


def _two_ranks(recipe: Path, env: dict[str, str] | None = None) -> Path:
    done = _torchrun(str(recipe), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    path = _one_file(recipe.parent)
    assert stnkit.open_run(path).attrs["world_size"] == 2
    return path


def _assert_agree(one: Path, two: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    a, b = trajectories(one), trajectories(two)
    for key in ("hyper.step", "train.step"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert len(a["hyper.values"]) >= 5
    # every hyper step's values, relative, no absolute slack
    np.testing.assert_allclose(a["hyper.values"], b["hyper.values"], rtol=RTOL, atol=0, err_msg="values")
    for key in keys:
        np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=1e-7, err_msg=key)
    return a


# -- the pieces, in one process ---------------------------------------------------------------------


def test_a_run_draws_its_perturbations_from_its_own_stream() -> None:
    """ε comes from the run's generator, never from torch's global stream (which dropout and
    augmentations share, and which under torchrun is not where the ranks take ε from)."""
    from stnkit.hyper.kinds import PositiveKind
    from stnkit.hyper.space import HyperSpace

    space = HyperSpace({"wd": PositiveKind(PositiveKind.Config(init=0.1))})
    space.set_generator(torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    first = space.sample(4).detach()
    torch.manual_seed(1)  # another global state: the same draws
    space.set_generator(torch.Generator().manual_seed(3))
    torch.testing.assert_close(space.sample(4).detach(), first)


@pytest.mark.parametrize("sizes", [(2, 3), (3, 4), (5, 5)])
def test_means_weight_each_rank_by_its_share_of_a_short_batch(sizes: tuple[int, int]) -> None:
    """Gradients and losses of per-slice means combine into the global batch's mean."""
    total = sum(sizes)
    values = torch.arange(float(total)) ** 2
    combined = []
    for rank, size in enumerate(sizes):
        ranks = distributed.Distributed(distributed.World(rank, 2, 0, "gloo"))
        part = ranks.shard(Batch(values.view(-1, 1), values))
        assert part.size == size
        combined.append(ranks.share() * float(part.targets.mean()))
    assert sum(combined) / 2 == pytest.approx(float(values.double().mean()), rel=1e-6)


def test_per_example_draws_are_rows_of_the_global_draw() -> None:
    torch.manual_seed(7)
    whole = torch.rand(5, 3, 2)
    ints = torch.randint(9, (5, 2))
    parts, int_parts = [], []
    for rank in range(2):
        ranks = distributed.Distributed(distributed.World(rank, 2, 0, "gloo"))
        part = ranks.shard(Batch(torch.zeros(5, 1), torch.zeros(5)))
        torch.manual_seed(7)  # every rank's global stream is seeded alike
        with distributed.use(ranks):
            parts.append(distributed.batch_rand((part.size, 3, 2)))
            int_parts.append(distributed.batch_randint(9, (part.size, 2)))
    torch.testing.assert_close(torch.cat(parts), whole)
    torch.testing.assert_close(torch.cat(int_parts), ints)
    # a tensor whose first dimension is not the slice's (a weight's mask) is drawn whole
    assert ranks.slice == distributed.Slice(2, 5, 5)
    assert ranks.global_rows(4) == distributed.Slice(0, 4, 4)


# -- ridge problems of several shapes, both responses ---------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A ridge problem and how the recipe walks it."""

    n_train: int
    n_valid: int
    features: int
    noise: float
    batch: int
    valid_batch: int
    train_steps: int
    per_example: bool = False

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_train // self.batch)


# the even shape (2 steps an epoch, full batches, cycles of 2 aligned with epochs) is the shipped
# toy-ridge recipe's, run below as it is
SHAPES = {
    # 3 steps an epoch, the last one of 5 rows (2 + 3 on two ranks); cycles of 2 cross epoch
    # ends; hyper batches of 30 from 75 rows end in one of 15 (7 + 8)
    "odd-short": Shape(45, 75, 8, 0.5, 20, 30, 2),
    # 4 steps an epoch, the last one of 7 rows (3 + 4); cycles of 3 cross epoch ends; hyper
    # batches of 22 from 65 rows end in one of 21 (10 + 11); per-example ε
    "per-example": Shape(31, 65, 12, 2.0, 8, 22, 3, per_example=True),
}


def _ridge_recipe(folder: Path, shape: Shape, response: str, seed: int = 0) -> Path:
    arrays = make_ridge_problem(
        n_train=shape.n_train,
        n_valid=shape.n_valid,
        n_test=50,
        features=shape.features,
        noise=shape.noise,
        seed=seed + 11,
    )
    save_problem(arrays, folder / "ridge.npz")
    recipe: dict[str, Any] = {
        "name": "ridge-shape",
        "seed": seed,
        "data": {
            "name": "tabular",
            "path": "ridge.npz",
            "batch_size": shape.batch,
            "valid_batch_size": shape.valid_batch,
        },
        "model": {"name": "stn-mlp", "hidden_sizes": []},
        "response": {"name": response},
        "hyperparameters": {
            "weight_decay": {"kind": "positive", "init": 0.05, "per_example": shape.per_example}
        },
        "train": {
            "epochs": 5,
            "warmup_epochs": 1,
            "train_steps": shape.train_steps,
            "optimizer": {"name": "adam", "lr": 0.01},
            "hyper_optimizer": {"name": "adam", "lr": 0.1},
            "perturbation": {"init_scale": 0.5, "tune": True, "entropy_weight": 0.001},
        },
        "run": {"log_every": 1},
        "store": {"checkpoint_steps": 2},
    }
    return _write(folder, recipe)


def test_the_shapes_cover_what_they_claim() -> None:
    odd, per_example = SHAPES["odd-short"], SHAPES["per-example"]
    assert odd.steps_per_epoch % 2 == 1 and per_example.steps_per_epoch % 2 == 0
    for shape in (odd, per_example):
        assert shape.steps_per_epoch % shape.train_steps  # hyper cycles cross epoch ends
        assert shape.n_train % shape.batch % 2  # a short last batch that splits unevenly
    assert odd.n_valid % odd.valid_batch % 2 and per_example.n_valid % per_example.valid_batch % 2


class TwoRankRuns:
    """Two-rank runs of (shape, response), each made once per module: the shape test and the
    resume test share them (every torchrun start costs seconds)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths: dict[tuple[str, str], Path] = {}

    def __call__(self, name: str, response: str) -> Path:
        key = (name, response)
        if key not in self.paths:
            folder = self.root / f"{name}-{response}"
            self.paths[key] = _two_ranks(_ridge_recipe(folder, SHAPES[name], response))
        return self.paths[key]


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory: pytest.TempPathFactory) -> TwoRankRuns:
    return TwoRankRuns(tmp_path_factory.mktemp("two-ranks"))


@pytest.mark.slow
@pytest.mark.parametrize("response", ["stn", "delta-stn"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_two_ranks_follow_one_process_on_ridge_problems_of_every_shape(
    tmp_path: Path, two_rank_runs: TwoRankRuns, name: str, response: str
) -> None:
    one = _one_process(_ridge_recipe(tmp_path, SHAPES[name], response))
    two = two_rank_runs(name, response)
    _assert_agree(one, two, ("hyper.scales", "hyper.val_loss", "train.loss", "epochs.val_loss", "test"))


@pytest.mark.slow
@pytest.mark.parametrize("response", ["stn", "delta-stn"])
def test_toy_ridge_recipe_two_ranks_follow_one_process(tmp_path: Path, response: str) -> None:
    """The shipped recipe itself, shortened (its trajectory parted from the first hyper step)."""
    overrides = ["train.epochs=9", "train.warmup_epochs=2", "run.log_every=1", f"response.name={response}"]
    recipe = ROOT / "recipes" / "toy-ridge.yaml"
    result = stnkit.run(recipe, overrides=overrides, out_dir=tmp_path / "one")
    assert result.status == "completed" and result.path is not None
    args = ["recipes/toy-ridge.yaml", "--out", str(tmp_path / "two" / "runs")]
    done = _torchrun(*args, *(x for o in overrides for x in ("--set", o)))
    assert done.returncode == 0, done.stderr[-3000:]
    two = _in(tmp_path / "two" / "runs")
    keys = ("hyper.scales", "hyper.val_loss", "train.loss", "epochs.val_loss", "test")
    _assert_agree(Path(result.path), two, keys)


@pytest.mark.slow
def test_a_run_killed_under_torchrun_resumes_onto_the_same_trajectory(
    tmp_path: Path, two_rank_runs: TwoRankRuns
) -> None:
    """Δ-STN (two optimizers of its own) on the odd shape, killed mid-epoch; STN's resume under
    torchrun is checked in test_distributed.py."""
    name, response = "odd-short", "delta-stn"
    shape = SHAPES[name]
    whole = two_rank_runs(name, response)
    recipe = _ridge_recipe(tmp_path / "killed", shape, response)
    # rank 0 (the writer) dies right after its third checkpoint, mid-epoch (checkpoints every
    # 2 weight steps and at each epoch's end); rank 1 loses its peer and stops
    killed = _torchrun(str(recipe), env=_env(STNKIT_TEST_KILL_AT="checkpoint-done:3"))
    assert killed.returncode != 0
    path = _one_file(recipe.parent)
    assert stnkit.open_run(path).status != "completed"
    done = _torchrun("--resume", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    again, reference = trajectories(path), trajectories(whole)
    for key, value in reference.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)  # exactly where it would be
    record = stnkit.open_run(path)
    assert record.status == "completed"


# -- an image recipe: dropout, augmentation, per-example draws ------------------------------------


def _image_recipe(folder: Path, response: str) -> Path:
    recipe: dict[str, Any] = {
        "name": "fashion-tiny",
        "seed": 0,
        "data": {
            "name": "fashion-mnist",
            "root": str(FASHION),
            "batch_size": 16,
            "eval_batch_size": 50,
            "valid_size": 100,
            "train_subset": 40,  # 3 steps an epoch, the last of 8 rows
            "test_subset": 60,
        },
        "model": {"name": "stn-cnn", "channels": [4, 8], "hidden": 16},
        "response": {"name": response},
        "augment": [
            {"name": "brightness"},
            {"name": "contrast"},
            {"name": "cutout"},
            {"name": "input-dropout"},
            {"name": "input-scaling"},
        ],
        "hyperparameters": {
            "dropout_conv1": {"kind": "interval", "low": 0.0, "high": 0.9, "init": 0.2},
            "dropout_conv2": {"kind": "interval", "low": 0.0, "high": 0.9, "init": 0.2},
            "dropout_fc1": {"kind": "interval", "low": 0.0, "high": 0.9, "init": 0.2},
            "input_dropout": {"kind": "unit", "init": 0.1},
            "input_scaling": {"kind": "interval", "low": 0.0, "high": 1.0, "init": 0.2},
            "brightness": {"kind": "unit", "init": 0.2},
            "contrast": {"kind": "unit", "init": 0.2},
            "cutout_holes": {"kind": "integer", "low": 0, "high": 4, "init": 2},
            "cutout_length": {"kind": "integer", "low": 0, "high": 14, "init": 6},
        },
        "train": {
            "epochs": 3,
            "warmup_epochs": 1,
            "train_steps": 1,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "hyper_optimizer": {"name": "adam", "lr": 0.03},
            "perturbation": {"init_scale": 0.5, "tune": True, "entropy_weight": 0.001},
        },
        "run": {"log_every": 1},
    }
    return _write(folder, recipe)


@pytest.mark.slow
@pytest.mark.parametrize("response", ["stn", "delta-stn"])
def test_an_image_recipe_with_dropout_and_augmentation_follows_one_process(
    tmp_path: Path, response: str
) -> None:
    one = _one_process(_image_recipe(tmp_path / "one", response))
    # the engine compares h, s and a weight checksum across ranks after every epoch: a run that
    # completes had identical ranks throughout
    two = _two_ranks(_image_recipe(tmp_path / "two", response))
    _assert_agree(one, two, ("hyper.scales", "hyper.val_loss", "train.loss", "epochs.val_loss", "test"))
