"""Base classes shared by every component: configs and hyperparameter declarations."""

from __future__ import annotations

import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

__all__ = ["Component", "ComponentConfig", "HyperparameterUse", "refuse_bool_number"]


def _number_only(annotation: Any) -> bool:
    """Whether a field's type takes numbers (int or float) but not booleans."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _number_only(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return any(_number_only(a) for a in args) and not any(a is bool or a is Any for a in args)
    return annotation in (int, float)


def refuse_bool_number(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A ``before`` field check: pydantic reads ``true`` as 1 for an int or float field, so
    ``epochs: true`` would train one epoch; a boolean is refused where a number is expected."""
    if isinstance(value, bool) and info.field_name is not None:
        field = model.model_fields.get(info.field_name)
        if field is not None and _number_only(field.annotation):
            raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


class ComponentConfig(BaseModel):
    """A component's recipe section. Unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_number(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_number(cls, value, info)


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

    @classmethod
    def hyperparameters_for(cls, config: Any, declared: Collection[str]) -> dict[str, HyperparameterUse]:
        """The hyperparameters this component consumes under ``config``, given the names the
        recipe declares: :attr:`hyperparameters` unless what it consumes depends on them."""
        return cls.hyperparameters
