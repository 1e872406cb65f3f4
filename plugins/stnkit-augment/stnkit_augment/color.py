"""Colour jitter: ``brightness``, ``contrast``, ``saturation`` and ``hue``, one random draw per image.

Every strength is per example: image ``i`` uses ``hp[name][i]``. Brightness, contrast and saturation
draw a factor ``f ~ U(1 − s, 1 + s)``; hue draws a shift ``~ U(−s, s)`` turns. Strength 0 returns
the input exactly.

Pixel values must lie in ``[0, 1]``: the results are clamped to that range (and HSV is defined on
it). Images already normalised (mean 0, std 1) would lose every negative value silently, so the
first batch each augmentation sees is checked, and values outside ``[0, 1]`` are a
:class:`~stnkit.errors.DataError` naming the range found. Normalise inside the model instead, as
the built-in image models do.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.errors import DataError
from stnkit.hyper.space import HyperBatch
from stnkit_augment._base import ImageAugmentation, grey, per_example, uniform_factor
from stnkit_augment.hsv import adjust_hue

__all__ = ["Brightness", "Contrast", "Hue", "Saturation"]


def _strength(description: str, high: float = 1.0) -> HyperparameterUse:
    return HyperparameterUse(description, default=0.0, low=0.0, high=high)


class _ColourJitter(ImageAugmentation):
    """A colour augmentation: pixel values in ``[0, 1]``, checked on the first batch."""

    _range_checked = False

    def __call__(self, inputs: Tensor, hp: HyperBatch) -> Tensor:
        if not self._range_checked and inputs.numel():
            # once: a data set's value range does not change from batch to batch, and a check
            # per batch would wait for the device every step
            low, high = float(inputs.min()), float(inputs.max())
            if low < 0.0 or high > 1.0:
                raise DataError(
                    f"augmentation {self.name!r} needs pixel values in [0, 1], but a batch holds "
                    f"values in [{low:.4g}, {high:.4g}]: it clamps to [0, 1] and would erase them; "
                    "give images in [0, 1] and normalise inside the model (and put colour "
                    "augmentations before input noise or scaling)"
                )
            self._range_checked = True
        return super().__call__(inputs, hp)


class Brightness(_ColourJitter):
    """``x · f`` clamped to ``[0, 1]``, ``f ~ U(1 − s, 1 + s)`` per image; any number of channels."""

    name = "brightness"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "brightness": _strength("brightness jitter: scale each image by U(1 - s, 1 + s)"),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        offset = uniform_factor(per_example(hp, "brightness", x))
        # x·(1 + (f − 1)): one pass over the pixels, exactly x at strength 0; clamped in place
        return torch.mul(x, 1.0 + offset).clamp_(0.0, 1.0)


class Contrast(_ColourJitter):
    """``(x − m) · f + m`` clamped, ``m`` the image's mean grey level ``(B, 1, 1, 1)``; any channels."""

    name = "contrast"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "contrast": _strength("contrast jitter: stretch about the mean grey level by U(1 - s, 1 + s)"),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        offset = uniform_factor(per_example(hp, "contrast", x))
        # the mean grey level is the grey level of the channel means: no grey image is formed
        mean = grey(x.mean(dim=(2, 3), keepdim=True))
        # lerp(m, x, f) = m + f·(x − m) in one pass, and exactly x at f = 1 (strength 0)
        return torch.lerp(mean, x, 1.0 + offset).clamp_(0.0, 1.0)


class Saturation(_ColourJitter):
    """``g + (x − g) · f`` clamped, ``g`` each pixel's BT.601 luma ``(B, 1, H, W)``.

    Greyscale images have no colour to scale: with one channel it is the identity.
    """

    name = "saturation"
    channels = (1, 3)

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "saturation": _strength("saturation jitter: scale each pixel's colour by U(1 - s, 1 + s)"),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        if x.shape[1] == 1:
            return x.clone()
        offset = uniform_factor(per_example(hp, "saturation", x))
        return torch.lerp(grey(x), x, 1.0 + offset).clamp_(0.0, 1.0)


class Hue(_ColourJitter):
    """Rotate each image's hue by ``U(−s, s)`` turns in HSV space; the identity for one channel.

    ``s`` is at most half a turn: beyond that the shifts only repeat.
    """

    name = "hue"
    channels = (1, 3)

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "hue": _strength("hue jitter: rotate the hue by U(-s, s) turns", high=0.5),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        if x.shape[1] == 1:
            return x.clone()
        shift = uniform_factor(per_example(hp, "hue", x)).view(-1)
        rotated = adjust_hue(x, shift)
        # the HSV round trip is only exact to ~1e-6, so unshifted images are passed through as
        # they are: strength 0 must mean "untouched", bit for bit
        return torch.where((shift == 0).view(-1, 1, 1, 1), x, rotated)
