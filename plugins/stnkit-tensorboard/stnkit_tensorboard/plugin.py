"""Entry point of the stnkit-tensorboard plugin (``[project.entry-points.stnkit]``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stnkit import hookimpl
from stnkit_tensorboard.observer import TensorBoardObserver


@hookimpl
def stnkit_register_observers(register: Callable[[type[Any]], object]) -> None:
    register(TensorBoardObserver)
