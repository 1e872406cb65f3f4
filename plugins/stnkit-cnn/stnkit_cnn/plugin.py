"""Hook implementations: what the ``cnn`` entry point registers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stnkit import hookimpl
from stnkit_cnn.data import CIFAR10Data, FashionMNISTData
from stnkit_cnn.model import STNAlexNet, STNSmallCNN


@hookimpl
def stnkit_register_datasets(register: Callable[[type[Any]], object]) -> None:
    register(CIFAR10Data)
    register(FashionMNISTData)


@hookimpl
def stnkit_register_models(register: Callable[[type[Any]], object]) -> None:
    register(STNAlexNet)
    register(STNSmallCNN)
