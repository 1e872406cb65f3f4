"""Best-response versions of torch layers that start from a given layer's own weights.

Each converted layer reads the hypernetwork input from its model's :class:`HyperContext` and
keeps the original layer's call signature, so the user's ``forward`` runs unchanged. The
elementary stack is a copy of the original weights; the response stack is initialised as the
best-response layers initialise it and ``V`` is near zero, so at start a converted layer computes
the original layer's function.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit.convert.context import HyperContext
from stnkit.errors import ConvertError
from stnkit.nn.base import BestResponse, elementary, gates, halves, uniform_fan_in
from stnkit.nn.dropout import channel_dropout, dropout
from stnkit.nn.embedding import BREmbedding
from stnkit.nn.linear import BRLinear, effective_sq_norm

__all__ = [
    "ConvertedConv",
    "ConvertedDropout",
    "ConvertedEmbedding",
    "ConvertedLayer",
    "ConvertedLinear",
    "gated_sq_norm",
]


def gated_sq_norm(stacked: Tensor, gate: Tensor | None) -> Tensor:
    """``‖e + diag(g)·r‖²`` per example for ``stacked`` ``(stacks, out, ...)`` and gate ``(B, out)``:
    ``(B,)``; with no gate (or one stack) the elementary part's squared norm, a scalar."""
    if gate is None or stacked.shape[0] == 1:
        e = elementary(stacked)
        return (e * e).sum()
    out = stacked.shape[1]
    flat = stacked.reshape(2, out, -1)
    e, r = flat[0], flat[1]
    return (e * e).sum() + 2.0 * (gate @ (e * r).sum(dim=1)) + (gate * gate) @ (r * r).sum(dim=1)


class ConvertedLayer:
    """What every converted layer shares: its path, its model's context and the batch dimension
    of its inputs (1 inside a ``batch_first=False`` attention layer)."""

    path: str
    context: HyperContext
    batch_dim: int
    n_hyper: int

    def bind(self, path: str, context: HyperContext, batch_dim: int = 0) -> None:
        self.path = path
        self.context = context
        self.batch_dim = batch_dim

    def current_hnet(self, x: Tensor) -> Tensor | None:
        """The context's hypernetwork input, checked against ``x``'s batch size."""
        context = self.context
        if not context.active or context.hnet is None or self.n_hyper == 0:
            return None
        hnet = context.hnet
        if x.dim() <= self.batch_dim or x.shape[self.batch_dim] != hnet.shape[0]:
            raise ConvertError(
                f"converted layer {self.path!r} got inputs of shape {tuple(x.shape)}, whose dimension "
                f"{self.batch_dim} is not the batch size {hnet.shape[0]}: converted layers need the "
                "batch along the first dimension of their inputs (exclude this layer from conversion)"
            )
        return hnet

    def sq_norm(self, attribute: str, hnet: Tensor | None) -> Tensor:
        """Squared norm of the effective ``attribute`` (an original parameter's name), ``(B,)``
        with a hypernetwork input, else a scalar."""
        raise NotImplementedError


