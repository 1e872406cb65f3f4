"""The ``module`` model: a recipe names an importable torch class, stnkit converts it.

::

    model:
      name: module
      target: "mypkg.models:Net"      # importable "module.path:Attribute"
      args: {hidden: 64}              # keyword arguments of the constructor
      convert: {dropout: {attn_dropout: ["*.self_attn.dropout"]}}
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import Field, field_validator
from torch import nn

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.convert.convert import Conversion, ConvertedModel, convert_in_place
from stnkit.convert.spec import ConvertSpec
from stnkit.data import DataInfo
from stnkit.errors import ConvertError, RecipeError
from stnkit.imports import import_target

__all__ = ["ModuleModel"]


def _factory(target: str) -> Any:
    """The class or function ``target`` names; ``ValueError`` saying why not."""
    found = import_target(target)
    if not callable(found):
        raise ValueError(f"{target!r} is not a class or function")
    return found


class ModuleModel(ConvertedModel):
    """A user's ``nn.Module`` built from ``target(**args)`` and converted by ``convert`` (a
    :class:`~stnkit.convert.ConvertSpec`). The hyperparameters it consumes follow from the
    spec and the declared names by the conversion's name rules."""

    name = "module"

    class Config(ComponentConfig):
        target: str = Field(description="importable 'package.module:Class' building an nn.Module")
        args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of target")
        convert: ConvertSpec = Field(default_factory=ConvertSpec, description="what to convert and how")
        hyperparameters: list[str] | None = Field(
            default=None, description="declared hyperparameters conversion uses (default: all)"
        )

        @field_validator("target")
        @classmethod
        def _importable(cls, value: str) -> str:
            _factory(value)
            return value

    config: Config

    def __init__(self, config: Config, data: DataInfo, n_hyper: int) -> None:
        module = _instantiate(config)
        conversion = _convert(module, config, n_hyper, config.hyperparameters or [])
        super().__init__(module, conversion)
        self.config = config
        self.data = data

    @classmethod
    def hyperparameters_for(cls, config: Any, declared: Collection[str]) -> dict[str, HyperparameterUse]:
        names = list(declared) if config.hyperparameters is None else config.hyperparameters
        return _convert(_instantiate(config), config, 1, names).uses

    @classmethod
    def bind_config(cls, config: Any, declared: Collection[str]) -> Any:
        if config.hyperparameters is not None:
            return config
        return config.model_copy(update={"hyperparameters": list(declared)})


def _instantiate(config: ModuleModel.Config) -> nn.Module:
    factory = _factory(config.target)
    try:
        module = factory(**config.args)
    except Exception as error:  # the user's constructor: its message, at its recipe location
        raise RecipeError.single(
            "model.args", f"{config.target}(**args) failed: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(module, nn.Module):
        raise RecipeError.single(
            "model.target", f"{config.target} returned a {type(module).__name__}, not a torch nn.Module"
        )
    return module


def _convert(
    module: nn.Module, config: ModuleModel.Config, n_hyper: int, names: Collection[str]
) -> Conversion:
    try:
        return convert_in_place(module, config.convert, n_hyper, names, strict=False)
    except ConvertError as error:
        location = error.location or ""
        if not location.startswith("hyperparameters."):
            location = f"model.convert.{location}" if location else "model.target"
        raise RecipeError.single(location, str(error)) from None
