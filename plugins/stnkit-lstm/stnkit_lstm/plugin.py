"""Hook implementations: what the ``lstm`` entry point registers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stnkit import hookimpl
from stnkit_lstm.data import PTBData
from stnkit_lstm.model import STNLSTM


@hookimpl
def stnkit_register_datasets(register: Callable[[type[Any]], object]) -> None:
    register(PTBData)


@hookimpl
def stnkit_register_models(register: Callable[[type[Any]], object]) -> None:
    register(STNLSTM)
