"""Best-response embedding: ``E_e[tok] + (V·λ̂) ⊙ E_h[tok]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit.nn.base import BestResponse

__all__ = ["BREmbedding"]


class BREmbedding(BestResponse):
    """Token embedding with a response table gated per embedding dimension.

    ``weight``: ``(2, num, dim)`` (elementary, response), the layout :class:`BRLinear` uses, so a
    decoder can tie to it. Tokens ``(B, ...)``, ``hnet`` ``(B, H)``, output ``(B, ..., dim)``.
    ``V`` has ``2·dim`` rows for uniformity with the other layers; only the first ``dim`` (the
    weight gate) are used since an embedding has no bias.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, n_hyper: int) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.empty(2, num_embeddings, embedding_dim))
        self._make_hyper_weight(embedding_dim, n_hyper)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)

    def forward(self, tokens: Tensor, hnet: Tensor | None, weight: Tensor | None = None) -> Tensor:
        """``weight`` overrides the table (e.g. after embedding dropout), same shape."""
        table = self.weight if weight is None else weight
        elementary = F.embedding(tokens, table[0])
        if hnet is None:
            return elementary
        response = F.embedding(tokens, table[1])
        g = F.linear(hnet, self.hyper_weight[: self.embedding_dim])
        g = g.reshape(g.shape[0], *([1] * (tokens.dim() - 1)), self.embedding_dim)
        return torch.addcmul(elementary, g, response)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, n_hyper={self.n_hyper}"
