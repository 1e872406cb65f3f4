"""A causal Transformer language model in plain torch: nothing here knows about stnkit.

``recipes/ptb-transformer.yaml`` names this class (``target: "examples.transformer_lm:TransformerLM"``)
and converts it: the encoder layers' projections get a response branch and each ``nn.Dropout``
follows a tuned rate. The class and its ``forward`` stay as written here.

Batches are token ids ``(B, T)`` (batch first, as the ``ptb`` data component gives them); the
result is next-token logits ``(B, T, vocab_size)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["TransformerLM"]


class TransformerLM(nn.Module):
    """Token and learned position embeddings, a pre-norm causal ``nn.TransformerEncoder``, a
    final ``LayerNorm`` and an (untied) decoder ``Linear``.

    Dropout sites, each its own module so that each rate can be set or tuned apart:
    ``embedding_dropout`` on the summed embeddings; per encoder layer ``self_attn.dropout`` on
    the attention weights, ``dropout1``/``dropout2`` on the attention and feed-forward residual
    branches and ``dropout`` inside the feed-forward block.
    """

    def __init__(
        self,
        vocab_size: int = 10000,
        d_model: int = 128,
        heads: int = 4,
        layers: int = 2,
        feedforward: int = 256,
        max_length: int = 256,
        embedding_dropout: float = 0.1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_length = max_length
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_length, d_model)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, feedforward, dropout=dropout, batch_first=True, norm_first=True
        )
        # nested tensors only serve padded batches; language-model windows have none
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, vocab_size)
        with torch.no_grad():
            nn.init.normal_(self.embedding.weight, std=0.02)
            nn.init.normal_(self.position.weight, std=0.02)
            nn.init.normal_(self.decoder.weight, std=0.02)
            self.decoder.bias.zero_()

    def forward(self, tokens: Tensor) -> Tensor:
        steps = tokens.shape[1]
        if steps > self.max_length:
            raise ValueError(f"windows of {steps} tokens exceed max_length {self.max_length}")
        positions = torch.arange(steps, device=tokens.device)
        x = self.embedding(tokens) * math.sqrt(self.d_model) + self.position(positions)
        x = self.embedding_dropout(x)
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=tokens.device)
        h = self.encoder(x, mask=causal, is_causal=True)
        logits: Tensor = self.decoder(self.norm(h))
        return logits
