"""``stn-mlp``: the plain torch :class:`~stnkit_tabular.mlp.MLP`, converted to best-response form."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.convert import ConvertedModel, ConvertSpec, convert_in_place
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.model import ModelOutput
from stnkit.nn import BRLinear
from stnkit.nn.base import init_hyper_weight
from stnkit_tabular.mlp import MLP

__all__ = ["STNMLP"]


class STNMLP(ConvertedModel):
    """Inputs ``(B, ...)`` are flattened; hidden layers are ``activation(Linear)`` followed by
    dropout; the last layer is linear. With no hidden layers it is a linear model. Built as a
    plain :class:`~stnkit_tabular.mlp.MLP` and converted by :func:`stnkit.convert.convert_in_place`
    with the default rules.

    Hyperparameters: ``weight_decay`` adds ``weight_decay × Σ‖effective W‖²`` (biases excluded)
    to the training loss; ``dropout`` is the dropout rate on hidden units; ``input_dropout`` the
    (inverted) dropout rate on the flattened inputs, the only dropout a linear model has.
    """

    name = "stn-mlp"

    class Config(ComponentConfig):
        hidden_sizes: list[int] = Field(default_factory=list, description="empty: a linear model")
        activation: Literal["relu", "tanh", "sigmoid", "gelu", "elu"] = "relu"

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "weight_decay": HyperparameterUse(
            "L2 penalty on the effective weight matrices", default=0.0, low=0.0
        ),
        "dropout": HyperparameterUse(
            "dropout rate on hidden units", default=0.0, low=0.0, high=1.0, continuous=True
        ),
        "input_dropout": HyperparameterUse(
            "dropout rate on the input features", default=0.0, low=0.0, high=1.0, continuous=True
        ),
    }

    config: Config

    def __init__(self, config: Config, data: DataInfo, n_hyper: int) -> None:
        if any(size < 1 for size in config.hidden_sizes):
            raise ValueError("hidden sizes must be positive")
        features = math.prod(data.input_shape)
        start = torch.get_rng_state()
        module = MLP(features, config.hidden_sizes, data.output_size, config.activation)
        # every hyperparameter, declared or not: an undeclared one is a constant (0) all the same
        names = list(self.hyperparameters)
        conversion = convert_in_place(module, ConvertSpec(), n_hyper, names, strict=False)
        super().__init__(module, conversion)
        self.config = config
        self.data = data
        # The weights are drawn again from the same random state in BRLinear's order (per
        # layer: V, then each stack's weight and bias), the same distributions as nn.Linear's:
        # a seeded stn-mlp run keeps the numbers its documented measurements were made with.
        torch.set_rng_state(start)
        for layer in self.layers:
            assert isinstance(layer, BRLinear)
            if layer.hyper_weight is not None:
                init_hyper_weight(layer.hyper_weight)
            layer.reset_parameters()

    @property
    def layers(self) -> nn.ModuleList:
        """The converted linear layers, first to last."""
        layers = self.module.layers
        assert isinstance(layers, nn.ModuleList)
        return layers

    def forward(self, inputs: Any, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        output = super().forward(inputs, hp, stream)
        if self.data.output_size == 1 and not hasattr(self.data.task, "num_classes"):
            output.prediction = output.prediction.squeeze(-1)
        return output
