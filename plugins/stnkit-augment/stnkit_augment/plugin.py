"""Hook implementations: what the ``augment`` entry point registers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stnkit import hookimpl
from stnkit_augment import AUGMENTATIONS


@hookimpl
def stnkit_register_augmentations(register: Callable[[type[Any]], object]) -> None:
    for augmentation in AUGMENTATIONS:
        register(augmentation)
