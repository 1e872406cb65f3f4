"""Batched RGB ↔ HSV conversion in torch, and hue rotation built on it.

Hue is measured in turns (``[0, 1)``, 1 = 360°) so a shift needs no unit conversion. The channel
dimension is ``-3``: images ``(B, 3, H, W)`` or single images ``(3, H, W)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["adjust_hue", "hsv_to_rgb", "rgb_to_hsv"]


def _sector_value_chroma(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in sixths of a turn (``[-1, 5]``, not yet wrapped), value and chroma (max − min channel).

    ``rgb`` is ``(..., 3, H, W)``; the three results are ``(..., H, W)``. Sixths are what both
    directions of the conversion work in, so no scaling by 6 is spent on the way through.
    """
    r, g, b = rgb.unbind(dim=-3)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    # the sector depends on which channel is the maximum; ties pick the first, as colorsys does,
    # and the candidates agree on the hue there anyway
    red_max, green_max = value == r, value == g
    numerator = torch.where(red_max, g - b, torch.where(green_max, b - r, r - g))
    # scalar-only where gives the default dtype; match the input's (a no-op for float32)
    offset = torch.where(red_max, 0.0, torch.where(green_max, 2.0, 4.0)).to(rgb.dtype)
    # grey pixels have numerator exactly 0, so any finite divisor gives hue 0; 1 avoids 0/0 (and
    # the nan gradients torch.where would still carry)
    sector = numerator / torch.where(chroma > 0, chroma, 1.0) + offset
    return sector, value, chroma


def _from_sector_value_chroma(sector: Tensor, value: Tensor, chroma: Tensor) -> Tensor:
    """RGB ``(..., 3, H, W)`` from hue in sixths of a turn (any real), value and chroma ``(..., H, W)``.

    The closed form ``c_n = v − chroma · clamp(min(k, 4 − k), 0, 1)`` with ``k = (n + sector) mod 6``
    and ``n = 5, 3, 1`` for R, G, B does all three channels in one broadcast instead of a six-way
    case split. Every channel lies in ``[v − chroma, v]``, so no clamping is needed.
    """
    n = torch.tensor([5.0, 3.0, 1.0], device=sector.device, dtype=sector.dtype).view(3, 1, 1)
    # full-size intermediates are updated in place where they are not needed again: on a
    # (B, 3, H, W) batch every fresh buffer costs as much as the arithmetic
    k = torch.add(n, sector.unsqueeze(-3)).remainder_(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(value.unsqueeze(-3), chroma.unsqueeze(-3), ramp, value=-1.0)


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """``(..., 3, H, W)`` RGB in ``[0, 1]`` → HSV of the same shape: hue in turns, saturation, value.

    Grey pixels (no chroma) get hue 0 and black pixels saturation 0, as in :mod:`colorsys`.
    """
    sector, value, chroma = _sector_value_chroma(rgb)
    # only the red sector goes negative (the magenta side of red)
    hue = torch.remainder(sector / 6.0, 1.0)
    saturation = chroma / torch.where(value > 0, value, 1.0)
    return torch.stack((hue, saturation, value), dim=-3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """``(..., 3, H, W)`` HSV (hue in turns, any real value) → RGB of the same shape."""
    hue, saturation, value = hsv.unbind(dim=-3)
    return _from_sector_value_chroma(6.0 * hue, value, value * saturation)


def adjust_hue(rgb: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of images ``(B, 3, H, W)`` by ``shift`` ``(B,)`` turns, one shift per image.

    Value and chroma pass straight through (saturation is never formed), so each pixel keeps its
    largest and smallest channel and a whole number of turns is the identity up to ~1e-6. Output in
    ``[0, 1]`` for input in ``[0, 1]``.
    """
    sector, value, chroma = _sector_value_chroma(rgb)
    return _from_sector_value_chroma(sector + 6.0 * shift.view(-1, 1, 1), value, chroma)