class ConvertedLinear(BRLinear, ConvertedLayer):
    """``nn.Linear`` as a :class:`~stnkit.nn.BRLinear`; inputs ``(B, ..., in)``."""

    @classmethod
    def from_module(cls, layer: nn.Linear, n_hyper: int) -> ConvertedLinear:
        new = cls(layer.in_features, layer.out_features, n_hyper, bias=layer.bias is not None)
        new.to(device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            new.weight[0].copy_(layer.weight)
            if layer.bias is not None:
                assert new.bias is not None
                new.bias[0].copy_(layer.bias)
        return new

    def forward(self, x: Tensor, hnet: Tensor | None = None) -> Tensor:
        if hnet is None:
            hnet = self.current_hnet(x)
        if hnet is not None and self.batch_dim != 0:
            return super().forward(x.transpose(0, self.batch_dim), hnet).transpose(0, self.batch_dim)
        return super().forward(x, hnet)

    def sq_norm(self, attribute: str, hnet: Tensor | None) -> Tensor:
        hnet = hnet if self.has_response else None
        if attribute == "weight":
            return effective_sq_norm(self.weight, hnet, self.hyper_weight)
        assert attribute == "bias" and self.bias is not None
        return gated_sq_norm(self.bias, _bias_gate(hnet, self.hyper_weight, self.out_features))


def _bias_gate(hnet: Tensor | None, hyper_weight: Tensor | None, out: int) -> Tensor | None:
    if hnet is None or hyper_weight is None:
        return None
    return F.linear(hnet, hyper_weight[out:])


class ConvertedConv(BestResponse, ConvertedLayer):
    """``nn.Conv1d`` / ``nn.Conv2d`` with a response branch gated per output channel.

    ``weight``: ``(stacks, out, in, *kernel)``; inputs ``(B, in, *spatial)``. Grouped
    convolutions and padding modes other than zeros are not converted (stacking the kernels
    would mix the groups).
    """

    hyper_weight: nn.Parameter | None

    def __init__(self, layer: nn.Conv1d | nn.Conv2d, n_hyper: int) -> None:
        super().__init__()
        self.dims = 1 if isinstance(layer, nn.Conv1d) else 2
        self.in_channels = layer.in_channels
        self.out_channels = layer.out_channels
        self.kernel_size = layer.kernel_size
        self.stride = layer.stride
        self.padding: Any = layer.padding
        self.dilation = layer.dilation
        self.n_hyper = n_hyper
        device, dtype = layer.weight.device, layer.weight.dtype
        shape = (self.stacks, *layer.weight.shape)
        self.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        has_bias = layer.bias is not None
        self.bias = (
            nn.Parameter(torch.empty(self.stacks, self.out_channels, device=device, dtype=dtype))
            if has_bias
            else None
        )
        self._make_hyper_weight(self.out_channels, n_hyper)
        if self.hyper_weight is not None:
            self.hyper_weight.data = self.hyper_weight.data.to(device=device, dtype=dtype)
        fan_in = layer.weight[0].numel()
        with torch.no_grad():
            for i in range(1, self.stacks):
                nn.init.kaiming_uniform_(self.weight[i], a=5**0.5)
                if self.bias is not None:
                    uniform_fan_in(self.bias[i], fan_in)
            self.weight[0].copy_(layer.weight)
            if self.bias is not None and layer.bias is not None:
                self.bias[0].copy_(layer.bias)

    def reset_parameters(self) -> None:
        """Draw every stack afresh as :class:`~stnkit.nn.BRConv2d` does (torch's defaults)."""
        fan_in = self.weight[0, 0].numel()
        for i in range(self.stacks):
            nn.init.kaiming_uniform_(self.weight[i], a=5**0.5)
            if self.bias is not None:
                uniform_fan_in(self.bias[i], fan_in)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        conv = F.conv1d if self.dims == 1 else F.conv2d
        return conv(x, weight, bias, self.stride, self.padding, self.dilation)

    def forward(self, x: Tensor) -> Tensor:
        hnet = self.current_hnet(x)
        if hnet is None:
            bias = None if self.bias is None else elementary(self.bias)
            return self._conv(x, elementary(self.weight), bias)
        assert self.hyper_weight is not None
        out = self.out_channels
        both = self._conv(x, self.weight.reshape(2 * out, *self.weight.shape[2:]), None)
        gw, gb = gates(hnet, self.hyper_weight, out, both.dim(), channel_dim=1)
        elementary_part, response_part = halves(both, 1)
        y = torch.addcmul(elementary_part, gw, response_part)
        if self.bias is not None:
            b = self.bias.view(2, 1, out, *([1] * (both.dim() - 2)))
            y = y + torch.addcmul(b[0], gb, b[1])
        return y

    def sq_norm(self, attribute: str, hnet: Tensor | None) -> Tensor:
        hnet = hnet if self.has_response else None
        if attribute == "weight":
            return effective_sq_norm(self.weight, hnet, self.hyper_weight)
        assert attribute == "bias" and self.bias is not None
        return gated_sq_norm(self.bias, _bias_gate(hnet, self.hyper_weight, self.out_channels))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, n_hyper={self.n_hyper}"
        )


