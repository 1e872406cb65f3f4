"""The plain torch convolutional networks that ``stn-cnn`` and ``stn-alexnet`` convert.

They import nothing from stnkit, as a user's own model would not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Block", "ConvNet"]


@dataclass(frozen=True)
class Block:
    """One convolution block: ``kernel`` x ``kernel``, ``stride``, 'same' padding, then ReLU, then
    (if ``pool``) max-pooling with window ``pool`` and stride ``pool_stride``."""

    kernel: int
    stride: int = 1
    pool: int = 0
    pool_stride: int = 0


def _out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvNet(nn.Module):
    """Conv blocks (conv → ReLU → optional max-pool → ``conv_dropout.<i>``, channel-wise), then
    hidden fully connected layers (``fc_dropout.<j>`` on their inputs → linear → ReLU), then the
    classifier. Inputs ``(B, C, H, W)`` in [0, 1] are normalised by ``mean`` and ``std`` per
    channel. The dropout rates start at 0: the hyperparameters that drive them set them."""

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        input_shape: Sequence[int],
        blocks: Sequence[Block],
        channels: Sequence[int],
        fc: Sequence[int],
        classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        self.blocks = tuple(blocks)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.convs = nn.ModuleList()
        for out_channels, block in zip(channels, blocks, strict=True):
            padding = block.kernel // 2
            self.convs.append(nn.Conv2d(in_channels, out_channels, block.kernel, block.stride, padding))
            in_channels = out_channels
            height = _out(height, block.kernel, block.stride, padding)
            width = _out(width, block.kernel, block.stride, padding)
            if block.pool:
                height = _out(height, block.pool, block.pool_stride)
                width = _out(width, block.pool, block.pool_stride)
            if height < 1 or width < 1:
                raise ValueError(f"inputs of {tuple(input_shape[1:])} pixels are too small for this network")
        self.conv_dropout = nn.ModuleList(nn.Dropout2d(0.0) for _ in blocks)
        features = in_channels * height * width
        self.features = features
        self.fcs = nn.ModuleList()
        for size in fc:
            self.fcs.append(nn.Linear(features, size))
            features = size
        self.fc_dropout = nn.ModuleList(nn.Dropout(0.0) for _ in fc)
        self.classifier = nn.Linear(features, classes)

    def forward(self, inputs: Tensor) -> Tensor:
        x = (inputs - self.mean) / self.std
        for conv, block, drop in zip(self.convs, self.blocks, self.conv_dropout, strict=True):
            x = F.relu(conv(x))
            if block.pool:
                x = F.max_pool2d(x, kernel_size=block.pool, stride=block.pool_stride)
            x = drop(x)
        x = x.flatten(1)
        for fc, drop in zip(self.fcs, self.fc_dropout, strict=True):
            x = F.relu(fc(drop(x)))
        logits: Tensor = self.classifier(x)
        return logits
