"""Best-response embedding: ``E_e[tok] + (V·λ̂) ⊙ E_h[tok]``."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit.nn.base import BestResponse, halves, init_hyper_weight

__all__ = ["BREmbedding", "BRTiedDecoder", "br_tied_linear"]


class BREmbedding(BestResponse):
    """Token embedding with a response table gated per embedding dimension.

    ``weight``: ``(num, stacks, dim)`` — row ``t`` holds token ``t``'s elementary and response
    vectors side by side, so one lookup of the ``(num, stacks·dim)`` view fetches both and its
    backward is a plain embedding backward. ``elementary_table``/``response_table`` are strided
    ``(num, dim)`` views for a tied decoder. Tokens ``(B, ...)``, ``hnet`` ``(B, H)``, output
    ``(B, ..., dim)``. ``V`` (``hyper_weight``, ``(dim, H)``) gates the response per dimension.
    """

    hyper_weight: nn.Parameter | None
    stacked_parameters: ClassVar[dict[str, int]] = {"weight": 1}

    def __init__(self, num_embeddings: int, embedding_dim: int, n_hyper: int) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.n_hyper = n_hyper
        self.weight = nn.Parameter(torch.empty(num_embeddings, self.stacks, embedding_dim))
        if n_hyper > 0:
            self.hyper_weight = nn.Parameter(torch.empty(embedding_dim, n_hyper))
            init_hyper_weight(self.hyper_weight)
        else:
            self.register_parameter("hyper_weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    @property
    def elementary_table(self) -> Tensor:
        return self.weight[:, 0]

    @property
    def response_table(self) -> Tensor:
        return self.weight[:, 1]

    def forward(self, tokens: Tensor, hnet: Tensor | None, weight: Tensor | None = None) -> Tensor:
        """``weight`` overrides the table (e.g. after embedding dropout), same shape."""
        self._check(hnet)
        table = self.weight if weight is None else weight
        dim = self.embedding_dim
        both = F.embedding(tokens, table.reshape(self.num_embeddings, -1))
        if hnet is None:
            return both if self.stacks == 1 else both[..., :dim]
        assert self.hyper_weight is not None
        g = F.linear(hnet, self.hyper_weight)
        g = g.reshape(g.shape[0], *([1] * (tokens.dim() - 1)), dim)
        elementary_part, response_part = halves(both, -1)
        return torch.addcmul(elementary_part, g, response_part)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, n_hyper={self.n_hyper}"


def br_tied_linear(
    x: Tensor,
    hnet: Tensor | None,
    table: Tensor,
    bias: Tensor | None,
    hyper_weight: Tensor | None,
) -> Tensor:
    """A best-response decoder that shares :class:`BREmbedding`'s table ``(V, stacks, D)``.

    ``x``: ``(B, ..., D)`` → logits ``(B, ..., V)``. The table's ``(V·stacks, D)`` view holds each
    word's elementary and response rows interleaved, so one matmul yields both branches with no
    copy of the table. ``bias``: ``(stacks, V)``; ``hyper_weight``: ``(2V, H)`` gating each word's
    logit and bias per example.
    """
    words = table.shape[0]
    if hnet is None:
        weight = table[:, 0] if table.shape[1] > 1 else table.reshape(words, -1)
        return F.linear(x, weight, None if bias is None else bias[0])
    assert hyper_weight is not None
    flat = F.linear(x, table.reshape(2 * words, -1))
    both = flat.view(*flat.shape[:-1], words, 2)
    g = F.linear(hnet, hyper_weight)
    shape = (hnet.shape[0],) + (1,) * (x.dim() - 2) + (words,)
    gw, gb = g[:, :words].reshape(shape), g[:, words:].reshape(shape)
    elementary_part, response_part = both.unbind(-1)  # one backward, no zero-filled gradients
    y = torch.addcmul(elementary_part, gw, response_part)
    if bias is not None:
        y = y + torch.addcmul(bias[0], gb, bias[1])
    return y


class BRTiedDecoder(BestResponse):
    """The output layer of a language model whose weights are an embedding's table.

    Holds only what is its own — ``bias`` ``(stacks, V)`` and ``hyper_weight`` ``(2V, H)`` — and
    takes the (possibly dropped-out) table at call time: ``(B, ..., D)`` → ``(B, ..., V)``.
    """

    hyper_weight: nn.Parameter | None
    stacked_parameters: ClassVar[dict[str, int]] = {"bias": 0}

    def __init__(self, num_embeddings: int, n_hyper: int) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.n_hyper = n_hyper
        self.bias = nn.Parameter(torch.zeros(self.stacks, num_embeddings))
        self._make_hyper_weight(num_embeddings, n_hyper)

    def forward(self, x: Tensor, hnet: Tensor | None, table: Tensor) -> Tensor:
        self._check(hnet)
        return br_tied_linear(x, hnet, table, self.bias, self.hyper_weight)
