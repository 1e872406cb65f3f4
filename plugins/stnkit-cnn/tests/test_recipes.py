"""The shipped CNN recipes, run small on the committed slices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import stnkit
from stnkit.cli import main
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
NARROW = {"cifar10-alexnet.yaml": ["model.channels=[8,12,16,12,12]", "model.fc=[32,32]"]}


@pytest.mark.parametrize(
    ("recipe", "overrides", "count"),
    [
        ("cifar10-small.yaml", SMALL, 11),
        ("cifar10-alexnet.yaml", [*SMALL, *NARROW["cifar10-alexnet.yaml"]], 15),
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


@pytest.mark.parametrize("recipe", ["cifar10-alexnet.yaml", "cifar10-small.yaml", "fashion-mnist.yaml"])
def test_dropout_rates_are_bounded_by_the_released_09(recipe: str) -> None:
    fashion = [f"data.root={DATA / 'fashion-mnist'}"] if recipe.startswith("fashion") else []
    space = prepare(REPO / "recipes" / recipe, [*SMALL, *fashion, *NARROW.get(recipe, [])]).parts.space
    rates = [name for name in space.names if name.startswith("dropout_")]
    assert rates
    for name in rates:
        kind = space.kinds[name]
        assert (kind.low, kind.high) == (0.0, 0.9), name
        assert space.values()[name] == pytest.approx(0.05)


def test_alexnet_recipe_follows_the_released_run() -> None:
    recipe = yaml.safe_load((REPO / "recipes" / "cifar10-alexnet.yaml").read_text())
    assert (recipe["data"]["batch_size"], recipe["data"]["valid_size"]) == (128, 10_000)  # last 20%
    assert recipe["model"] == {"name": "stn-alexnet"}
    assert recipe["response"] == {"name": "stn", "hypernet_input": "unconstrained"}
    train = recipe["train"]
    assert train["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9}
    assert train["hyper_optimizer"] == {"name": "adam", "lr": 0.003}
    assert train["scale_optimizer"] == {"name": "adam", "lr": 0.003}
    assert train["lr_decay"] == {"rule": "nonmonotone", "factor": 0.1, "window": 60}
    assert train["perturbation"] == {"init_scale": 0.5, "tune": True, "entropy_weight": 0.001}
    assert (train["warmup_epochs"], train["patience"]) == (5, 75)
    declared = recipe["hyperparameters"]
    assert len(declared) == 15
    inits = {name: h["init"] for name, h in declared.items()}
    assert inits.pop("cutout_length") == 4 and inits.pop("cutout_holes") == 1
    assert set(inits.values()) == {0.05}
    assert (declared["input_scaling"]["low"], declared["input_scaling"]["high"]) == (0.0, 0.3)
    # the released ranges of the integers: holes 0..3, length 0..24
    assert (declared["cutout_holes"]["high"], declared["cutout_length"]["high"]) == (3, 24)


@pytest.mark.slow
def test_alexnet_recipe_runs_an_epoch_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``stnkit run recipes/cifar10-alexnet.yaml --set train.epochs=1`` at full size, on a slice."""
    subset = [*SMALL, "data.train_subset=100", "device=cpu", "train.epochs=1"]
    args = ["run", str(REPO / "recipes" / "cifar10-alexnet.yaml"), "-q", "--out", str(tmp_path)]
    assert main([*args, *[a for o in subset for a in ("--set", o)]]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["show", "--json", path]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "completed"
    assert summary["parameters"]["elementary"] == 23_272_266
    assert summary["parameters"]["response"] == 23_272_266 + 2 * 15 * 9354  # W_h, b_h and V


@pytest.mark.slow
def test_unconstrained_hypernet_input_trains_without_diverging(tmp_path: Path) -> None:
    """``response.hypernet_input=unconstrained`` fed raw would send the weights to NaN: eleven
    rates near 0.05 (u ≈ −2.9 each) make the gates step ~400 times farther per SGD update than
    the default input, and SGD with momentum blows up; the input is divided by a constant (the
    unit test in tests/test_responses.py checks the input)."""
    overrides = [
        *SMALL,
        "seed=0",
        'response={"name": "stn", "hypernet_input": "unconstrained"}',
        "train.epochs=12",
        f"store.dir={tmp_path}",
    ]
    result = stnkit.run(REPO / "recipes" / "cifar10-small.yaml", overrides=overrides)
    assert result.status == "completed", result.end.message
