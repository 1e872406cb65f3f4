"""``stn-mlp``: a multilayer perceptron of best-response linear layers."""

from __future__ import annotations

import itertools
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.model import ModelOutput, StnModel
from stnkit.nn import BRLinear, dropout

__all__ = ["STNMLP"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}


class STNMLP(StnModel):
    """Inputs ``(B, ...)`` are flattened; hidden layers are ``activation(BRLinear)`` followed by
    dropout; the last layer is linear. With no hidden layers it is a linear model.

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
        super().__init__(config, data, n_hyper)
        if any(size < 1 for size in config.hidden_sizes):
            raise ValueError("hidden sizes must be positive")
        features = 1
        for dim in data.input_shape:
            features *= dim
        sizes = [features, *config.hidden_sizes, data.output_size]
        self.layers = nn.ModuleList(BRLinear(i, o, n_hyper) for i, o in itertools.pairwise(sizes))
        self.activation = _ACTIVATIONS[config.activation]()

    def forward(self, inputs: Tensor, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        # a batch built by hand (not by a run, which fills in every default) may lack the rate
        rate = hp.values.get("input_dropout", 0.0)
        h = dropout(inputs.reshape(inputs.shape[0], -1), rate, self.training)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            h = layer(h, hp.hnet)
            if index < last:
                h = dropout(self.activation(h), hp["dropout"], self.training)
        if self.data.output_size == 1 and not hasattr(self.data.task, "num_classes"):
            h = h.squeeze(-1)
        penalty = None
        if self.training:
            norms = torch.stack([_linear(layer).weight_sq_norm(hp.hnet) for layer in self.layers]).sum(dim=0)
            penalty = (hp["weight_decay"] * norms).mean()
        return ModelOutput(h, penalty)


def _linear(module: nn.Module) -> BRLinear:
    assert isinstance(module, BRLinear)
    return module
