"""Best-response 2-d convolution, gated per output channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from stnkit.nn.base import BestResponse, elementary, gates, halves, uniform_fan_in
from stnkit.nn.linear import effective_sq_norm

__all__ = ["BRConv2d"]


class BRConv2d(BestResponse):
    """``y = W_e * x + b_e + (V_w·λ̂) ⊙ (W_h * x) + (V_b·λ̂) ⊙ b_h``, gates per output channel.

    ``weight``: ``(2, out, in, kh, kw)``, elementary and response kernels run as one convolution.
    Inputs ``(B, in, H, W)``, ``hnet`` ``(B, H_hyper)``, outputs ``(B, out, H', W')``. Grouped
    convolutions are not supported: stacking the kernels would mix the groups.
    """

    hyper_weight: nn.Parameter | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        n_hyper: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_hyper = n_hyper
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.weight = nn.Parameter(torch.empty(self.stacks, out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(self.stacks, out_channels)) if bias else None
        self._make_hyper_weight(out_channels, n_hyper)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        for i in range(self.stacks):
            nn.init.kaiming_uniform_(self.weight[i], a=5**0.5)
            if self.bias is not None:
                uniform_fan_in(self.bias[i], fan_in)

    def forward(self, x: Tensor, hnet: Tensor | None) -> Tensor:
        self._check(hnet)
        out = self.out_channels
        if hnet is None:
            bias = None if self.bias is None else elementary(self.bias)
            return F.conv2d(x, elementary(self.weight), bias, self.stride, self.padding, self.dilation)
        assert self.hyper_weight is not None
        stacked = self.weight.reshape(2 * out, *self.weight.shape[2:])
        both = F.conv2d(x, stacked, None, self.stride, self.padding, self.dilation)
        gw, gb = gates(hnet, self.hyper_weight, out, 4, channel_dim=1)
        elementary_part, response_part = halves(both, 1)
        y = torch.addcmul(elementary_part, gw, response_part)
        if self.bias is not None:
            b = self.bias.view(2, 1, out, 1, 1)
            y = y + torch.addcmul(b[0], gb, b[1])
        return y

    def weight_sq_norm(self, hnet: Tensor | None) -> Tensor:
        """Squared norm of each example's effective kernel, ``(B,)`` (scalar if ``hnet`` is None)."""
        return effective_sq_norm(self.weight, hnet, self.hyper_weight)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, n_hyper={self.n_hyper}"
        )
