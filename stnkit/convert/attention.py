"""Converted ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``.

Their projections become :class:`~stnkit.convert.layers.ConvertedLinear` layers and every
dropout (on the attention weights, in the feed-forward block, on both residual branches) a
:class:`~stnkit.convert.layers.ConvertedDropout`. Attention is computed here, not by torch's
fused kernels, so a per-example attention-dropout rate can apply and no fast path bypasses the
converted parts. Inside, tensors are batch first whatever the original's ``batch_first``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from stnkit.convert.layers import ConvertedDropout, ConvertedLinear
from stnkit.errors import ConvertError

__all__ = [
    "ConvertedMultiheadAttention",
    "ConvertedTransformerEncoderLayer",
    "convert_attention",
    "convert_encoder_layer",
]


class ConvertedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention``'s call signature and results; ``in_proj`` ``(E → 3E)``,
    ``out_proj`` ``(E → E)``, ``dropout`` on the attention weights ``(B, heads, T, S)``."""

    def __init__(self, mha: nn.MultiheadAttention, n_hyper: int) -> None:
        super().__init__()
        self.embed_dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.head_dim = mha.head_dim
        self.batch_first = mha.batch_first
        self._qkv_same_embed_dim = True
        projection = nn.Linear(
            self.embed_dim,
            3 * self.embed_dim,
            bias=mha.in_proj_bias is not None,
            device=mha.in_proj_weight.device,
            dtype=mha.in_proj_weight.dtype,
        )
        with torch.no_grad():
            projection.weight.copy_(mha.in_proj_weight)
            if mha.in_proj_bias is not None:
                projection.bias.copy_(mha.in_proj_bias)
        self.in_proj = ConvertedLinear.from_module(projection, n_hyper)
        self.out_proj = ConvertedLinear.from_module(mha.out_proj, n_hyper)
        self.dropout = ConvertedDropout(mha.dropout, False, None)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if query.dim() != 3:
            raise ConvertError(
                f"converted attention {self.in_proj.path.rpartition('.')[0]!r} needs batched "
                f"inputs (3 dimensions), got shape {tuple(query.shape)}"
            )
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, steps, embed = query.shape
        sources = key.shape[1]
        if query is key and key is value:
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
        else:
            q = self.in_proj(query).chunk(3, dim=-1)[0]
            k = self.in_proj(key).chunk(3, dim=-1)[1]
            v = self.in_proj(value).chunk(3, dim=-1)[2]
        heads, size = self.num_heads, self.head_dim
        q = q.reshape(batch, steps, heads, size).transpose(1, 2)
        k = k.reshape(batch, sources, heads, size).transpose(1, 2)
        v = v.reshape(batch, sources, heads, size).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(size)  # (B, heads, T, S)
        scores = scores + self._bias(attn_mask, key_padding_mask, is_causal, batch, steps, sources, scores)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, steps, embed)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=1) if average_attn_weights else weights

    def _bias(
        self,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
        batch: int,
        steps: int,
        sources: int,
        like: Tensor,
    ) -> Tensor:
        """The additive mask, broadcastable to ``(B, heads, T, S)`` (``-inf`` where masked)."""
        bias = like.new_zeros(1, 1, steps, sources)
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(steps, sources, dtype=torch.bool, device=like.device).triu(1)
        if attn_mask is not None:
            mask = _additive(attn_mask, like)
            if mask.dim() == 3:  # (B·heads, T, S)
                mask = mask.reshape(batch, self.num_heads, steps, sources)
            bias = bias + mask
        if key_padding_mask is not None:
            bias = bias + _additive(key_padding_mask, like).reshape(batch, 1, 1, sources)
        return bias


def _additive(mask: Tensor, like: Tensor) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=like.dtype).masked_fill(mask, float("-inf"))
    return mask.to(like.dtype)


class ConvertedTransformerEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer``'s computation (post- or pre-norm) on converted parts:
    ``self_attn``, ``linear1``, ``dropout``, ``linear2``, ``dropout1``, ``dropout2``; the norms and
    the activation are the original's."""

    def __init__(self, layer: nn.TransformerEncoderLayer, n_hyper: int) -> None:
        super().__init__()
        self.batch_first = layer.self_attn.batch_first
        self.norm_first = layer.norm_first
        self.self_attn = convert_attention(layer.self_attn, n_hyper)
        self.self_attn.batch_first = True  # the layer hands it batch-first tensors
        self.linear1 = ConvertedLinear.from_module(layer.linear1, n_hyper)
        self.dropout = ConvertedDropout(layer.dropout.p, False, None)
        self.linear2 = ConvertedLinear.from_module(layer.linear2, n_hyper)
        self.norm1 = layer.norm1
        self.norm2 = layer.norm2
        self.dropout1 = ConvertedDropout(layer.dropout1.p, False, None)
        self.dropout2 = ConvertedDropout(layer.dropout2.p, False, None)
        self.activation: Callable[[Tensor], Tensor] | nn.Module = layer.activation

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = src if self.batch_first else src.transpose(0, 1)
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x if self.batch_first else x.transpose(0, 1)

    def _sa_block(self, x: Tensor, mask: Tensor | None, padding: Tensor | None, is_causal: bool) -> Tensor:
        out = self.self_attn(
            x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False, is_causal=is_causal
        )[0]
        return self.dropout1(out)  # type: ignore[no-any-return]

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))  # type: ignore[no-any-return]


def _check_attention(mha: nn.MultiheadAttention) -> None:
    from stnkit.convert.converters import UnsupportedLayerError

    if not mha.kdim == mha.vdim == mha.embed_dim:
        raise UnsupportedLayerError("kdim or vdim differ from embed_dim")
    if mha.bias_k is not None or mha.bias_v is not None:
        raise UnsupportedLayerError("add_bias_kv")
    if mha.add_zero_attn:
        raise UnsupportedLayerError("add_zero_attn")


def convert_attention(mha: nn.MultiheadAttention, n_hyper: int) -> ConvertedMultiheadAttention:
    _check_attention(mha)
    new = ConvertedMultiheadAttention(mha, n_hyper)
    new.train(mha.training)
    return new


def attention_origins(prefix: str = "") -> dict[str, tuple[str, str]]:
    """Where ``nn.MultiheadAttention``'s parameters live in its converted form."""
    return {
        f"{prefix}in_proj_weight": (f"{prefix}in_proj", "weight"),
        f"{prefix}in_proj_bias": (f"{prefix}in_proj", "bias"),
        f"{prefix}out_proj.weight": (f"{prefix}out_proj", "weight"),
        f"{prefix}out_proj.bias": (f"{prefix}out_proj", "bias"),
    }


def convert_encoder_layer(
    layer: nn.TransformerEncoderLayer, n_hyper: int
) -> tuple[nn.Module, dict[str, Any]]:
    new = ConvertedTransformerEncoderLayer(layer, n_hyper)
    origins: dict[str, tuple[str, str]] = attention_origins("self_attn.")
    for name, _ in layer.named_parameters():
        origins.setdefault(name, (name.rpartition(".")[0], name.rpartition(".")[2]))
    return new, origins
