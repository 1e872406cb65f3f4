"""Base classes shared by every component: configs and hyperparameter declarations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = ["Component", "ComponentConfig", "HyperparameterUse"]


class ComponentConfig(BaseModel):
    """A component's recipe section. Unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class HyperparameterUse:
    """How a component consumes one hyperparameter.

    ``default``: the value used when the recipe does not declare the hyperparameter (it is then a
    constant, neither tuned nor seen by the hypernetwork); ``None`` makes a declaration mandatory.
    ``low``/``high``: the values the component can accept; a declared hyperparameter whose kind
    can give values outside this range (the values the component receives, after a discrete kind's
    ``discretize``) is rejected when the recipe is validated.
    ``integer``: the component needs whole numbers (it reads ``hp.discrete(name)``), so the
    declaration must be of an integer kind.
    ``continuous``: the component needs a continuous value (a dropout rate, a scale), so the
    declaration must not be of a discrete kind.
    ``per_batch``: the component uses one value for the whole batch (DropConnect, embedding
    dropout, penalty weights), so the declaration must say ``per_example: false``.
    """

    description: str
    default: float | None = None
    low: float = float("-inf")
    high: float = float("inf")
    integer: bool = False
    per_batch: bool = False
    continuous: bool = False

    def __post_init__(self) -> None:
        if self.integer and self.continuous:
            raise ValueError(f"{self.description!r}: a hyperparameter cannot be both integer and continuous")


class Component:
    """Mixin for anything a recipe names: a registry key and a validated config section."""

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {}
