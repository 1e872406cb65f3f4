"""``stn-two-layer``: one hidden layer of best-response units with tuned dropout and weight decay."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.model import ModelOutput, StnModel
from stnkit.nn import BRLinear, dropout

__all__ = ["TwoLayer"]


class TwoLayer(StnModel):
    """Inputs ``(B, F)`` → hidden ``(B, width)`` → outputs ``(B, output_size)``."""

    name = "stn-two-layer"

    class Config(ComponentConfig):
        width: int = Field(64, ge=1, description="hidden units")
        activation: Literal["relu", "tanh"] = Field("relu", description="hidden nonlinearity")

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "dropout": HyperparameterUse("dropout rate of the hidden units", default=0.0, low=0.0, high=1.0),
        # the penalty's weight is one number per batch: it scales a sum over weights, not examples
        "weight_decay": HyperparameterUse(
            "L2 penalty on both layers' weights", default=0.0, low=0.0, per_batch=True
        ),
    }

    config: Config

    def __init__(self, config: Config, data: DataInfo, n_hyper: int) -> None:
        super().__init__(config, data, n_hyper)
        features = math.prod(data.input_shape)
        self.hidden = BRLinear(features, config.width, n_hyper)
        self.out = BRLinear(config.width, data.output_size, n_hyper)

    def forward(self, inputs: Tensor, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        x = inputs.reshape(inputs.shape[0], -1)
        h = self.hidden(x, hp.hnet)
        h = torch.relu(h) if self.config.activation == "relu" else torch.tanh(h)
        h = dropout(h, hp["dropout"], self.training)
        prediction = self.out(h, hp.hnet)
        if self.data.output_size == 1:
            prediction = prediction.squeeze(-1)  # regression: (B,) like the targets
        penalty = None
        if self.training:
            norms = self.hidden.weight_sq_norm(hp.hnet) + self.out.weight_sq_norm(hp.hnet)
            penalty = (hp["weight_decay"] * norms).mean()
        return ModelOutput(prediction, penalty)
