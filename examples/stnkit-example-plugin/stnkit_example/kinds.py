"""``log-uniform``: a value in ``[low, high]`` (``low > 0``) moved on a log scale.

Learning rates, weight decays and noise levels span orders of magnitude; tuning ``log x`` makes a
step from 1e-5 to 1e-4 as easy as one from 0.1 to 1. The map is
``x = exp(log low + (log high − log low) · sigmoid(u))``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import Tensor

from stnkit.hyper import HyperConfig, HyperKind

__all__ = ["LogUniformKind"]


def _inside(value: Tensor, low: float, high: float) -> Tensor:
    """``value`` clamped to ``[low, high]`` exactly in its own dtype.

    float32 cannot hold most bounds (1e-5 becomes 9.9999997e-06): clamping to the rounded bound
    could still land just outside, so round each bound inwards first.
    """
    lo = torch.tensor(low, dtype=value.dtype, device=value.device)
    hi = torch.tensor(high, dtype=value.dtype, device=value.device)
    if float(lo) < low:
        lo = torch.nextafter(lo, hi)
    if float(hi) > high:
        hi = torch.nextafter(hi, lo)
    return value.clamp(lo, hi)


class LogUniformKind(HyperKind):
    """Values in ``[low, high]``, ``low > 0``, uniform in ``log x`` along the unconstrained axis."""

    name = "log-uniform"

    class Config(HyperConfig):
        low: float = Field(gt=0, description="smallest value (above 0)")
        high: float = Field(description="largest value")

        @model_validator(mode="after")
        def _check(self) -> LogUniformKind.Config:
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if not self.low < self.init < self.high:
                raise ValueError(
                    f"init ({self.init}) must lie strictly between low ({self.low}) and high ({self.high})"
                )
            return self

    config: Config

    @property
    def low(self) -> float:
        return self.config.low

    @property
    def high(self) -> float:
        return self.config.high

    def _logs(self) -> tuple[float, float]:
        return math.log(self.config.low), math.log(self.config.high)

    def constrain(self, u: Tensor) -> Tensor:
        lo, hi = self._logs()
        return _inside(torch.exp(lo + (hi - lo) * torch.sigmoid(u)), self.low, self.high)

    def unconstrain(self, value: Tensor) -> Tensor:
        lo, hi = self._logs()
        p = (torch.log(value) - lo) / (hi - lo)
        return torch.log(p) - torch.log1p(-p)

    def describe(self) -> str:
        return f"{self.name} [{self.low:g}, {self.high:g}]"
