"""Best-response embedding: ``E_e[tok] + (V·λ̂) ⊙ E_h[tok]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit.nn.base import BestResponse

__all__ = ["BREmbedding"]


class BREmbedding(BestResponse):
    """Token embedding with a response table gated per embedding dimension.

    ``weight``: ``(num, stacks, dim)`` — row ``t`` holds token ``t``'s elementary and response
    vectors side by side, so one lookup of the ``(num, stacks·dim)`` view fetches both and its
    backward is a plain embedding backward. ``elementary_table``/``response_table`` are strided
    ``(num, dim)`` views for a tied decoder. Tokens ``(B, ...)``, ``hnet`` ``(B, H)``, output
    ``(B, ..., dim)``. ``V`` (``hyper_weight``, ``(dim, H)``) gates the response per dimension.
    """

    hyper_weight: nn.Parameter | None

    def __init__(self, num_embeddings: int, embedding_dim: int, n_hyper: int) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.n_hyper = n_hyper
        self.weight = nn.Parameter(torch.empty(num_embeddings, self.stacks, embedding_dim))
        if n_hyper > 0:
            self.hyper_weight = nn.Parameter(torch.empty(embedding_dim, n_hyper))
            nn.init.normal_(self.hyper_weight, std=0.01)
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
            return both[..., :dim]
        assert self.hyper_weight is not None
        g = F.linear(hnet, self.hyper_weight)
        g = g.reshape(g.shape[0], *([1] * (tokens.dim() - 1)), dim)
        return torch.addcmul(both[..., :dim], g, both[..., dim:])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, n_hyper={self.n_hyper}"
