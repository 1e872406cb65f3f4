"""Best-response LSTM: input→hidden and hidden→hidden maps are best-response linear maps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from stnkit.nn.base import BestResponse, elementary, gates, halves
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

    hyper_ih: nn.Parameter | None
    hyper_hh: nn.Parameter | None
    stacked_parameters: ClassVar[dict[str, int]] = {
        "weight_ih": 0,
        "weight_hh": 0,
        "bias_ih": 0,
        "bias_hh": 0,
    }

    def __init__(self, input_size: int, hidden_size: int, n_hyper: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.n_hyper = n_hyper
        gate = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(self.stacks, gate, input_size))
        self.weight_hh = nn.Parameter(torch.empty(self.stacks, gate, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(self.stacks, gate))
        self.bias_hh = nn.Parameter(torch.empty(self.stacks, gate))
        self._make_hyper_weight(gate, n_hyper, "hyper_ih")
        self._make_hyper_weight(gate, n_hyper, "hyper_hh")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(weight, -bound, bound)

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
        self._check(hnet)
        batch = x.shape[0]
        hidden = self.hidden_size
        gate = 4 * hidden
        w_hh = _dropconnect(self.weight_hh, dropconnect, self.training, shared_dims=1)
        pre = br_linear(x, hnet, self.weight_ih, self.bias_ih, self.hyper_ih)
        gw: Tensor | None = None
        if hnet is None:
            pre = pre + elementary(self.bias_hh)
            w_t = elementary(w_hh).t()
        else:
            assert self.hyper_hh is not None
            gw, gb = gates(hnet, self.hyper_hh, gate, 2)
            pre = pre + torch.addcmul(self.bias_hh[0], gb, self.bias_hh[1]).unsqueeze(1)
            w_t = w_hh.reshape(2 * gate, hidden).t()
        if state is None:
            h = c = x.new_zeros(batch, hidden)
        else:
            h, c = state
        outputs = []
        # one matmul and six elementwise ops per step: the loop is Python, so every op counts
        for t_pre in pre.unbind(1):
            if gw is None:
                g = torch.addmm(t_pre, h, w_t)
            else:
                y = torch.mm(h, w_t)
                elementary_part, response_part = halves(y, 1)
                g = torch.addcmul(elementary_part + t_pre, gw, response_part)
            # chunk, not slices: one backward per split instead of a zero-filled gradient per slice
            i, f, _, o = torch.sigmoid(g).chunk(4, dim=1)
            cand = torch.tanh(g.chunk(4, dim=1)[2])
            c = torch.addcmul(f * c, i, cand)
            h = o * torch.tanh(c)
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
