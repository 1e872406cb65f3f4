"""An example stnkit plugin, written as a third party would: one kind, one augmentation, one model."""

from __future__ import annotations

from stnkit_example.augment import GaussianNoise
from stnkit_example.kinds import LogUniformKind
from stnkit_example.model import TwoLayer

__all__ = ["GaussianNoise", "LogUniformKind", "TwoLayer"]
