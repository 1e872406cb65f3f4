"""Fashion-MNIST as ordinary torch DataLoaders, read from the four IDX files (no torchvision).

Plain user code, shared by the examples: nothing here knows about stnkit or Optuna. The files are
looked up in ``$FASHION_MNIST`` or a ``shared/data/fashion-mnist`` folder beside the project.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

MEAN, STD = 0.2860, 0.3530  # of the training images' pixels in [0, 1]


def find_root() -> Path:
    if os.environ.get("FASHION_MNIST"):
        return Path(os.environ["FASHION_MNIST"])
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "shared" / "data" / "fashion-mnist"
        if candidate.is_dir():
            return candidate
    raise SystemExit("Fashion-MNIST not found: set FASHION_MNIST to the folder holding its .gz files")


def _read(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as file:
        return np.frombuffer(file.read(), dtype=np.uint8, offset=offset)


def _split(root: Path, prefix: str, count: int, from_end: bool = False) -> TensorDataset:
    images = _read(root / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = _read(root / f"{prefix}-labels-idx1-ubyte.gz", 8)
    if count > len(labels):
        raise SystemExit(f"{root} holds {len(labels)} {prefix} images, fewer than the {count} asked for")
    part = slice(len(labels) - count, None) if from_end else slice(0, count)
    x = (torch.tensor(images[part], dtype=torch.float32) / 255.0 - MEAN) / STD
    return TensorDataset(x, torch.tensor(labels[part], dtype=torch.long))


def loaders(n_train: int, n_valid: int, n_test: int, batch_size: int = 100) -> tuple[DataLoader[Any], ...]:
    """The first ``n_train`` training images, the last ``n_valid`` of the training file
    (validation) and the first ``n_test`` test images."""
    root = find_root()
    train = _split(root, "train", n_train)
    valid = _split(root, "train", n_valid, from_end=True)
    test = _split(root, "t10k", n_test)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(valid, batch_size=500),
        DataLoader(test, batch_size=500),
    )
