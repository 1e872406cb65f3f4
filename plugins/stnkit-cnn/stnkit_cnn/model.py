"""Self-Tuning CNNs: the paper's AlexNet and a small one sized for CPUs.

Each is a plain torch :class:`~stnkit_cnn.nets.ConvNet` converted by :mod:`stnkit.convert`:
every convolution and fully connected layer becomes a best-response layer. Dropout is placed as in
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

from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator
from torch import nn

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.convert import ConvertedModel, ConvertSpec, convert_in_place
from stnkit.data import DataInfo
from stnkit.nn import BRLinear
from stnkit.nn.base import init_hyper_weight
from stnkit_cnn.nets import Block, ConvNet

__all__ = ["STNAlexNet", "STNSmallCNN"]


def _dropout_use(where: str) -> HyperparameterUse:
    return HyperparameterUse(f"dropout rate {where}", default=0.0, low=0.0, high=1.0, continuous=True)


_COUNTS = {2: "two", 5: "five"}


def _widths(value: list[int], count: int, layers: str) -> list[int]:
    """``value`` if it holds ``count`` positive layer widths; a readable recipe error otherwise."""
    if len(value) != count or min(value, default=0) < 1:
        raise ValueError(f"give {_COUNTS[count]} positive {layers} widths")
    return value


class _ConvNet(ConvertedModel):
    """A :class:`~stnkit_cnn.nets.ConvNet` converted with ``conv_names[i]`` driving the channel
    dropout after block ``i`` and ``fc_names[j]`` the dropout on the input of hidden fully
    connected layer ``j``."""

    conv_names: ClassVar[tuple[str, ...]]
    fc_names: ClassVar[tuple[str, ...]]
    blocks: ClassVar[tuple[Block, ...]]

    def _build(self, config: Any, data: DataInfo, channels: list[int], fc: list[int], n_hyper: int) -> None:
        in_channels = data.input_shape[0]
        mean = data.extras.get("mean", [0.0] * in_channels)
        std = data.extras.get("std", [1.0] * in_channels)
        start = torch.get_rng_state()
        net = ConvNet(data.input_shape, self.blocks, channels, fc, data.output_size, mean, std)
        dropout = {name: [f"conv_dropout.{i}"] for i, name in enumerate(self.conv_names)}
        dropout |= {name: [f"fc_dropout.{j}"] for j, name in enumerate(self.fc_names)}
        spec = ConvertSpec(dropout=dropout)
        conversion = convert_in_place(net, spec, n_hyper, list(self.hyperparameters), strict=False)
        super().__init__(net, conversion)
        self.config = config
        self.data = data
        # The weights are drawn again from the same random state in the best-response layers'
        # order (per layer: V, then each stack's weight and bias), the same distributions as
        # torch's: a seeded run keeps the numbers its documented measurements were made with.
        torch.set_rng_state(start)
        for layer in [*self.convs, *self.fcs, self.classifier]:
            hyper = getattr(layer, "hyper_weight", None)
            if hyper is not None:
                init_hyper_weight(hyper)
            layer.reset_parameters()

    @property
    def convs(self) -> nn.ModuleList:
        convs = self.module.convs
        assert isinstance(convs, nn.ModuleList)
        return convs

    @property
    def fcs(self) -> nn.ModuleList:
        fcs = self.module.fcs
        assert isinstance(fcs, nn.ModuleList)
        return fcs

    @property
    def classifier(self) -> BRLinear:
        classifier = self.module.classifier
        assert isinstance(classifier, BRLinear)
        return classifier

    @property
    def features(self) -> int:
        net = self.module
        assert isinstance(net, ConvNet)
        return net.features


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
        Block(3, stride=2, pool=2, pool_stride=2),
        Block(3, pool=2, pool_stride=2),
        Block(3),
        Block(3),
        Block(3, pool=2, pool_stride=2),
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
        self._build(config, data, config.channels, config.fc, n_hyper)


class STNSmallCNN(_ConvNet):
    """A small CNN for CPU-scale runs: two 3x3 convolutions, each followed by a 3x3 max-pool of
    stride 2, and one hidden fully connected layer. Dropout is placed as in :class:`STNAlexNet`:
    channel-wise after each pooled convolution (``dropout_conv1``, ``dropout_conv2``) and
    elementwise on the input of the hidden layer (``dropout_fc1``); none before the classifier."""

    name = "stn-cnn"
    conv_names = ("dropout_conv1", "dropout_conv2")
    fc_names = ("dropout_fc1",)
    blocks = (Block(3, pool=3, pool_stride=2), Block(3, pool=3, pool_stride=2))
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
        self._build(config, data, config.channels, [config.hidden], n_hyper)
