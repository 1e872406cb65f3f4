"""Δ-STN's linearized prediction against finite differences of a nonlinear network.

``linearized_prediction(f, 0, δ)`` must be ``f(0) + J·δ`` with ``J`` the Jacobian of the
prediction in the hypernetwork input. A hidden layer with a nonlinearity makes ``f`` curved in
``δ``, so the check is against the derivative itself, not against the other method: for small
``t``, ``(f(t·δ) − f(0))/t`` converges to ``J·δ``, in float64 to many digits.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.response.delta_stn import linearized_prediction
from stnkit.task import ClassificationTask, RegressionTask
from stnkit_tabular.model import STNMLP

N_HYPER = 3
BATCH = 16
FEATURES = 7


def network(activation: str, classes: int) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """A two-hidden-layer ``stn-mlp`` in float64 with every gate live, as ``hnet → prediction``,
    and a batch of hypernetwork directions ``δ``."""
    torch.manual_seed(3)
    task = ClassificationTask(classes) if classes else RegressionTask()
    info = DataInfo(task, (FEATURES,), 1, BATCH, BATCH, output_size=classes or 1)
    config = STNMLP.Config(hidden_sizes=[12, 9], activation=activation)  # type: ignore[arg-type]
    model = STNMLP(config, info, N_HYPER).double().eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.hyper_weight.normal_(0.0, 1.0)  # type: ignore[union-attr]
    inputs = torch.randn(BATCH, FEATURES, dtype=torch.float64)
    zeros = torch.zeros(BATCH, dtype=torch.float64)
    values = {"weight_decay": zeros, "dropout": zeros, "input_dropout": zeros}

    def forward(hnet: Tensor) -> Tensor:
        out: Tensor = model(inputs, HyperBatch(hnet=hnet, values=values)).prediction
        return out

    return forward, torch.randn(BATCH, N_HYPER, dtype=torch.float64)


@pytest.mark.parametrize("method", ["jvp", "double-backward"])
@pytest.mark.parametrize(("activation", "classes"), [("tanh", 0), ("gelu", 4), ("sigmoid", 3)])
def test_the_linearization_is_the_derivative(method: str, activation: str, classes: int) -> None:
    forward, delta = network(activation, classes)
    zero = torch.zeros_like(delta)
    base = forward(zero).detach()
    linear = linearized_prediction(forward, zero, delta, method)  # type: ignore[arg-type]
    directional = (linear - base).detach()
    t = 1e-6
    central = ((forward(t * delta) - forward(-t * delta)) / (2 * t)).detach()
    torch.testing.assert_close(directional, central, rtol=1e-6, atol=1e-8)
    # the network is curved along δ: at t = 1 the linearization is not the network's output, so
    # agreeing with the derivative above is not agreeing with a plain forward pass
    assert float((forward(delta).detach() - linear.detach()).abs().max()) > 1e-2


@pytest.mark.parametrize("method", ["jvp", "double-backward"])
def test_the_error_of_the_linearization_is_second_order(method: str) -> None:
    """Halving the step quarters the remainder ``f(tδ) − f(0) − t·J·δ`` (ReLU included: away
    from its kinks the network is smooth, and random inputs sit away from them)."""
    forward, delta = network("relu", 0)
    zero = torch.zeros_like(delta)
    base = forward(zero).detach()
    slope = (linearized_prediction(forward, zero, delta, method) - base).detach()  # type: ignore[arg-type]
    remainders = []
    for t in (1e-4, 5e-5):
        remainders.append(float((forward(t * delta).detach() - base - t * slope).abs().max()))
    assert remainders[0] > 0
    assert 3.0 < remainders[0] / remainders[1] < 5.0
