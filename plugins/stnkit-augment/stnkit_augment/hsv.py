"""Batched RGB ↔ HSV conversion in torch, and hue rotation built on it.

Hue is measured in turns (``[0, 1)``, 1 = 360°) so a shift needs no unit conversion. The channel
dimension is ``-3``: images ``(B, 3, H, W)`` or single images ``(3, H, W)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["adjust_hue", "hsv_to_rgb", "rgb_to_hsv"]


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """``(..., 3, H, W)`` RGB in ``[0, 1]`` → HSV of the same shape: hue in turns, saturation, value.

    Grey pixels (no chroma) get hue 0 and black pixels saturation 0, as in :mod:`colorsys`.
    """
    r, g, b = rgb.unbind(dim=-3)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    has_chroma = chroma > 0
    # divide by 1 where the result is discarded anyway, so no inf/nan ever appears (or propagates
    # into gradients through torch.where)
    safe_chroma = torch.where(has_chroma, chroma, torch.ones_like(chroma))
    safe_value = torch.where(value > 0, value, torch.ones_like(value))
    saturation = torch.where(value > 0, chroma / safe_value, torch.zeros_like(value))
    # sector offset (in sixths of a turn) by which channel holds the maximum; ties resolve to the
    # first, as in colorsys, and all branches agree on the hue there anyway
    hue = torch.where(
        value == r,
        torch.remainder((g - b) / safe_chroma, 6.0),
        torch.where(value == g, (b - r) / safe_chroma + 2.0, (r - g) / safe_chroma + 4.0),
    )
    hue = torch.where(has_chroma, hue / 6.0, torch.zeros_like(hue))
    return torch.stack((hue, saturation, value), dim=-3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """``(..., 3, H, W)`` HSV (hue in turns, any real value) → RGB of the same shape.

    Uses the closed form ``c_n = v − v·s·clamp(min(k, 4 − k), 0, 1)`` with
    ``k = (n + 6·hue) mod 6`` and ``n = 5, 3, 1`` for R, G, B: all three channels in one broadcast
    instead of a six-way case split.
    """
    hue, saturation, value = (t.unsqueeze(-3) for t in hsv.unbind(dim=-3))
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(3, 1, 1)
    k = torch.remainder(n + 6.0 * hue, 6.0)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return value - value * saturation * ramp


def adjust_hue(rgb: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of images ``(B, 3, H, W)`` by ``shift`` ``(B,)`` turns, one shift per image.

    A whole number of turns is the identity up to the conversion round trip (~1e-6). Output in
    ``[0, 1]`` for input in ``[0, 1]``.
    """
    hsv = rgb_to_hsv(rgb)
    hue = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    rotated = torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1)
    return hsv_to_rgb(rotated).clamp(0.0, 1.0)
