"""Best-response fully connected layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit.nn.base import BestResponse, elementary, gates, halves, uniform_fan_in

__all__ = ["BRLinear", "br_linear", "effective_sq_norm"]


class BRLinear(BestResponse):
    """``y = W_e·x + b_e + (V_w·λ̂) ⊙ (W_h·x) + (V_b·λ̂) ⊙ b_h``.

    ``weight`` has shape ``(2, out, in)``: ``weight[0]`` is the elementary ``W_e``, ``weight[1]``
    the response ``W_h``; both are applied with one matmul. ``bias`` is ``(2, out)`` likewise.
    ``hyper_weight`` is ``V``, ``(2·out, H)``: rows ``[:out]`` gate the weights, ``[out:]`` the bias.
    Inputs are ``(B, ..., in)``; ``hnet`` is ``(B, H)``, one row per example; outputs are
    ``(B, ..., out)``. With ``hnet=None`` the layer is the plain ``nn.Linear`` with ``W_e, b_e``.
    """

    hyper_weight: nn.Parameter | None

    def __init__(self, in_features: int, out_features: int, n_hyper: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.n_hyper = n_hyper
        self.weight = nn.Parameter(torch.empty(self.stacks, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(self.stacks, out_features)) if bias else None
        self._make_hyper_weight(out_features, n_hyper)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the response weights start like the elementary ones; V ≈ 0 keeps their effect small
        for i in range(self.stacks):
            nn.init.kaiming_uniform_(self.weight[i], a=5**0.5)
            if self.bias is not None:
                uniform_fan_in(self.bias[i], self.in_features)

    def forward(self, x: Tensor, hnet: Tensor | None) -> Tensor:
        self._check(hnet)
        return br_linear(x, hnet, self.weight, self.bias, self.hyper_weight)

    def weight_sq_norm(self, hnet: Tensor | None) -> Tensor:
        """Squared Frobenius norm of each example's effective weight ``W_e + diag(V_w·λ̂) W_h``.

        Returns ``(B,)``, or a scalar when ``hnet`` is ``None``. Computed from row norms, never
        materialising the ``B`` effective matrices.
        """
        return effective_sq_norm(self.weight, hnet, self.hyper_weight)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"n_hyper={self.n_hyper}, bias={self.bias is not None}"
        )


def br_linear(
    x: Tensor,
    hnet: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    hyper_weight: Tensor | None,
) -> Tensor:
    """Functional form of :class:`BRLinear` (``weight``: ``(stacks, out, in)``); reused by tied decoders."""
    out = weight.shape[1]
    if hnet is None:
        return F.linear(x, elementary(weight), None if bias is None else elementary(bias))
    assert hyper_weight is not None
    both = F.linear(x, weight.reshape(2 * out, -1))
    gw, gb = gates(hnet, hyper_weight, out, x.dim())
    elementary_part, response_part = halves(both, -1)
    y = torch.addcmul(elementary_part, gw, response_part)
    if bias is not None:
        y = y + torch.addcmul(bias[0], gb, bias[1])
    return y


def effective_sq_norm(weight: Tensor, hnet: Tensor | None, hyper_weight: Tensor | None) -> Tensor:
    """``‖W_e + diag(g)·W_h‖²`` per example for a stacked ``weight`` ``(stacks, out, ...)``."""
    out = weight.shape[1]
    if hnet is None:
        we = elementary(weight)
        return (we * we).sum()
    assert hyper_weight is not None
    flat = weight.reshape(2, out, -1)
    we, wh = flat[0], flat[1]
    g = F.linear(hnet, hyper_weight[:out])  # (B, out): only the weight gate matters here
    ee = (we * we).sum(dim=1)
    eh = (we * wh).sum(dim=1)
    hh = (wh * wh).sum(dim=1)
    return ee.sum() + 2.0 * (g @ eh) + (g * g) @ hh
