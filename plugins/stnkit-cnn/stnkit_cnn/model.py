"""Self-Tuning CNNs: the paper's AlexNet and a small one sized for CPUs.

Every convolution and fully connected layer is a best-response layer. Dropout is placed as in
the authors' released code (``cnn/hypermodels/alexnet.py``): after each convolution's ReLU and
max-pool, per-example *channel-wise* dropout (whole feature maps); on the inputs of the hidden
fully connected layers, per-example elementwise dropout; nothing before the classifier. Both
kinds scale the kept units by ``1/(1-p)``, so training-mode activations have the eval-mode mean.

Inputs arrive in [0, 1] and are normalised here by the training set's channel mean and standard
deviation (the released code normalises in the data pipeline, with fixed CIFAR-10 statistics).

Where stnkit differs from the released network on purpose:

- each best-response layer has no learned ``elem_scalar`` (a scalar the released layers multiply
  their elementary output by); the plain network is exactly the released plain one;
- the elementary and response weights are run as one stacked convolution / matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.model import ModelOutput, StnModel
from stnkit.nn import BRConv2d, BRLinear, channel_dropout, dropout

__all__ = ["STNAlexNet", "STNSmallCNN"]


def _dropout_use(where: str) -> HyperparameterUse:
    return HyperparameterUse(f"dropout rate {where}", default=0.0, low=0.0, high=1.0, continuous=True)


_COUNTS = {2: "two", 5: "five"}


def _widths(value: list[int], count: int, layers: str) -> list[int]:
    """``value`` if it holds ``count`` positive layer widths; a readable recipe error otherwise."""
    if len(value) != count or min(value, default=0) < 1:
        raise ValueError(f"give {_COUNTS[count]} positive {layers} widths")
    return value


@dataclass(frozen=True)
class _Conv:
    """One convolution block: ``kernel`` x ``kernel``, ``stride``, 'same' padding, then ReLU, then
    (if ``pool``) max-pooling with window ``pool`` and stride ``pool_stride``."""

    kernel: int
    stride: int = 1
    pool: int = 0
    pool_stride: int = 0


def _out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class _ConvNet(StnModel):
    """Shared forward pass: conv blocks (conv → ReLU → optional max-pool → channel dropout), then
    fully connected blocks (dropout → linear → ReLU), then the classifier.

    ``conv_names[i]`` is the dropout rate after block ``i``; ``fc_names[j]`` the rate on the
    input of hidden fully connected layer ``j``.
    """

    conv_names: ClassVar[tuple[str, ...]]
    fc_names: ClassVar[tuple[str, ...]]
    blocks: ClassVar[tuple[_Conv, ...]]
    mean: Tensor
    std: Tensor

    def _build(self, data: DataInfo, channels: list[int], fc: list[int], n_hyper: int) -> None:
        in_channels, height, width = data.input_shape
        mean = data.extras.get("mean", [0.0] * in_channels)
        std = data.extras.get("std", [1.0] * in_channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.convs = nn.ModuleList()
        for out_channels, block in zip(channels, self.blocks, strict=True):
            padding = block.kernel // 2
            conv = BRConv2d(in_channels, out_channels, block.kernel, n_hyper, block.stride, padding)
            self.convs.append(conv)
            in_channels = out_channels
            height = _out(height, block.kernel, block.stride, padding)
            width = _out(width, block.kernel, block.stride, padding)
            if block.pool:
                height = _out(height, block.pool, block.pool_stride)
                width = _out(width, block.pool, block.pool_stride)
            if height < 1 or width < 1:
                raise ValueError(f"inputs of {data.input_shape[1:]} pixels are too small for this network")
        features = in_channels * height * width
        self.features = features
        self.fcs = nn.ModuleList()
        for size in fc:
            self.fcs.append(BRLinear(features, size, n_hyper))
            features = size
        self.classifier = BRLinear(features, data.output_size, n_hyper)

    def forward(self, inputs: Tensor, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        """``inputs`` ``(B, C, H, W)`` in [0, 1] → logits ``(B, classes)``."""
        training = self.training
        x = (inputs - self.mean) / self.std
        for conv, name, block in zip(self.convs, self.conv_names, self.blocks, strict=True):
            x = F.relu(conv(x, hp.hnet))
            if block.pool:
                x = F.max_pool2d(x, kernel_size=block.pool, stride=block.pool_stride)
            x = channel_dropout(x, hp[name], training)
        x = x.flatten(1)
        for fc, name in zip(self.fcs, self.fc_names, strict=True):
            x = F.relu(fc(dropout(x, hp[name], training), hp.hnet))
        return ModelOutput(self.classifier(x, hp.hnet))


class STNAlexNet(_ConvNet):
    """The paper's CIFAR-10 AlexNet, as released: five 3x3 convolutions (64-192-384-256-256, the
    first with stride 2), 2x2 max-pools after the 1st, 2nd and 5th (32x32 inputs give 256·2·2 =
    1024 features), fully connected 4096-4096, then the classifier. Seven dropout rates:
    channel-wise after each convolution block (``dropout_conv1``..``5``) and elementwise on the
    inputs of the two hidden fully connected layers (``dropout_fc1``, ``dropout_fc2``).

    Built plain (``response: fixed``) it has the released plain network's 23,272,266 parameters
    for CIFAR-10. Widths are configurable, the layout is not. Differences from the released
    model are listed in the module docstring.
    """

    name = "stn-alexnet"
    conv_names = tuple(f"dropout_conv{i}" for i in range(1, 6))
    fc_names = ("dropout_fc1", "dropout_fc2")
    blocks = (
        _Conv(3, stride=2, pool=2, pool_stride=2),
        _Conv(3, pool=2, pool_stride=2),
        _Conv(3),
        _Conv(3),
        _Conv(3, pool=2, pool_stride=2),
    )
    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        **{n: _dropout_use(f"of whole channels after convolution {n[-1]}") for n in conv_names},
        **{n: _dropout_use(f"on the input of fully connected layer {n[-1]}") for n in fc_names},
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
        self._build(data, config.channels, config.fc, n_hyper)


class STNSmallCNN(_ConvNet):
    """A small CNN for CPU-scale runs: two 3x3 convolutions, each followed by a 3x3 max-pool of
    stride 2, and one hidden fully connected layer. Dropout is placed as in :class:`STNAlexNet`:
    channel-wise after each pooled convolution (``dropout_conv1``, ``dropout_conv2``) and
    elementwise on the input of the hidden layer (``dropout_fc1``); none before the classifier."""

    name = "stn-cnn"
    conv_names = ("dropout_conv1", "dropout_conv2")
    fc_names = ("dropout_fc1",)
    blocks = (_Conv(3, pool=3, pool_stride=2), _Conv(3, pool=3, pool_stride=2))
    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "dropout_conv1": _dropout_use("of whole channels after convolution 1"),
        "dropout_conv2": _dropout_use("of whole channels after convolution 2"),
        "dropout_fc1": _dropout_use("on the input of the hidden fully connected layer"),
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
        self._build(data, config.channels, [config.hidden], n_hyper)