class ConvertedEmbedding(BREmbedding, ConvertedLayer):
    """``nn.Embedding`` as a :class:`~stnkit.nn.BREmbedding`; tokens ``(B, ...)``. A
    ``padding_idx`` row stays zero in both tables and receives no gradient."""

    stacked_parameters: ClassVar[dict[str, int]] = {"weight": 1}

    @classmethod
    def from_module(cls, layer: nn.Embedding, n_hyper: int) -> ConvertedEmbedding:
        new = cls(layer.num_embeddings, layer.embedding_dim, n_hyper)
        new.to(device=layer.weight.device, dtype=layer.weight.dtype)
        new.padding_idx = layer.padding_idx
        with torch.no_grad():
            new.weight[:, 0].copy_(layer.weight)
            if layer.padding_idx is not None:
                new.weight[layer.padding_idx].zero_()
        if layer.padding_idx is not None:
            row = layer.padding_idx
            new.weight.register_hook(  # type: ignore[no-untyped-call]
                lambda grad: grad.index_fill(0, torch.tensor([row], device=grad.device), 0.0)
            )
        return new

    padding_idx: int | None = None

    def forward(self, tokens: Tensor, hnet: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
        if hnet is None:
            hnet = self.current_hnet(tokens)
        return super().forward(tokens, hnet, weight)

    def sq_norm(self, attribute: str, hnet: Tensor | None) -> Tensor:
        assert attribute == "weight"
        # the gate is per embedding dimension: transpose so dimensions play the part of outputs
        table = self.weight.permute(1, 2, 0)  # (stacks, dim, num)
        gate = None if hnet is None or self.hyper_weight is None else F.linear(hnet, self.hyper_weight)
        return gated_sq_norm(table, gate)


class ConvertedDropout(nn.Module, ConvertedLayer):
    """A dropout whose rate is a hyperparameter's per-example value.

    ``channel``: whole channels (``Dropout1d``/``Dropout2d``) are dropped, not single units.
    ``hyperparameter`` ``None``: the module's own rate ``p`` (not tuned). Outside a converted
    model's forward it also uses ``p``, as the original module did.
    """

    n_hyper = 0

    def __init__(self, p: float, channel: bool, hyperparameter: str | None) -> None:
        super().__init__()
        self.p = p
        self.channel = channel
        self.hyperparameter = hyperparameter

    def rate(self, x: Tensor) -> Tensor | float:
        context = self.context
        if self.hyperparameter is None or not context.active or self.hyperparameter not in context.values:
            return self.p
        rate = context.values[self.hyperparameter]
        if x.dim() <= self.batch_dim or x.shape[self.batch_dim] != rate.shape[0]:
            raise ConvertError(
                f"converted dropout {self.path!r} got inputs of shape {tuple(x.shape)}, whose dimension "
                f"{self.batch_dim} is not the batch size {rate.shape[0]}"
            )
        return rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        rate = self.rate(x)
        if self.batch_dim != 0 and isinstance(rate, Tensor):
            return self._drop(x.transpose(0, self.batch_dim), rate).transpose(0, self.batch_dim)
        return self._drop(x, rate)

    def _drop(self, x: Tensor, rate: Tensor | float) -> Tensor:
        if self.channel:
            return channel_dropout(x, rate, True)
        return dropout(x, rate, True)

    def extra_repr(self) -> str:
        driver = self.hyperparameter or "fixed"
        return f"p={self.p}, hyperparameter={driver}, channel={self.channel}"
