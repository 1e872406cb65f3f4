"""The built-in response models pass the response conformance suite."""

from __future__ import annotations

import pytest
import torch

from stnkit.nn import split_parameters
from stnkit.response import FixedResponse, STNResponse
from stnkit.runner import prepare
from stnkit.testing import ResponseConformance, make_space
from tests.test_delta_stn import MODELS, RECIPES


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
def test_hyper_init_std_rescales_the_initial_draw_of_v(model: str) -> None:
    """``response.hyper_init_std`` sets V's initial spread (the embedding's V included) without
    drawing again: the same seed gives the default draw times the ratio, and 0 gives zeros."""
    recipe, overrides = MODELS[model]
    stn = 'response={"name": "stn"}'

    def initial_v(*extra: str) -> list[torch.Tensor]:
        built = prepare(RECIPES / recipe, [*overrides, stn, *extra])
        return [v.detach().clone() for v in split_parameters(built.parts.model).hyper_weights]

    default = initial_v()
    tripled = initial_v("response.hyper_init_std=0.03")
    zeroed = initial_v("response.hyper_init_std=0")
    assert default and len(default) == len(tripled) == len(zeroed)
    for v, v3, v0 in zip(default, tripled, zeroed, strict=True):
        assert 0.005 < float(v.std()) < 0.02
        torch.testing.assert_close(v3, 3 * v)
        assert bool((v0 == 0).all())
