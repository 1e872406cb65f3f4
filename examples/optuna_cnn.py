"""The Optuna version of examples/own_cnn.py: the same CNN and data; dropout, weight decay,
input scaling and cutout searched by Optuna's define-by-run objective, one training per trial.
The augmentations are written here by hand (stnkit's come as plugins).

    python examples/optuna_cnn.py           # 20 trials of 20 epochs
    python examples/optuna_cnn.py --tiny    # 2 trials of 2 epochs
"""

from __future__ import annotations

import sys

import optuna
import torch
from fashion_data import loaders
from torch import Tensor, nn


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
    epochs, trials = (2, 2) if tiny else (20, 20)
    train, valid, _ = loaders(*sizes)

    # --- tuning: begin ---
    def augment(x: Tensor, scaling: float, holes: int, length: int) -> Tensor:
        low = 1 / (1 + scaling)
        x = x * (low + (1 + scaling - low) * torch.rand(len(x), 1, 1, 1))
        for _ in range(holes):
            rows, cols = torch.randint(28, (2, len(x), 1, 1))
            r, c = torch.arange(28).view(1, 28, 1), torch.arange(28).view(1, 1, 28)
            cut = ((r - rows).abs() <= length // 2) & ((c - cols).abs() <= length // 2)
            x = x.masked_fill(cut.unsqueeze(1), 0.0)
        return x

    def objective(trial: optuna.Trial) -> float:
        model = CNN(p=trial.suggest_float("dropout", 0.0, 0.8))
        decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        scaling = trial.suggest_float("input_scaling", 0.0, 1.0)
        holes, length = trial.suggest_int("cutout_holes", 0, 4), trial.suggest_int("cutout_length", 0, 14)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=decay)
        best = float("inf")
        for _ in range(epochs):
            model.train()
            for x, y in train:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(augment(x, scaling, holes, length)), y).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                loss = sum(nn.functional.cross_entropy(model(x), y, reduction="sum") for x, y in valid)
            best = min(best, float(loss) / len(valid.dataset))
        return best

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=trials)
    print(study.best_value, study.best_params)
    # --- tuning: end ---


if __name__ == "__main__":
    main(tiny="--tiny" in sys.argv)
