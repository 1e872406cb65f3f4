"""Dropout variants whose rates are hyperparameters, possibly a different rate per example.

Rates arrive as a float or a ``(B,)`` tensor of constrained values. Masks are drawn from torch's
global generator, so a seeded run is reproducible; masks with a row per example are drawn for the
global batch under torchrun (:func:`stnkit.distributed.batch_rand`), so each example gets the mask
it gets in one process. All helpers are the identity in eval mode or
at rate 0, and scale kept units by ``1/(1-p)`` so expectations match eval mode.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stnkit.distributed import batch_rand

__all__ = ["channel_dropout", "dropconnect", "dropout", "embedding_dropout", "locked_dropout"]


def _rate_view(p: Tensor | float, x: Tensor, keep_dims: int) -> Tensor | float:
    """Reshape a per-example rate ``(B,)`` so it broadcasts over the first ``keep_dims`` of ``x``."""
    if isinstance(p, Tensor):
        p = p.detach().to(x.dtype)
        return p.reshape(p.shape[0], *([1] * (x.dim() - 1)))
    return p


def _is_zero(p: Tensor | float) -> bool:
    if isinstance(p, Tensor):
        return not bool((p > 0).any())
    return p <= 0.0


def dropout(x: Tensor, p: Tensor | float, training: bool) -> Tensor:
    """Standard (inverted) dropout of ``x`` ``(B, ...)`` with rate ``p`` (float or ``(B,)``)."""
    if not training or _is_zero(p):
        return x
    rate = _rate_view(p, x, 1)
    keep = 1.0 - rate
    mask = (batch_rand(x.shape, device=x.device, dtype=x.dtype) < keep).to(x.dtype) / keep
    return x * mask


def channel_dropout(x: Tensor, p: Tensor | float, training: bool) -> Tensor:
    """Channel-wise (spatial) dropout of feature maps ``x`` ``(B, C, ...)``, rate ``p`` (float or ``(B,)``).

    One draw per example and channel, shared by every position, so a dropped channel is a whole
    map of zeros (``F.dropout2d`` with a rate per example). Placed after pooling, kept maps scaled
    by ``1/(1-p)`` have exactly the eval-mode mean; elementwise dropout before a max-pool would
    not, since the pool keeps the largest of the inflated survivors.
    """
    if not training or _is_zero(p):
        return x
    rate = _rate_view(p, x, 1)
    keep = 1.0 - rate
    shape = (*x.shape[:2], *([1] * (x.dim() - 2)))
    mask = (batch_rand(shape, device=x.device, dtype=x.dtype) < keep).to(x.dtype) / keep
    return x * mask


def locked_dropout(x: Tensor, p: Tensor | float, training: bool) -> Tensor:
    """Variational dropout of a sequence ``x`` ``(B, T, D)``: one mask per example for all steps."""
    if not training or _is_zero(p):
        return x
    rate = _rate_view(p, x, 1)
    keep = 1.0 - rate
    mask = (batch_rand((x.shape[0], 1, x.shape[2]), device=x.device) < keep).to(x.dtype) / keep
    return x * mask


def embedding_dropout(weight: Tensor, p: float, training: bool) -> Tensor:
    """Drop whole words — rows along dimension 0 of a ``(V, ...)`` table — with one rate per batch."""
    if not training or p <= 0.0:
        return weight
    keep = 1.0 - p
    shape = (weight.shape[0],) + (1,) * (weight.dim() - 1)
    mask = (torch.rand(shape, device=weight.device) < keep).to(weight.dtype) / keep
    return weight * mask


def dropconnect(weight: Tensor, p: float, training: bool, shared_dims: int = 0) -> Tensor:
    """DropConnect: drop entries of a weight matrix with one rate for the batch.

    The mask has the shape of ``weight.shape[shared_dims:]`` and is shared along the leading
    ``shared_dims`` dimensions, so a stacked ``(2, out, in)`` best-response weight drops the same
    entries of its elementary and response halves.
    """
    if not training or p <= 0.0:
        return weight
    keep = 1.0 - p
    mask = (torch.rand(weight.shape[shared_dims:], device=weight.device) < keep).to(weight.dtype)
    return weight * (mask / keep)
