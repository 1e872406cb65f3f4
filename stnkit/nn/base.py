"""Shared pieces of the best-response layers."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "HYPER_INIT_STD",
    "BestResponse",
    "count_parameters",
    "elementary",
    "gates",
    "halves",
    "init_hyper_weight",
    "uniform_fan_in",
]

# V starts near zero so that at the start a best-response layer computes the plain layer.
HYPER_INIT_STD = 0.01


def init_hyper_weight(weight: Tensor) -> None:
    nn.init.normal_(weight, mean=0.0, std=HYPER_INIT_STD)


def gates(
    hnet: Tensor, hyper_weight: Tensor, out: int, ndim: int, channel_dim: int = -1
) -> tuple[Tensor, Tensor]:
    """Weight and bias gates ``(V_w·λ̂, V_b·λ̂)`` shaped to broadcast against an ``ndim`` output.

    ``hnet``: ``(B, H)``; ``hyper_weight``: ``(2·out, H)``. Each gate has shape ``(B, out)`` viewed
    with singleton dimensions so that it multiplies ``(B, ..., out)`` (``channel_dim=-1``) or
    ``(B, out, ...)`` (``channel_dim=1``) outputs per example.
    """
    g = F.linear(hnet, hyper_weight)
    shape = [hnet.shape[0]] + [1] * (ndim - 1)
    shape[channel_dim] = out
    gw, gb = g.chunk(2, dim=1)
    return gw.reshape(shape), gb.reshape(shape)


def halves(both: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Split a stacked output into its elementary and response halves along ``dim``.

    ``chunk`` has one backward that concatenates the two gradients; slicing twice would make
    autograd zero-fill a full-size gradient per slice — measurable on every layer.
    """
    elementary_part, response_part = both.chunk(2, dim=dim)
    return elementary_part, response_part


def elementary(stacked: Tensor) -> Tensor:
    """The elementary half of a stacked ``(stacks, ...)`` weight.

    A layer built without a response branch has one stack; taking it as a view (not an index)
    keeps its backward free of the full-size zero fill an index would cost.
    """
    return stacked.squeeze(0) if stacked.shape[0] == 1 else stacked[0]


class BestResponse(nn.Module):
    """Base class of best-response layers.

    ``n_hyper`` is the hypernetwork input width ``H``. With ``n_hyper=0`` the layer is built
    without a response branch — one weight stack, no ``V`` — and is exactly the plain layer: what
    the ``fixed`` response trains, at plain-network speed.
    """

    n_hyper: int

    #: Parameters holding an elementary and a response part stacked along a dimension (index 0
    #: elementary, index 1 response), by name. Response models that update the two parts
    #: separately (Δ-STN) read this; a layer with other stacked parameters overrides it.
    stacked_parameters: ClassVar[dict[str, int]] = {"weight": 0, "bias": 0}

    @property
    def stacks(self) -> int:
        return 2 if self.n_hyper > 0 else 1

    @property
    def has_response(self) -> bool:
        return self.n_hyper > 0

    def _check(self, hnet: Tensor | None) -> None:
        if hnet is not None and not self.has_response:
            raise ValueError(f"{type(self).__name__} was built without a response branch (n_hyper=0)")

    def hyper_parameter_names(self) -> list[str]:
        """Names of this layer's own hypernetwork parameters ``V`` (the maps from the
        hypernetwork input to the gates): every parameter whose name starts with ``hyper``."""
        return [name for name, _ in self.named_parameters(recurse=False) if name.startswith("hyper")]

    def parameter_split(self) -> tuple[int, int]:
        """``(elementary, response)`` counts of this layer's own parameters (not its children's).

        ``hyper_*`` parameters (``V``) are response; every other one holds one elementary and,
        with a response branch, one response stack of the same size. A layer laid out otherwise
        overrides this.
        """
        elementary_count = response_count = 0
        for name, param in self.named_parameters(recurse=False):
            if name.startswith("hyper"):
                response_count += param.numel()
            else:
                mine = param.numel() // self.stacks
                elementary_count += mine
                response_count += param.numel() - mine
        return elementary_count, response_count

    def _make_hyper_weight(self, out: int, n_hyper: int, name: str = "hyper_weight") -> None:
        """Register ``V`` (shape ``(2·out, H)``) under ``name``, or nothing without a response."""
        if n_hyper > 0:
            weight = nn.Parameter(torch.empty(2 * out, n_hyper))
            init_hyper_weight(weight)
            self.register_parameter(name, weight)
        else:
            self.register_parameter(name, None)


def uniform_fan_in(tensor: Tensor, fan_in: int) -> None:
    """torch.nn's default initialisation for weights and biases: U(-1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(tensor, -bound, bound)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(elementary, response)`` parameter counts of ``model``.

    Elementary: the plain network's parameters, what the model has when built without response
    branches. Response: what the best-response layers add (response weights and ``V``); 0 for a
    model built with ``n_hyper=0``. Parameters outside best-response layers are elementary.
    """
    elementary_count = response_count = 0
    for module in model.modules():
        if isinstance(module, BestResponse):
            mine, theirs = module.parameter_split()
            elementary_count += mine
            response_count += theirs
        else:
            elementary_count += sum(p.numel() for p in module.parameters(recurse=False))
    return elementary_count, response_count
