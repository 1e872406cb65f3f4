"""What every augmentation here shares: the image-shape checks and per-example strengths."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from stnkit.augment import Augmentation
from stnkit.data import DataInfo
from stnkit.distributed import batch_rand
from stnkit.errors import UsageError
from stnkit.hyper.space import HyperBatch

__all__ = [
    "LUMA",
    "ImageAugmentation",
    "NormalizedSpaceAugmentation",
    "grey",
    "per_example",
    "uniform_factor",
]

#: ITU-R BT.601 luma weights of R, G, B
LUMA = (0.299, 0.587, 0.114)


class ImageAugmentation(Augmentation):
    """Base of the image augmentations: inputs ``(B, C, H, W)``, values in ``[0, 1]``.

    ``channels`` lists the channel counts an augmentation accepts (``None``: any); a data set whose
    inputs do not fit is a recipe mistake, so it is reported when the run is built, not mid-training.
    Subclasses implement :meth:`apply`.
    """

    channels: ClassVar[tuple[int, ...] | None] = None

    def __init__(self, config: Any, data: DataInfo) -> None:
        super().__init__(config, data)
        shape = tuple(data.input_shape)
        if len(shape) != 3:
            raise UsageError(
                f"augmentation {self.name!r} needs image inputs (C, H, W), "
                f"but the data set gives inputs of shape {shape}"
            )
        if self.channels is not None and shape[0] not in self.channels:
            allowed = " or ".join(str(c) for c in self.channels)
            raise UsageError(
                f"augmentation {self.name!r} needs images with {allowed} channels, "
                f"but the data set gives {shape[0]}"
            )

    def __call__(self, inputs: Tensor, hp: HyperBatch) -> Tensor:
        if inputs.dim() != 4:
            raise ValueError(
                f"augmentation {self.name!r} expects a batch (B, C, H, W), got shape {tuple(inputs.shape)}"
            )
        return self.apply(inputs, hp)

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        """Augment ``x`` ``(B, C, H, W)``; return a new tensor of the same shape and dtype."""
        raise NotImplementedError


class NormalizedSpaceAugmentation(ImageAugmentation):
    """Base of the augmentations the released STN code applies to the *normalised* image
    ``z = (x − m) / σ`` (input scaling, input dropout, cutout).

    stnkit normalises inside the model, so these work on the pixel scale in the equivalent form:
    an operation ``z ↦ a·z`` (``a`` a factor, a mask or 0 per value) is ``x ↦ m + a·(x − m)``,
    with ``m`` the training set's channel mean (``DataInfo.extras["mean"]``, 0 if the data set
    gives none — the same ``m`` the model subtracts). Results are not clamped: the normalised
    values they stand for are unbounded, so put colour jitter (which assumes ``[0, 1]``) first.
    """

    def __init__(self, config: Any, data: DataInfo) -> None:
        super().__init__(config, data)
        channels = int(data.input_shape[0])
        mean = data.extras.get("mean", [0.0] * channels)
        if len(mean) != channels:
            raise UsageError(
                f"augmentation {self.name!r}: the data set's channel mean has {len(mean)} entries "
                f"for {channels} channels"
            )
        self._mean = torch.tensor(mean, dtype=torch.float64).view(1, channels, 1, 1)
        self._means: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def mean_like(self, x: Tensor) -> Tensor:
        """The channel mean ``(1, C, 1, 1)`` on ``x``'s device and dtype (copied there once)."""
        key = (x.device, x.dtype)
        mean = self._means.get(key)
        if mean is None:
            mean = self._means[key] = self._mean.to(device=x.device, dtype=x.dtype)
        return mean


def per_example(hp: HyperBatch, name: str, x: Tensor) -> Tensor:
    """Hyperparameter ``name`` as ``(B, 1, 1, 1)`` on ``x``'s device and dtype, to broadcast over pixels."""
    return hp[name].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def uniform_factor(strength: Tensor) -> Tensor:
    """Offsets ``f − 1`` with ``f ~ U(1 − s, 1 + s)``, one draw per entry of ``strength``.

    Returning ``f − 1`` rather than ``f`` lets callers write ``x + delta · (f − 1)``, which is exactly
    ``x`` at strength 0 (``x · f`` or ``(x − m) · f + m`` would only be close).
    """
    drawn = batch_rand(strength.shape, device=strength.device, dtype=strength.dtype)
    return strength * (2.0 * drawn - 1.0)


def grey(x: Tensor) -> Tensor:
    """Grey level ``(B, 1, H, W)`` of ``x`` ``(B, C, H, W)``: BT.601 luma for RGB, else the channel mean."""
    if x.shape[1] == 3:
        r, g, b = x.unbind(dim=1)
        return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)
    return x.mean(dim=1, keepdim=True)
