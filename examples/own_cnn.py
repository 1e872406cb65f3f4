"""Tune a plain PyTorch CNN's dropouts, weight decay and data augmentation (cutout and input
scaling) on Fashion-MNIST, in one training run.

    python examples/own_cnn.py           # 5,000 training images, 20 epochs
    python examples/own_cnn.py --tiny    # a few seconds: checks that everything runs

The lines between the ``tuning`` markers (and ``import stnkit``) are all that is stnkit-specific;
the Optuna version is examples/optuna_cnn.py.
"""

from __future__ import annotations

import sys

import torch
from fashion_data import loaders
from torch import Tensor, nn

import stnkit


class CNN(nn.Module):
    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout2d(p),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout2d(p),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(p), nn.Linear(128, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def main(tiny: bool) -> None:
    torch.manual_seed(0)
    sizes = (200, 200, 200) if tiny else (5_000, 5_000, 10_000)
    epochs = 2 if tiny else 20
    train, valid, test = loaders(*sizes)
    model = CNN()
    # --- tuning: begin ---
    tuned = {
        "dropout": 0.1,
        "weight_decay": 1e-4,
        "input_scaling": {"kind": "interval", "low": 0.0, "high": 1.0, "init": 0.05},
        "cutout_holes": {"kind": "integer", "low": 0, "high": 4, "init": 1},
        "cutout_length": {"kind": "integer", "low": 0, "high": 14, "init": 4},
    }
    augment = [{"name": "input-scaling"}, {"name": "cutout"}]
    tuner = stnkit.Tuner(
        model, hyperparameters=tuned, augment=augment, train=train, valid=valid, test=test, epochs=epochs
    )
    result = tuner.fit()
    print(result.status, result.best_values, result.end.test_metrics)
    # --- tuning: end ---


if __name__ == "__main__":
    main(tiny="--tiny" in sys.argv)
