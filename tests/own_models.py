"""Plain torch models, written as a user would, importing nothing from stnkit: what conversion
and the ``module`` model component are tested on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PlainMLP(nn.Module):
    """Flattened inputs → hidden layers with dropout → outputs."""

    def __init__(self, in_features: int = 8, hidden: int = 16, out_features: int = 1, p: float = 0.1) -> None:
        super().__init__()
        self.input_drop = nn.Dropout(p)
        self.fc1 = nn.Linear(in_features, hidden)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_drop(x.flatten(1))
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class SmallCNN(nn.Module):
    """Two convolutions with channel dropout, a 1-d convolution over rows, a linear head."""

    def __init__(self, channels: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding="same")
        self.drop2d = nn.Dropout2d(0.1)
        self.rows = nn.Conv1d(8, 4, 3)
        self.head = nn.Linear(4, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop2d(F.max_pool2d(torch.relu(self.conv1(x)), 2))
        x = torch.relu(self.conv2(x)).mean(dim=3)  # (B, 8, H/2)
        x = torch.relu(self.rows(x)).mean(dim=2)
        return self.head(x)


class TransformerLM(nn.Module):
    """A small language model of ``nn.TransformerEncoder`` layers over token ids ``(B, T)``."""

    def __init__(
        self, vocab: int = 50, d_model: int = 16, heads: int = 2, layers: int = 2, batch_first: bool = True
    ) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Embedding(vocab, d_model)
        self.embed_dropout = nn.Dropout(0.1)
        layer = nn.TransformerEncoderLayer(d_model, heads, 32, dropout=0.1, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=batch_first)
        self.decoder = nn.Linear(d_model, vocab)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        steps = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(steps)
        x = self.embed_dropout(self.embed(tokens) * self.scale)
        if not self.batch_first:
            x = x.transpose(0, 1)
        x = self.encoder(x, mask=mask, is_causal=True)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return self.decoder(x)


class LSTMLM(nn.Module):
    """Embedding → two-layer LSTM → dropout → decoder, over token ids ``(B, T)``."""

    def __init__(self, vocab: int = 50, size: int = 16, batch_first: bool = True) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Embedding(vocab, size)
        self.rnn = nn.LSTM(size, size, num_layers=2, dropout=0.2, batch_first=batch_first)
        self.output_dropout = nn.Dropout(0.2)
        self.decoder = nn.Linear(size, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        if not self.batch_first:
            x = x.transpose(0, 1)
        x, _ = self.rnn(x)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return self.decoder(self.output_dropout(x))


class FunctionalDropoutMLP(nn.Module):
    """Dropout written as a function call in ``forward``: invisible to module swapping."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.dropout(torch.relu(self.fc1(x)), 0.2, self.training))


class WithGRU(nn.Module):
    """A recurrent layer conversion cannot express."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class NoLayers(nn.Module):
    """Nothing to convert: a parameter-free map."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


def make_tensor() -> Tensor:
    """Not a module: what a wrong ``target`` might name."""
    return torch.zeros(1)
