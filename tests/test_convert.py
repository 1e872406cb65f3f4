"""Conversion of plain torch modules to best-response form (stnkit.convert)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from stnkit.convert import ConvertedModel, ConvertSpec, convert_module
from stnkit.hyper.space import HyperBatch
from stnkit.nn import zero_hyper_weights
from tests.own_models import PlainMLP


def _batch(size: int, n_hyper: int, values: dict[str, float], hnet: str = "random") -> HyperBatch:
    if hnet == "none" or n_hyper == 0:
        h = None
    elif hnet == "zero":
        h = torch.zeros(size, n_hyper)
    else:
        h = torch.randn(size, n_hyper)
    return HyperBatch(hnet=h, values={k: torch.full((size,), v) for k, v in values.items()})


def _same_function(
    original: nn.Module, converted: ConvertedModel, inputs: Tensor, values: dict[str, float]
) -> None:
    """Converted in eval mode computes the original: plain (no hypernet input), at a zero
    hypernet input and, with V exactly zero (Δ-STN's start), at any hypernet input."""
    original.eval()
    converted.eval()
    with torch.no_grad():
        expected = original(inputs)
        size = inputs.shape[0]
        n = converted.n_hyper
        for mode in ("none", "zero"):
            got = converted(inputs, _batch(size, n, values, mode)).prediction
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        zero_hyper_weights(converted)
        got = converted(inputs, _batch(size, n, values)).prediction
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_mlp_starts_as_the_original_function() -> None:
    torch.manual_seed(0)
    model = PlainMLP()
    original = copy.deepcopy(model)
    converted = convert_module(model, ConvertSpec(), 2, ["dropout", "weight_decay"])
    assert converted.module is model
    assert type(model) is PlainMLP  # the user's class stays
    _same_function(original, converted, torch.randn(6, 8), {"dropout": 0.3, "weight_decay": 0.0})


def test_fixed_conversion_builds_one_stack_layers() -> None:
    model = PlainMLP()
    converted = convert_module(model, ConvertSpec(), 0, ["dropout"])
    assert model.fc1.weight.shape == (1, 16, 8)
    assert not any(name.startswith("hyper") for name, _ in converted.named_parameters())
