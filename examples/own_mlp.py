"""Tune the dropout and weight decay of a plain PyTorch MLP on Fashion-MNIST, in one training run.

    python examples/own_mlp.py           # 5,000 training images, 20 epochs (minutes on a CPU)
    python examples/own_mlp.py --tiny    # a few seconds: checks that everything runs

The model and the DataLoaders are ordinary torch code; the lines between the ``tuning`` markers
are all that is stnkit-specific (docs/own-model.md counts them beside the Optuna version,
examples/optuna_mlp.py).
"""

from __future__ import annotations

import sys

import torch
from fashion_data import loaders
from torch import Tensor, nn

import stnkit


class MLP(nn.Module):
    def __init__(self, hidden: int = 256, p: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, hidden),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def main(tiny: bool) -> None:
    torch.manual_seed(0)
    sizes = (200, 200, 200) if tiny else (5_000, 5_000, 10_000)
    epochs = 2 if tiny else 20
    train, valid, test = loaders(*sizes)
    model = MLP()
    # --- tuning: begin ---
    hyperparameters = {"dropout": 0.2, "weight_decay": 1e-4}
    tuner = stnkit.Tuner(
        model, hyperparameters=hyperparameters, train=train, valid=valid, test=test, epochs=epochs
    )
    result = tuner.fit()
    print(result.status, result.best_values, result.end.test_metrics)
    # --- tuning: end ---


if __name__ == "__main__":
    main(tiny="--tiny" in sys.argv)
