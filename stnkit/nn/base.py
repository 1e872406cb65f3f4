"""Shared pieces of the best-response layers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HYPER_INIT_STD", "BestResponse", "gates", "init_hyper_weight"]

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
    gw, gb = g[:, :out], g[:, out:]
    return gw.reshape(shape), gb.reshape(shape)


class BestResponse(nn.Module):
    """Marker base class of best-response layers: holds ``hyper_weight`` (V, shape ``(2·out, H)``)."""

    hyper_weight: nn.Parameter
    n_hyper: int

    def _make_hyper_weight(self, out: int, n_hyper: int) -> None:
        self.n_hyper = n_hyper
        self.hyper_weight = nn.Parameter(torch.empty(2 * out, n_hyper))
        init_hyper_weight(self.hyper_weight)


def uniform_fan_in(tensor: Tensor, fan_in: int) -> None:
    """torch.nn's default initialisation for weights and biases: U(-1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(tensor, -bound, bound)
