"""Response models: ``stn`` (the paper's) and ``fixed`` (plain training, schedule replay)."""

from __future__ import annotations

from collections.abc import Callable

from stnkit.hookspecs import hookimpl
from stnkit.response.base import ResponseModel, TrainingParts, train_on
from stnkit.response.fixed import FixedResponse
from stnkit.response.stn import STNResponse

__all__ = ["FixedResponse", "ResponseModel", "STNResponse", "TrainingParts", "train_on"]


@hookimpl
def stnkit_register_response_models(register: Callable[[type[ResponseModel]], object]) -> None:
    register(STNResponse)
    register(FixedResponse)
