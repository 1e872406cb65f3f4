"""Mixed precision (``train.precision``): autocast forward passes, a gradient scaler for fp16.

Only the network's forward pass runs under autocast. Everything on the hypergradient path that
is not the network stays in fp32: ``h``, ``s`` and their optimizer, the perturbation draw, the
kinds' constrain maps, the entropy term, and the losses — predictions are cast to fp32 before
any loss sees them, so a validation loss and its gradient in ``h`` are not rounded to 8 bits.
fp16 gradients can underflow, so fp16 scales the weight loss and the hyper loss, each with its
own :class:`torch.amp.GradScaler` (the two losses differ by orders of magnitude); bf16 has fp32's
range and needs none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["Precision"]

Mode = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The run's precision on ``device``. ``fp32`` (the default) is a no-op everywhere."""

    def __init__(self, mode: Mode = "fp32", device: torch.device | None = None) -> None:
        self.mode: Mode = mode
        self.device = device or torch.device("cpu")
        self.dtype = _DTYPES.get(mode)
        scaled = mode == "fp16"
        self.scalers: dict[str, torch.amp.GradScaler | None] = {
            which: torch.amp.GradScaler(self.device.type) if scaled else None for which in ("weight", "hyper")
        }

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Run the enclosed forward pass in the run's dtype (nothing changes for fp32)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def scale(self, loss: Tensor, which: str = "weight") -> Tensor:
        """``loss`` times the fp16 loss scale of ``which`` (``weight`` or ``hyper``); else ``loss``."""
        scaler = self.scalers[which]
        return loss if scaler is None else scaler.scale(loss)

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        params: Sequence[Tensor],
        clip: float | None,
        which: str = "weight",
    ) -> None:
        """Unscale (fp16), clip the gradient norm of ``params`` to ``clip``, step. An fp16 step whose
        gradients overflowed is skipped and the scale lowered, as GradScaler does."""
        scaler = self.scalers[which]
        if scaler is not None:
            scaler.unscale_(optimizer)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        if scaler is None:
            optimizer.step()
            return
        scaler.step(optimizer)
        scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The scalers' states (empty for fp32 and bf16), for checkpoints."""
        return {which: s.state_dict() for which, s in self.scalers.items() if s is not None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for which, scaler in self.scalers.items():
            if scaler is not None and which in state:
                scaler.load_state_dict(state[which])
