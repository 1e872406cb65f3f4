"""Input noise as the released STN code applies it to the normalised image: ``input-scaling``
(one random factor per image) and ``input-dropout`` (elementwise, rescaled).

Both work on the pixel scale in the form that equals the released operation on ``z = (x − m)/σ``
(see :class:`~stnkit_augment._base.NormalizedSpaceAugmentation`); neither clamps.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.distributed import batch_rand
from stnkit.hyper.space import HyperBatch
from stnkit_augment._base import NormalizedSpaceAugmentation, per_example

__all__ = ["InputDropout", "InputScaling"]


class InputScaling(NormalizedSpaceAugmentation):
    """Scale each normalised image by one factor ``f ~ U(1/(1+s), 1+s)``: ``x ↦ m + f·(x − m)``.

    ``s ≥ 0``; the released experiment searches ``s ∈ (0, 0.3)``. The range is symmetric in
    log-scale about 1 (``1/(1+s)`` to ``1+s``), so shrinking and stretching are equally likely.
    """

    name = "input-scaling"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "input_scaling": HyperparameterUse(
            "scale each normalised image by one factor drawn from U(1/(1+s), 1+s)", default=0.0, low=0.0
        ),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        s = per_example(hp, "input_scaling", x)
        low = 1.0 / (1.0 + s)
        # f − 1, so that x + (x − m)·(f − 1) is exactly x at s = 0
        offset = (low - 1.0) + (1.0 + s - low) * batch_rand(s.shape, device=s.device, dtype=s.dtype)
        # lerp(m, x, f) = m + f·(x − m) in one pass, and exactly x at f = 1 (s = 0)
        return torch.lerp(self.mean_like(x), x, 1.0 + offset)


class InputDropout(NormalizedSpaceAugmentation):
    """Inverted dropout of every value of the normalised image — each channel of each pixel on
    its own — with rate ``p``: ``x ↦ m + (x − m)·k/(1 − p)``, ``k ~ Bernoulli(1 − p)``.

    A dropped value becomes the channel mean (0 after normalisation); the survivors are
    stretched away from it by ``1/(1 − p)``, so the normalised image keeps its expectation.
    """

    name = "input-dropout"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "input_dropout": HyperparameterUse(
            "probability of dropping each value of the normalised image (rescaled by 1/(1-p))",
            default=0.0,
            low=0.0,
            high=1.0,
        ),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        keep = 1.0 - per_example(hp, "input_dropout", x)
        # m + (x − m)·gain with gain = k/(1 − p): a dropped value goes to m, a kept one is stretched
        # away from it. rand is in [0, 1), so p = 0 keeps everything, and lerp is exactly x at gain
        # 1; the clamp only keeps p = 1 (nothing kept) from dividing by zero. The draw's buffer
        # becomes the gain in place: no second full-size tensor.
        gain = 1.0 / keep.clamp(min=torch.finfo(x.dtype).tiny)
        drawn = batch_rand(x.shape, device=x.device, dtype=x.dtype)
        gain = drawn.lt_(keep).mul_(gain)
        return torch.lerp(self.mean_like(x), x, gain)
