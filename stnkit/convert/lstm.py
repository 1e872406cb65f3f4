"""Converted ``nn.LSTM``: a stack of stnkit's best-response LSTM layers started from its weights."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from stnkit.convert.layers import ConvertedDropout, ConvertedLayer, gated_sq_norm
from stnkit.errors import ConvertError
from stnkit.nn.linear import effective_sq_norm
from stnkit.nn.lstm import BRLSTMLayer

__all__ = ["ConvertedLSTM", "ConvertedLSTMLayer"]


class ConvertedLSTMLayer(BRLSTMLayer, ConvertedLayer):
    """One :class:`~stnkit.nn.BRLSTMLayer` whose elementary weights are an ``nn.LSTM`` layer's."""

    def sq_norm(self, attribute: str, hnet: Tensor | None) -> Tensor:
        hnet = hnet if self.has_response else None
        name = attribute.rsplit("_", 1)[1]  # ih or hh
        stacked: Tensor = getattr(self, attribute)
        hyper: Tensor | None = getattr(self, f"hyper_{name}")
        if attribute.startswith("weight"):
            return effective_sq_norm(stacked, hnet, hyper)
        gate = None if hnet is None or hyper is None else F.linear(hnet, hyper[stacked.shape[1] :])
        return gated_sq_norm(stacked, gate)


class ConvertedLSTM(nn.Module, ConvertedLayer):
    """``nn.LSTM``'s call signature and results (``output, (h_n, c_n)``) for unidirectional,
    unprojected LSTMs with biases; ``dropout`` (more than one layer) drops between layers."""

    def __init__(self, lstm: nn.LSTM, n_hyper: int) -> None:
        super().__init__()
        self.n_hyper = n_hyper
        self.batch_first = lstm.batch_first
        self.hidden_size = lstm.hidden_size
        self.num_layers = lstm.num_layers
        layers = []
        for index in range(lstm.num_layers):
            width = lstm.input_size if index == 0 else lstm.hidden_size
            layer = ConvertedLSTMLayer(width, lstm.hidden_size, n_hyper)
            reference = getattr(lstm, f"weight_ih_l{index}")
            layer.to(device=reference.device, dtype=reference.dtype)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(layer, name)[0].copy_(getattr(lstm, f"{name}_l{index}"))
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        if lstm.num_layers > 1:
            self.dropout = ConvertedDropout(lstm.dropout, False, None)

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if isinstance(input, PackedSequence):
            raise ConvertError(f"converted LSTM {self.path!r} does not take a PackedSequence; pad the batch")
        if input.dim() != 3:
            raise ConvertError(
                f"converted LSTM {self.path!r} needs batched inputs, got shape {tuple(input.shape)}"
            )
        x = input if self.batch_first else input.transpose(0, 1)
        hnet = self.current_hnet(x)
        states: list[tuple[Tensor, Tensor]] = []
        for index, layer in enumerate(self.layers):
            state = None if hx is None else (hx[0][index], hx[1][index])
            x, last = layer(x, hnet, state)
            states.append(last)
            if index < self.num_layers - 1:
                x = self.dropout(x)
        h_n = torch.stack([h for h, _ in states])
        c_n = torch.stack([c for _, c in states])
        return (x if self.batch_first else x.transpose(0, 1)), (h_n, c_n)


def lstm_origins(lstm: nn.LSTM) -> dict[str, tuple[str, str]]:
    return {
        f"{name}_l{index}": (f"layers.{index}", name)
        for index in range(lstm.num_layers)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }


def check_lstm(lstm: nn.LSTM) -> dict[str, Any]:
    from stnkit.convert.converters import UnsupportedLayerError

    if lstm.bidirectional:
        raise UnsupportedLayerError("bidirectional")
    if lstm.proj_size:
        raise UnsupportedLayerError(f"proj_size={lstm.proj_size}")
    if not lstm.bias:
        raise UnsupportedLayerError("bias=False")
    return {}
