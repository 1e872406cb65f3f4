"""Readers for small real-image files, for tests and benchmarks: CIFAR-10 binary and IDX.

Both return float32 tensors ``(N, C, H, W)`` scaled to ``[0, 1]``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["read_cifar10_bin", "read_idx_images"]

_CIFAR_SIDE = 32
_CIFAR_RECORD = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE


def read_cifar10_bin(path: Path, count: int | None = None) -> tuple[Tensor, Tensor]:
    """Images ``(N, 3, 32, 32)`` and labels ``(N,)`` (long) from a CIFAR-10 binary batch file.

    Each record is one label byte then the 1024 red, 1024 green and 1024 blue bytes of a 32x32
    image, row-major. ``count`` keeps the first records only.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % _CIFAR_RECORD:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records")
    records = raw.reshape(-1, _CIFAR_RECORD)[:count]
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    pixels = records[:, 1:].reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).astype(np.float32) / 255.0
    return torch.from_numpy(pixels), labels


def read_idx_images(path: Path, count: int | None = None) -> Tensor:
    """Greyscale images ``(N, 1, H, W)`` from an IDX image file (MNIST format, optionally gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x00000803:  # unsigned bytes, three dimensions
        raise ValueError(f"{path}: not an IDX file of uint8 images (magic {magic:#010x})")
    n, height, width = (int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16, count=n * height * width)
    images = pixels.reshape(n, 1, height, width)[:count].astype(np.float32) / 255.0
    return torch.from_numpy(images)
