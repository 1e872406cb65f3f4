"""Torch optimizers from their recipe sections."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from stnkit.recipe import OptimizerConfig

__all__ = ["make_optimizer"]


def make_optimizer(config: OptimizerConfig, params: Iterable[Tensor]) -> torch.optim.Optimizer:
    """Build a torch optimizer from its recipe section (clipping is applied by the step rule).

    ``params`` may be parameters or views of them (see :mod:`stnkit.nn.split`)."""
    params = list(params)
    if config.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.name == "adam":
        return torch.optim.Adam(
            params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
    if config.name == "adamw":
        return torch.optim.AdamW(
            params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
    if config.name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=config.lr, momentum=config.momentum, eps=config.eps, weight_decay=config.weight_decay
        )
    raise AssertionError(f"unhandled optimizer {config.name}")
