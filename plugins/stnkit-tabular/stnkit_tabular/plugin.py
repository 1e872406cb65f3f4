"""Hook implementations: what the ``tabular`` entry point registers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stnkit import hookimpl
from stnkit_tabular.data import TabularData
from stnkit_tabular.model import STNMLP


@hookimpl
def stnkit_register_datasets(register: Callable[[type[Any]], object]) -> None:
    register(TabularData)


@hookimpl
def stnkit_register_models(register: Callable[[type[Any]], object]) -> None:
    register(STNMLP)
