"""A ridge-regression problem with a known answer, for checking hypergradients end to end.

In the linear setting of the STN paper the best response is available in closed form, so the
weight decay STN settles on can be scored exactly: :func:`ridge_solution` gives the trained
weights for any weight decay, and :func:`validation_loss` their validation error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["make_ridge_problem", "ridge_solution", "save_problem", "validation_loss"]


def make_ridge_problem(
    n_train: int = 40,
    n_valid: int = 400,
    n_test: int = 400,
    features: int = 30,
    noise: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Linear data ``y = x·w + b + noise`` with correlated features and fewer training rows than
    make unregularised least squares reliable, so the best weight decay is clearly above zero."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(features, features)) / np.sqrt(features)
    w = rng.normal(size=features) / np.sqrt(features)
    bias = 0.5

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, features)) @ mixing + 0.3 * rng.normal(size=(n, features))
        y = x @ w + bias + noise * rng.normal(size=n)
        return x.astype(np.float32), y.astype(np.float32)

    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = sample(n)
    return arrays


def save_problem(arrays: dict[str, np.ndarray], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def ridge_solution(x: np.ndarray, y: np.ndarray, weight_decay: float) -> tuple[np.ndarray, float]:
    """Minimiser of ``mean((x·w + b − y)²) + weight_decay·‖w‖²`` (bias unpenalised), in float64."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    n = len(x)
    gram = xc.T @ xc / n + weight_decay * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xc.T @ yc / n)
    return w, float(y_mean - x_mean @ w)


def validation_loss(arrays: dict[str, np.ndarray], weight_decay: float, split: str = "valid") -> float:
    """Mean squared error on ``split`` of the ridge solution trained at ``weight_decay``."""
    w, b = ridge_solution(arrays["x_train"], arrays["y_train"], weight_decay)
    error = arrays[f"x_{split}"].astype(np.float64) @ w + b - arrays[f"y_{split}"]
    return float(np.mean(error**2))
