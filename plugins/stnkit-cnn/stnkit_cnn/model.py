"""Self-Tuning CNNs: the paper's AlexNet-style network and a small one sized for CPUs.

Every convolution and fully connected layer is a best-response layer; each is followed by
dropout whose rate is a tuned hyperparameter, per example. Inputs arrive in [0, 1] and are
normalised here by the training set's channel mean and standard deviation.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.model import ModelOutput, StnModel
from stnkit.nn import BRConv2d, BRLinear, dropout

__all__ = ["STNAlexNet", "STNSmallCNN"]


def _dropout_use(where: str) -> HyperparameterUse:
    return HyperparameterUse(f"dropout rate after {where}", default=0.0, low=0.0, high=1.0, continuous=True)


_COUNTS = {2: "two", 5: "five"}


def _widths(value: list[int], count: int, layers: str) -> list[int]:
    """``value`` if it holds ``count`` positive layer widths; a readable recipe error otherwise."""
    if len(value) != count or min(value, default=0) < 1:
        raise ValueError(f"give {_COUNTS[count]} positive {layers} widths")
    return value


class _ConvNet(StnModel):
    """Shared forward pass: conv blocks (conv → ReLU → dropout → optional max-pool), then fully
    connected blocks (linear → ReLU → dropout), then the classifier."""

    conv_names: ClassVar[tuple[str, ...]]
    fc_names: ClassVar[tuple[str, ...]]
    pools: ClassVar[tuple[bool, ...]]
    mean: Tensor
    std: Tensor

    def _build(
        self, data: DataInfo, channels: list[int], kernels: list[int], fc: list[int], n_hyper: int
    ) -> None:
        in_channels, height, width = data.input_shape
        mean = data.extras.get("mean", [0.0] * in_channels)
        std = data.extras.get("std", [1.0] * in_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.convs = nn.ModuleList()
        for out_channels, kernel, pool in zip(channels, kernels, self.pools, strict=True):
            self.convs.append(BRConv2d(in_channels, out_channels, kernel, n_hyper, padding=kernel // 2))
            in_channels = out_channels
            if pool:
                height, width = (height - 3) // 2 + 1, (width - 3) // 2 + 1
        if height < 1 or width < 1:
            raise ValueError(f"inputs of {data.input_shape[1:]} pixels are too small for this network")
        features = in_channels * height * width
        self.fcs = nn.ModuleList()
        for size in fc:
            self.fcs.append(BRLinear(features, size, n_hyper))
            features = size
        self.classifier = BRLinear(features, data.output_size, n_hyper)

    def forward(self, inputs: Tensor, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        training = self.training
        x = (inputs - self.mean) / self.std
        for conv, name, pool in zip(self.convs, self.conv_names, self.pools, strict=True):
            x = dropout(F.relu(conv(x, hp.hnet)), hp[name], training)
            if pool:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = x.flatten(1)
        for fc, name in zip(self.fcs, self.fc_names, strict=True):
            x = dropout(F.relu(fc(x, hp.hnet)), hp[name], training)
        return ModelOutput(self.classifier(x, hp.hnet))


class STNAlexNet(_ConvNet):
    """The paper's AlexNet-style CIFAR network: five convolutions (64-192-384-256-256; 5x5, 5x5,
    then 3x3; max-pools after the 1st, 2nd and 5th) and two 4096-unit fully connected layers,
    each followed by its own tuned dropout. Widths are configurable, the layout is not."""

    name = "stn-alexnet"
    conv_names = tuple(f"dropout_conv{i}" for i in range(1, 6))
    fc_names = ("dropout_fc1", "dropout_fc2")
    pools = (True, True, False, False, True)
    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        **{n: _dropout_use(f"convolution {n[-1]}") for n in conv_names},
        **{n: _dropout_use(f"fully connected layer {n[-1]}") for n in fc_names},
    }

    class Config(ComponentConfig):
        channels: list[int] = Field(default_factory=lambda: [64, 192, 384, 256, 256])
        fc: list[int] = Field(default_factory=lambda: [4096, 4096])

        @field_validator("channels")
        @classmethod
        def _five(cls, value: list[int]) -> list[int]:
            return _widths(value, 5, "convolution")

        @field_validator("fc")
        @classmethod
        def _two(cls, value: list[int]) -> list[int]:
            return _widths(value, 2, "fully connected")

    config: Config

    def __init__(self, config: Config, data: DataInfo, n_hyper: int) -> None:
        super().__init__(config, data, n_hyper)
        self._build(data, config.channels, [5, 5, 3, 3, 3], config.fc, n_hyper)


class STNSmallCNN(_ConvNet):
    """A small CNN for CPU-scale runs: two convolutions (3x3, each followed by max-pooling) and
    one hidden fully connected layer, each with its own tuned dropout."""

    name = "stn-cnn"
    conv_names = ("dropout_conv1", "dropout_conv2")
    fc_names = ("dropout_fc1",)
    pools = (True, True)
    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "dropout_conv1": _dropout_use("convolution 1"),
        "dropout_conv2": _dropout_use("convolution 2"),
        "dropout_fc1": _dropout_use("the hidden fully connected layer"),
    }

    class Config(ComponentConfig):
        channels: list[int] = Field(default_factory=lambda: [32, 64])
        hidden: int = Field(256, ge=1)

        @field_validator("channels")
        @classmethod
        def _two(cls, value: list[int]) -> list[int]:
            return _widths(value, 2, "convolution")

    config: Config

    def __init__(self, config: Config, data: DataInfo, n_hyper: int) -> None:
        super().__init__(config, data, n_hyper)
        self._build(data, config.channels, [3, 3], [config.hidden], n_hyper)
