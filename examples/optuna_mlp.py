"""The Optuna version of examples/own_mlp.py: the same MLP and data, dropout and weight decay
searched by Optuna's define-by-run objective, one full training per trial.

    python examples/optuna_mlp.py           # 20 trials of 20 epochs
    python examples/optuna_mlp.py --tiny    # 2 trials of 2 epochs
"""

from __future__ import annotations

import sys

import optuna
import torch
from fashion_data import loaders
from torch import Tensor, nn


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
    epochs, trials = (2, 2) if tiny else (20, 20)
    train, valid, _ = loaders(*sizes)

    # --- tuning: begin ---
    def objective(trial: optuna.Trial) -> float:
        model = MLP(p=trial.suggest_float("dropout", 0.0, 0.8))
        decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=decay)
        best = float("inf")
        for _ in range(epochs):
            model.train()
            for x, y in train:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
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
