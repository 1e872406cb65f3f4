"""Loader functions of a user's own project, named by recipes as ``tests.own_data:<function>``.

Plain torch: nothing here imports stnkit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset


def _blobs(n: int, features: int, classes: int, generator: torch.Generator) -> TensorDataset:
    centers = torch.randn(classes, features, generator=torch.Generator().manual_seed(99)) * 2.0
    labels = torch.randint(classes, (n,), generator=generator)
    inputs = centers[labels] + torch.randn(n, features, generator=generator)
    return TensorDataset(inputs, labels)


def blobs(
    n_train: int = 64,
    n_valid: int = 32,
    n_test: int = 32,
    features: int = 8,
    classes: int = 3,
    batch_size: int = 16,
    shuffle: bool = True,
) -> tuple[DataLoader[Any], DataLoader[Any], DataLoader[Any]]:
    """Gaussian blobs, a small classification problem: (train, valid, test) loaders of tuples."""
    g = torch.Generator().manual_seed(0)
    train = _blobs(n_train, features, classes, g)
    valid = _blobs(n_valid, features, classes, g)
    test = _blobs(n_test, features, classes, g)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=shuffle),
        DataLoader(valid, batch_size=batch_size),
        DataLoader(test, batch_size=batch_size),
    )


def _as_dicts(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"pixels": torch.stack([x for x, _ in items]), "label": torch.stack([y for _, y in items])}


def blob_dicts(batch_size: int = 16) -> dict[str, DataLoader[Any]]:
    """The blobs as dict batches ``{"pixels": ..., "label": ...}``, returned as a dict of loaders."""
    train, valid, _ = blobs(batch_size=batch_size)
    return {
        "train": DataLoader(train.dataset, batch_size=batch_size, shuffle=True, collate_fn=_as_dicts),
        "valid": DataLoader(valid.dataset, batch_size=batch_size, collate_fn=_as_dicts),
    }


def regression(n_train: int = 48, n_valid: int = 24, features: int = 5, batch_size: int = 12) -> Any:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(features, 1, generator=g)
    x_train = torch.randn(n_train, features, generator=g)
    x_valid = torch.randn(n_valid, features, generator=g)
    train = TensorDataset(x_train, x_train @ w)
    valid = TensorDataset(x_valid, x_valid @ w)
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(valid, batch_size=batch_size)


def triples() -> Any:
    """Batches of three items: (inputs, targets, weights)."""
    x = torch.randn(20, 4)
    data = TensorDataset(x, torch.zeros(20, dtype=torch.long), torch.ones(20))
    return DataLoader(data, batch_size=5), DataLoader(data, batch_size=5)


def empty() -> Any:
    data = TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    return DataLoader(data, batch_size=5), DataLoader(data, batch_size=5)


def float_labels() -> Any:
    train, valid, _ = blobs()
    x, y = train.dataset.tensors  # type: ignore[attr-defined]
    floats = TensorDataset(x, y.float())
    return DataLoader(floats, batch_size=16), valid


def one_loader() -> Any:
    return blobs()[0]


def smoothed_cross_entropy(prediction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A user's own loss: cross-entropy with label smoothing."""
    return torch.nn.functional.cross_entropy(prediction, targets, label_smoothing=0.1)


def per_example_cross_entropy(prediction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A user's mistake: one loss per example, not their mean."""
    return torch.nn.functional.cross_entropy(prediction, targets, reduction="none")
