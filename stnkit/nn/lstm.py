"""Best-response LSTM: input→hidden and hidden→hidden maps are best-response linear maps."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from stnkit.nn.base import BestResponse, gates, init_hyper_weight
from stnkit.nn.dropout import dropconnect as _dropconnect
from stnkit.nn.linear import br_linear

__all__ = ["BRLSTM", "BRLSTMLayer", "LSTMState"]

LSTMState = tuple[Tensor, Tensor]
"""``(h, c)``, each ``(B, hidden)``."""


class BRLSTMLayer(BestResponse):
    """One LSTM layer whose gate pre-activations are best-response linear maps (gate order i,f,g,o).

    ``weight_ih``: ``(2, 4·hidden, input)``, ``weight_hh``: ``(2, 4·hidden, hidden)``, biases
    ``(2, 4·hidden)``; ``hyper_ih`` and ``hyper_hh`` (``(8·hidden, H)``) map ``λ̂`` to the weight and
    bias gates of each map. The input map runs once for all time steps; each step then needs one
    ``(B, hidden) × (hidden, 8·hidden)`` matmul for both hidden→hidden branches.
    """

    def __init__(self, input_size: int, hidden_size: int, n_hyper: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.n_hyper = n_hyper
        gate = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(2, gate, input_size))
        self.weight_hh = nn.Parameter(torch.empty(2, gate, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(2, gate))
        self.bias_hh = nn.Parameter(torch.empty(2, gate))
        self.hyper_ih = nn.Parameter(torch.empty(2 * gate, n_hyper))
        self.hyper_hh = nn.Parameter(torch.empty(2 * gate, n_hyper))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(weight, -bound, bound)
        init_hyper_weight(self.hyper_ih)
        init_hyper_weight(self.hyper_hh)

    def forward(
        self,
        x: Tensor,
        hnet: Tensor | None,
        state: LSTMState | None = None,
        dropconnect: float = 0.0,
    ) -> tuple[Tensor, LSTMState]:
        """Run the layer over ``x`` ``(B, T, input)``; returns ``(B, T, hidden)`` and the last state.

        ``dropconnect``: rate of DropConnect on the hidden→hidden weights (training mode only),
        one mask for the whole sequence, shared by the elementary and response weights.
        """
        batch, _steps, _ = x.shape
        gate = 4 * self.hidden_size
        w_hh = _dropconnect(self.weight_hh, dropconnect, self.training, shared_dims=1)
        pre = br_linear(x, hnet, self.weight_ih, self.bias_ih, self.hyper_ih)
        if hnet is None:
            pre = pre + self.bias_hh[0]
            w = w_hh[0]
            gw = None
        else:
            gw, gb = gates(hnet, self.hyper_hh, gate, 2)
            pre = pre + torch.addcmul(self.bias_hh[0], gb, self.bias_hh[1]).unsqueeze(1)
            w = w_hh.reshape(2 * gate, self.hidden_size)
        if state is None:
            zeros = x.new_zeros(batch, self.hidden_size)
            h, c = zeros, zeros
        else:
            h, c = state
        outputs = []
        for t_pre in pre.unbind(1):
            y = torch.mm(h, w.t())
            if gw is None:
                g = y + t_pre
            else:
                elementary, response = y[:, :gate], y[:, gate:]
                g = torch.addcmul(elementary, gw, response) + t_pre
            i, f, cand, o = g.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, n_hyper={self.n_hyper}"


class BRLSTM(nn.Module):
    """A stack of :class:`BRLSTMLayer`, batch first.

    ``between(output, layer_index)`` (optional) transforms each layer's output before the next
    layer — where a language model applies locked dropout on the hidden units.
    """

    def __init__(self, input_size: int, hidden_size: int | list[int], num_layers: int, n_hyper: int) -> None:
        super().__init__()
        sizes = hidden_size if isinstance(hidden_size, list) else [hidden_size] * num_layers
        if len(sizes) != num_layers:
            raise ValueError("hidden_size list must have num_layers entries")
        inputs = [input_size, *sizes[:-1]]
        self.layers = nn.ModuleList(BRLSTMLayer(i, h, n_hyper) for i, h in zip(inputs, sizes, strict=True))

    def forward(
        self,
        x: Tensor,
        hnet: Tensor | None,
        state: list[LSTMState] | None = None,
        dropconnect: float = 0.0,
        between: Callable[[Tensor, int], Tensor] | None = None,
    ) -> tuple[Tensor, list[LSTMState]]:
        new_state: list[LSTMState] = []
        for index, layer in enumerate(self.layers):
            x, last = layer(x, hnet, None if state is None else state[index], dropconnect)
            new_state.append(last)
            if between is not None and index < len(self.layers) - 1:
                x = between(x, index)
        return x, new_state
