"""Response models: ``stn`` (the paper's), ``delta-stn`` (Bae & Grosse) and ``fixed`` (plain
training, schedule replay)."""

from __future__ import annotations

from collections.abc import Callable

from stnkit.markers import hookimpl
from stnkit.response.base import ResponseModel, TrainingParts, hyper_update, train_on
from stnkit.response.delta_stn import DeltaSTNResponse
from stnkit.response.fixed import FixedResponse
from stnkit.response.stn import STNResponse

__all__ = [
    "DeltaSTNResponse",
    "FixedResponse",
    "ResponseModel",
    "STNResponse",
    "TrainingParts",
    "hyper_update",
    "train_on",
]


@hookimpl
def stnkit_register_response_models(register: Callable[[type[ResponseModel]], object]) -> None:
    register(STNResponse)
    register(DeltaSTNResponse)
    register(FixedResponse)
