"""``gaussian-noise``: add ``σ · ε`` to each input, with σ a (per-example) hyperparameter."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor

from stnkit.augment import Augmentation
from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.hyper.space import HyperBatch

__all__ = ["GaussianNoise"]


class GaussianNoise(Augmentation):
    """Input noise: ``x + σ · ε``, ``ε ~ N(0, 1)``, each example with its own σ (``input_noise``)."""

    name = "gaussian-noise"

    class Config(ComponentConfig):
        clip: tuple[float, float] | None = Field(
            None, description="clamp the noisy inputs to [low, high] (images: [0, 1]); none: no clamp"
        )

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "input_noise": HyperparameterUse("standard deviation of the added noise", default=0.0, low=0.0),
    }

    config: Config

    def __call__(self, inputs: Tensor, hp: HyperBatch) -> Tensor:
        """``inputs`` ``(B, ...)`` → the same shape; ``hp["input_noise"]`` is ``(B,)``."""
        sigma = hp["input_noise"].to(inputs.dtype)
        sigma = sigma.reshape(-1, *([1] * (inputs.dim() - 1)))  # (B, 1, ..., 1): one σ per example
        noisy = inputs + sigma * torch.randn_like(inputs)
        if self.config.clip is not None:
            noisy = noisy.clamp(*self.config.clip)
        return noisy
