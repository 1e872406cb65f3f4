"""A plain torch multilayer perceptron: what ``stn-mlp`` converts to best-response form.

It imports nothing from stnkit, as a user's own model would not.
"""

from __future__ import annotations

import itertools

from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}


class MLP(nn.Module):
    """Inputs ``(B, ...)`` flattened, ``input_dropout``, then ``layers`` with ``activation`` and
    ``dropout.<i>`` after every hidden one; the last layer is linear. No hidden sizes: a linear
    model. The dropout rates start at 0: the hyperparameters that drive them set them."""

    def __init__(
        self, features: int, hidden_sizes: list[int], outputs: int, activation: str = "relu"
    ) -> None:
        super().__init__()
        sizes = [features, *hidden_sizes, outputs]
        self.input_dropout = nn.Dropout(0.0)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in itertools.pairwise(sizes))
        self.dropout = nn.ModuleList(nn.Dropout(0.0) for _ in hidden_sizes)
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        h: Tensor = self.input_dropout(x.flatten(1))
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index < last:
                h = self.dropout[index](self.activation(h))
        return h
