"""Torch optimizers from their settings."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from stnkit.settings import OptimizerSettings

__all__ = ["lr_factor", "make_optimizer", "schedule_lr"]


def make_optimizer(config: OptimizerSettings, params: Iterable[Tensor]) -> torch.optim.Optimizer:
    """Build a torch optimizer from its settings (clipping is applied by the step rule).

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


def lr_factor(schedule: str, done: int, total: int) -> float:
    """The multiple of the base learning rate a ``schedule`` gives the step after ``done`` of
    ``total`` planned steps (``constant``: 1; ``cosine`` / ``linear``: from 1 at the first step
    towards 0 at the last, never below 0 if a run takes more steps than planned)."""
    if schedule == "constant" or total <= 0:
        return 1.0
    progress = min(done / total, 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise AssertionError(f"unhandled schedule {schedule}")


def schedule_lr(optimizer: torch.optim.Optimizer, base: float, schedule: str, done: int, total: int) -> None:
    """Set ``optimizer``'s lr to what ``schedule`` gives after ``done`` of ``total`` steps, from the
    step count alone so that a resumed run continues it exactly; ``constant`` leaves it alone
    (other rules, such as ``lr_decay``, may own it then)."""
    if schedule == "constant":
        return
    lr = base * lr_factor(schedule, done, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
