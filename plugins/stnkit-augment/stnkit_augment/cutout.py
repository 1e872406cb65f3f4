"""``cutout`` (DeVries & Taylor, 2017): blank square patches at random positions, per image.

As in the released STN code, cutout acts on the normalised image, so a hole is 0 there: on the
pixel scale it takes the training set's mean colour.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.distributed import batch_max, batch_randint
from stnkit.hyper.space import HyperBatch
from stnkit_augment._base import NormalizedSpaceAugmentation

__all__ = ["Cutout", "cutout_mask"]


def cutout_mask(holes: Tensor, length: Tensor, height: int, width: int) -> Tensor:
    """Which pixels cutout zeroes: ``(B, H, W)`` bool, from ``holes`` and ``length`` ``(B,)`` long.

    Image ``i`` gets ``holes[i]`` squares of side ``length[i]`` whose centres are uniform over its
    pixels; squares are clipped at the borders and may overlap. Rows ``c − L//2 … c − L//2 + L − 1``
    (likewise columns), so a square has exactly ``L`` pixels a side when it fits and always covers
    its centre when ``L ≥ 1``.
    """
    device = holes.device
    holes = holes.clamp(min=0)
    length = length.clamp(min=0)
    # a zero-length square covers nothing, so only images with length ≥ 1 need hole slots
    most = int(torch.where(length > 0, holes, torch.zeros_like(holes)).max()) if holes.numel() else 0
    # under torchrun the slots are the global batch's, so each image gets its one-process squares
    most = batch_max(most)
    if most == 0:
        return torch.zeros(holes.shape[0], height, width, dtype=torch.bool, device=device)
    batch = holes.shape[0]
    side = length.view(batch, 1, 1, 1)
    top = batch_randint(height, (batch, most, 1, 1), device=device) - side // 2
    left = batch_randint(width, (batch, most, 1, 1), device=device) - side // 2
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    # slots beyond an image's own hole count are switched off, so one (B, N, H, W) broadcast serves
    # every image whatever its count
    used = torch.arange(most, device=device).view(1, most, 1, 1) < holes.view(batch, 1, 1, 1)
    # rows and columns are tested on their own (B, N, H, 1) and (B, N, 1, W); only their
    # intersection is materialised at (B, N, H, W)
    in_rows = (rows >= top) & (rows < top + side) & used
    in_cols = (cols >= left) & (cols < left + side)
    return (in_rows & in_cols).any(dim=1)


class Cutout(NormalizedSpaceAugmentation):
    """Set ``cutout_holes`` squares of side ``cutout_length`` pixels to the mean colour (0 after
    normalisation) in every channel.

    Both hyperparameters are per example and floored (``hp.discrete``); either at 0 is the identity.
    """

    name = "cutout"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "cutout_holes": HyperparameterUse("number of cutout squares", default=0.0, low=0.0, integer=True),
        "cutout_length": HyperparameterUse(
            "side of each cutout square, in pixels", default=0.0, low=0.0, integer=True
        ),
    }

    def apply(self, x: Tensor, hp: HyperBatch) -> Tensor:
        holes = hp.discrete("cutout_holes").to(x.device)
        length = hp.discrete("cutout_length").to(x.device)
        mask = cutout_mask(holes, length, x.shape[2], x.shape[3])
        return torch.where(mask.unsqueeze(1), self.mean_like(x), x)
