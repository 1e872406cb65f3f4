"""The shipped CNN recipes, run small on the committed slices."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import stnkit
from stnkit.runner import prepare

REPO = Path(__file__).parents[3]
DATA = Path(__file__).parent / "data"
SMALL = [
    f"data.root={DATA}",
    "data.valid_size=100",
    "data.train_subset=null",
    "data.valid_subset=null",
    "data.test_subset=200",
    "data.batch_size=50",
    "data.eval_batch_size=100",
]


@pytest.mark.parametrize(
    ("recipe", "overrides", "count"),
    [
        ("cifar10-small.yaml", SMALL, 11),
        ("cifar10-alexnet.yaml", [*SMALL, "model.channels=[8,12,16,12,12]", "model.fc=[32,32]"], 15),
        ("fashion-mnist.yaml", [*SMALL, f"data.root={DATA / 'fashion-mnist'}"], 9),
    ],
)
def test_every_hyperparameter_gets_a_hypergradient(recipe: str, overrides: list[str], count: int) -> None:
    built = prepare(REPO / "recipes" / recipe, overrides)
    parts, response, data = built.parts, built.response, built.dataset
    assert parts.space.size == count
    torch.manual_seed(0)
    for batch in list(data.train_batches(1, torch.Generator()))[:3]:
        response.weight_step(parts, batch)  # moves V off its initialisation
    response.hyper_step(parts, next(data.hyper_batches(torch.Generator())))
    grad = parts.space.h.grad
    assert grad is not None
    for i, name in enumerate(parts.space.names):
        assert float(grad[i].abs()) > 0, f"no hypergradient for {name}"
    assert {"cutout_holes", "cutout_length"} <= set(parts.space.names)


def test_cifar10_small_runs_end_to_end(tmp_path: Path) -> None:
    overrides = [*SMALL, "train.epochs=2", "train.warmup_epochs=0", f"store.dir={tmp_path}"]
    result = stnkit.run(REPO / "recipes" / "cifar10-small.yaml", overrides=overrides)
    assert result.status == "completed"
    record = stnkit.open_run(result.path)  # type: ignore[arg-type]
    assert len(record.hyperparameters) == 11 and len(record.hyper["step"]) == 8
    assert set(record.test) == {"loss", "accuracy", "error"}
    holes = record.values("cutout_holes")
    assert ((holes >= 0) & (holes < 5)).all()  # continuous value of an integer in 0..4
