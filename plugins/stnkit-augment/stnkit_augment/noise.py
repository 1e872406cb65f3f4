"""Pixel noise: ``input-scaling`` (multiplicative Gaussian) and ``input-dropout`` (zeroed pixels)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.hyper.space import HyperBatch
from stnkit_augment._base import ImageAugmentation, per_example

__all__ = ["InputDropout", "InputScaling"]


class InputScaling(ImageAugmentation):
    """``x · (1 + s · ε)`` clamped to ``[0, 1]``, a fresh ``ε ~ N(0, 1)`` for every value.

    The noise is independent per channel as well as per pixel (Gaussian-dropout-style scaling of
    each input value), so it perturbs colour as well as intensity.
    """

    name = "input-scaling"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "input_scaling": HyperparameterUse(
            "multiplicative Gaussian noise on the inputs: standard deviation of the scale",
            default=0.0,
            low=0.0,
            high=1.0,
        ),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        scale = per_example(hp, "input_scaling", x)
        # x + x·(s·ε) in one fused op: exactly x where s = 0
        return torch.addcmul(x, x, scale * torch.randn_like(x)).clamp(0.0, 1.0)


class InputDropout(ImageAugmentation):
    """Zero each pixel — all its channels together — with probability ``p``; no rescaling.

    Inverted dropout's ``1 / (1 − p)`` keeps the expected activation, but here it would push pixel
    values past 1 (leaving the ``[0, 1]`` range later augmentations and the model's input scaling
    assume) and brighten every surviving pixel. Test images are never dropped, so keeping the
    survivors as they are keeps them looking like test images.
    """

    name = "input-dropout"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "input_dropout": HyperparameterUse(
            "probability of zeroing each input pixel (all channels)", default=0.0, low=0.0, high=1.0
        ),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        rate = per_example(hp, "input_dropout", x)
        batch, _, height, width = x.shape
        # rand is in [0, 1), so p = 0 drops nothing
        dropped = torch.rand(batch, 1, height, width, device=x.device, dtype=x.dtype) < rate
        return x.masked_fill(dropped, 0.0)
