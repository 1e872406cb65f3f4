"""The built-in response models pass the response conformance suite."""

from __future__ import annotations

import pytest
import torch

from stnkit.build import resolve
from stnkit.config import ComponentConfig
from stnkit.errors import RecipeError
from stnkit.nn import split_parameters
from stnkit.plugins import load_plugins
from stnkit.recipe import parse_recipe
from stnkit.response import FixedResponse, STNResponse
from stnkit.response.base import ScheduledValues
from stnkit.runner import prepare
from stnkit.testing import ResponseConformance, make_space
from tests.test_delta_stn import MODELS, RECIPES

ROOT = RECIPES.parent


class TestSTNResponse(ResponseConformance):
    response_cls = STNResponse


class TestFixedResponse(ResponseConformance):
    response_cls = FixedResponse


class TestFixedSchedule(ResponseConformance):
    response_cls = FixedResponse
    config = {"schedule": {"steps": [1, 3], "values": {"weight_decay": [0.2, 0.05]}}}

    def test_schedule_sets_values_by_step(self) -> None:
        parts, response, _ = self.parts()
        seen = []
        for step in range(1, 6):
            response.before_weight_step(step)
            seen.append(round(parts.space.values()["weight_decay"], 6))
        assert seen == [0.2, 0.2, 0.05, 0.05, 0.05]


def test_unconstrained_hypernet_input_is_linear_and_of_unit_size() -> None:
    """``hypernet_input: unconstrained`` feeds λ̃ itself up to one fixed factor: fed raw, rates
    near 0.05 (u ≈ −2.9 each) made the gates step ~400 times farther per SGD update than the
    default input and SGD diverged (recipes/cifar10-small.yaml, seed 1, with the earlier CNN)."""
    declarations = {f"p{i}": {"kind": "unit", "init": 0.05} for i in range(11)}
    declarations["holes"] = {"kind": "integer", "low": 0, "high": 4, "init": 1}
    space = make_space(declarations)
    response = STNResponse(STNResponse.Config(hypernet_input="unconstrained"), space)
    lam = space.sample(64).detach()
    fed = response._hnet(lam)
    ratio = fed / lam
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio))  # one constant factor, no offset
    at_start = response._hnet(space.h_initial.unsqueeze(0))
    assert float(at_start.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-5)
    # small unconstrained values are fed unchanged
    tame = make_space({"a": {"kind": "unit", "init": 0.4}, "b": {"kind": "unit", "init": 0.6}})
    tame_response = STNResponse(STNResponse.Config(hypernet_input="unconstrained"), tame)
    assert torch.equal(tame_response._hnet(tame.h_initial.unsqueeze(0)), tame.h_initial.unsqueeze(0))


@pytest.mark.parametrize("model", ["stn-mlp", "stn-lstm"])
def test_v_starts_from_the_released_spread(model: str) -> None:
    """Every best-response layer's V (the embedding's included) starts from N(0, 0.01²)."""
    recipe, overrides = MODELS[model]
    built = prepare(RECIPES / recipe, [*overrides, 'response={"name": "stn"}'])
    initial = [v.detach() for v in split_parameters(built.parts.model).hyper_weights]
    assert initial
    for v in initial:
        assert 0.005 < float(v.std()) < 0.02


class _Ramp(FixedResponse):
    """A third-party response that sets values of its own (``ramp.to``) as the run goes."""

    name = "test-ramp"

    class Config(ComponentConfig):
        to: dict[str, list[float]] = {}

    @classmethod
    def scheduled_values(cls, config: Config) -> list[ScheduledValues]:
        return [ScheduledValues(name, values, f"to.{name}") for name, values in config.to.items()]


def test_values_a_response_schedules_are_checked_against_the_declarations() -> None:
    plugins = load_plugins()
    plugins.responses.register(_Ramp)
    data = {
        "name": "ramp",
        "data": {"name": "tabular", "path": str(ROOT / "recipes/data/toy-ridge.npz"), "batch_size": 20},
        "model": {"name": "stn-mlp", "hidden_sizes": []},
        "hyperparameters": {"weight_decay": {"kind": "positive", "init": 0.01, "per_example": False}},
        "train": {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.1}},
    }
    good = {**data, "response": {"name": "test-ramp", "to": {"weight_decay": [0.1, 0.2]}}}
    resolve(parse_recipe(good), plugins)
    bad = {**data, "response": {"name": "test-ramp", "to": {"weight_decay": [0.1, -1.0], "dropout": [0.1]}}}
    with pytest.raises(RecipeError) as caught:
        resolve(parse_recipe(bad), plugins)
    assert caught.value.problems == [
        ("response.to.weight_decay.1", "-1 is outside the range [0, inf] of kind 'positive'"),
        ("response.to.dropout", "'dropout' is not a declared hyperparameter"),
    ]
