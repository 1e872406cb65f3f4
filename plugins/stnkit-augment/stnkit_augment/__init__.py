"""stnkit plugin: batched image augmentations, each strength a per-example hyperparameter.

Registered names: ``brightness``, ``contrast``, ``saturation``, ``hue``, ``input-scaling``,
``input-dropout`` and ``cutout``.
"""

from __future__ import annotations

from stnkit_augment._base import ImageAugmentation, NormalizedSpaceAugmentation
from stnkit_augment.color import Brightness, Contrast, Hue, Saturation
from stnkit_augment.cutout import Cutout, cutout_mask
from stnkit_augment.hsv import adjust_hue, hsv_to_rgb, rgb_to_hsv
from stnkit_augment.noise import InputDropout, InputScaling

__all__ = [
    "AUGMENTATIONS",
    "Brightness",
    "Contrast",
    "Cutout",
    "Hue",
    "ImageAugmentation",
    "InputDropout",
    "InputScaling",
    "NormalizedSpaceAugmentation",
    "Saturation",
    "adjust_hue",
    "cutout_mask",
    "hsv_to_rgb",
    "rgb_to_hsv",
]

#: every augmentation the plugin registers
AUGMENTATIONS: tuple[type[ImageAugmentation], ...] = (
    Brightness,
    Contrast,
    Saturation,
    Hue,
    InputScaling,
    InputDropout,
    Cutout,
)
