"""Response models: ``stn`` (the paper's), ``delta-stn`` (Bae & Grosse) and ``fixed`` (plain
training, schedule replay); and the ``module`` model, any torch module in best-response form,
with the ``loaders`` data set, a user's own DataLoaders: what :class:`stnkit.Tuner` runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
def stnkit_register_models(register: Callable[[type[Any]], object]) -> None:
    # the core's one model: a user's own torch class, converted by its recipe section
    from stnkit.convert.component import ModuleModel

    register(ModuleModel)


@hookimpl
def stnkit_register_datasets(register: Callable[[type[Any]], object]) -> None:
    # the core's one data set: a user's own DataLoaders, named by its recipe section
    from stnkit.loaders import LoaderData

    register(LoaderData)


@hookimpl
def stnkit_register_response_models(register: Callable[[type[ResponseModel]], object]) -> None:
    register(STNResponse)
    register(DeltaSTNResponse)
    register(FixedResponse)
