"""Known-answer problems: linear regression whose best weight decay and input-dropout rate are
computed exactly, drawn from a seed in varied shapes.

The ``stn-mlp`` with no hidden layer is ``ŷ = w·x̃ + b``. Its training objective is the mean squared
error plus ``weight_decay·‖w‖²`` (the bias is not penalised), and with ``input_dropout`` at rate
``p`` the inputs are ``x̃_j = x_j·m_j/(1−p)``, ``m_j ~ Bernoulli(1−p)``. Since ``E[x̃_j] = x_j`` and
``Var[x̃_j] = x_j²·p/(1−p)``, the expected training loss is

    mean_i (w·x_i + b − y_i)²  +  Σ_j w_j² · (weight_decay + p/(1−p) · mean_i x_ij²)

— a ridge whose penalty is diagonal and data dependent, with the raw (not centred) second moments
of the training inputs. Its minimiser is closed form (:func:`solution`), hence so is the
validation loss at any hyperparameters (:func:`loss`), and the best values are found by a dense
grid refined by a bounded 1-D (or Nelder–Mead 2-D) search in the units the hyperparameter kinds
tune in: ``log λ`` for the weight decay, the log-odds ``log p/(1−p)`` for the rate.

Three families: ``ridge`` (weight decay), ``dropout`` (input dropout) and ``both`` at once, whose
optimum is a point only because the features' scales differ (a dropout penalty grows with a
feature's second moment, a weight decay does not).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.optimize import minimize, minimize_scalar

__all__ = [
    "FAMILIES",
    "HYPERPARAMETERS",
    "Family",
    "KnownProblem",
    "Shape",
    "loss",
    "make_known_problem",
    "make_known_problems",
    "penalty_diagonal",
    "solution",
    "start_ratios",
    "unconstrained",
]

Family = Literal["ridge", "dropout", "both"]
FAMILIES: tuple[Family, ...] = ("ridge", "dropout", "both")

#: the hyperparameters each family tunes, by the names ``stn-mlp`` consumes
HYPERPARAMETERS: dict[Family, tuple[str, ...]] = {
    "ridge": ("weight_decay",),
    "dropout": ("input_dropout",),
    "both": ("weight_decay", "input_dropout"),
}

#: the kind each hyperparameter is declared with; its unconstrained unit is what "30×" scales
_KINDS = {"weight_decay": "positive", "input_dropout": "unit"}

# the searched ranges, in unconstrained units (log λ, log-odds)
_LOG_WD = (math.log(1e-6), math.log(1e4))
_LOG_ODDS = (math.log(1e-4), math.log(1e3))


@dataclass(frozen=True)
class Shape:
    """What varies between problems."""

    n_train: int
    n_valid: int
    features: int
    noise: float  # standard deviation of the target noise; the signal's is 1
    density: float  # fraction of true weights that are non-zero
    correlation: float  # ρ of the features' AR(1) correlation ρ^|i−j|
    scale_spread: float  # standard deviation of the features' log scales


def penalty_diagonal(x_train: np.ndarray, weight_decay: float = 0.0, dropout: float = 0.0) -> np.ndarray:
    """The expected-loss penalty per weight: ``weight_decay + p/(1−p)·mean(x_j²)``."""
    odds = dropout / (1.0 - dropout)
    second_moment: np.ndarray = np.mean(np.asarray(x_train, dtype=np.float64) ** 2, axis=0)
    return weight_decay + odds * second_moment


def solution(
    x: np.ndarray, y: np.ndarray, weight_decay: float = 0.0, dropout: float = 0.0
) -> tuple[np.ndarray, float]:
    """Minimiser ``(w, b)`` of the expected training loss above, in float64."""
    return _Fit(x, y).solve(penalty_diagonal(x, weight_decay, dropout))


def loss(
    arrays: Mapping[str, np.ndarray], weight_decay: float = 0.0, dropout: float = 0.0, split: str = "valid"
) -> float:
    """Mean squared error on ``split`` of :func:`solution` trained at these hyperparameters."""
    w, b = solution(arrays["x_train"], arrays["y_train"], weight_decay, dropout)
    error = np.asarray(arrays[f"x_{split}"], dtype=np.float64) @ w + b - arrays[f"y_{split}"]
    return float(np.mean(error**2))


def unconstrained(name: str, value: float) -> float:
    """The scale optima are searched and starts are moved on: ``log λ`` for a weight decay, the
    log-odds for a rate (the units stnkit tunes them in)."""
    if _KINDS[name] == "unit":
        return math.log(value / (1.0 - value))
    return math.log(value)


def constrained(name: str, u: float) -> float:
    """Inverse of :func:`unconstrained`."""
    if _KINDS[name] == "unit":
        return 1.0 / (1.0 + math.exp(-u))
    return math.exp(u)


class _Fit:
    """The centred normal equations of one training set, reused for every penalty."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.x_mean, self.y_mean = x.mean(axis=0), float(y.mean())
        xc, yc = x - self.x_mean, y - self.y_mean
        self.gram = xc.T @ xc / len(x)
        self.cross = xc.T @ yc / len(x)
        self.second_moment = np.mean(x**2, axis=0)

    def solve(self, diagonal: np.ndarray) -> tuple[np.ndarray, float]:
        w = np.linalg.solve(self.gram + np.diag(diagonal), self.cross)
        return w, self.y_mean - float(self.x_mean @ w)


@dataclass
class KnownProblem:
    """One generated problem: its arrays, its exact optimum and the closed-form loss around it."""

    family: Family
    seed: int
    shape: Shape
    arrays: dict[str, np.ndarray]
    optimum: dict[str, float] = field(default_factory=dict)
    best_loss: float = math.nan

    @property
    def names(self) -> tuple[str, ...]:
        return HYPERPARAMETERS[self.family]

    def loss(self, values: Mapping[str, float], split: str = "valid") -> float:
        """Closed-form ``split`` loss at ``values`` (missing hyperparameters are 0)."""
        return loss(
            self.arrays, values.get("weight_decay", 0.0), values.get("input_dropout", 0.0), split=split
        )

    def ratio(self, values: Mapping[str, float]) -> float:
        """Validation loss at ``values`` over the best one (1 at the optimum)."""
        return self.loss(values) / self.best_loss

    def start(self, factor: float) -> dict[str, float]:
        """The optimum moved by ``factor`` in every hyperparameter: ``λ·factor`` for
        a weight decay, odds ``p/(1−p)·factor`` for a rate (``factor`` 1/30 below, 30 above)."""
        shift = math.log(factor)
        return {n: constrained(n, unconstrained(n, v) + shift) for n, v in self.optimum.items()}

    def save(self, path: Path) -> Path:
        """The arrays as an ``.npz`` the ``tabular`` data set reads."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **self.arrays)  # type: ignore[arg-type]
        return path

    def overrides(self, data_path: Path, start: Mapping[str, float]) -> list[str]:
        """``--set`` overrides of ``recipes/toy-ridge.yaml`` that train on this problem's data
        from ``start``; every hyperparameter is declared as the recipe declares its weight decay
        (one draw per batch)."""
        declared = {
            name: {"kind": _KINDS[name], "init": float(start[name]), "per_example": False}
            for name in self.names
        }
        return [f"data.path={data_path}", f"hyperparameters={json.dumps(declared)}"]

    def describe(self) -> str:
        s = self.shape
        return (
            f"{self.family}-{self.seed}: n={s.n_train} d={s.features} noise={s.noise:.2f} "
            f"density={s.density:.2f} rho={s.correlation:.2f} spread={s.scale_spread:.2f}"
        )


def _draw_shape(rng: np.random.Generator, family: Family) -> Shape:
    features = int(rng.integers(5, 61))
    return Shape(
        n_train=int(rng.integers(max(10, features // 2), 4 * features + 1)),
        n_valid=int(rng.integers(300, 1001)),
        features=features,
        noise=float(np.exp(rng.uniform(math.log(0.3), math.log(3.0)))),
        density=float(rng.uniform(0.2, 1.0)),
        correlation=float(rng.uniform(0.0, 0.9)),
        # the two-hyperparameter problem needs unequal second moments to have a point optimum
        scale_spread=float(rng.uniform(0.0, 0.5) if family == "ridge" else rng.uniform(0.5, 1.2)),
    )


def _draw_arrays(rng: np.random.Generator, shape: Shape, n_test: int) -> dict[str, np.ndarray]:
    d = shape.features
    lags = np.abs(np.subtract.outer(np.arange(d), np.arange(d)))
    mixing = np.linalg.cholesky(shape.correlation**lags).T
    scales = np.exp(shape.scale_spread * rng.normal(size=d))
    offsets = 0.5 * rng.normal(size=d) * scales  # non-zero means: raw and centred moments differ
    # true weights between "equal per weight" (weight decay's prior) and "equal per feature's
    # contribution" (dropout's prior), so neither regularizer is exactly right
    exponent = rng.uniform(0.0, 1.0)
    w = rng.normal(size=d) * (rng.uniform(size=d) < shape.density) / scales**exponent
    if not w.any():
        w[int(rng.integers(d))] = 1.0
    signal = float(np.sqrt(w @ (scales[:, None] * shape.correlation**lags * scales[None, :]) @ w))
    w = w / signal
    bias = float(rng.normal())

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = (rng.normal(size=(n, d)) @ mixing) * scales + offsets
        y = x @ w + bias + shape.noise * rng.normal(size=n)
        return x.astype(np.float32), y.astype(np.float32)

    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", shape.n_train), ("valid", shape.n_valid), ("test", n_test)):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = sample(n)
    return arrays


def _search(arrays: Mapping[str, np.ndarray], family: Family) -> tuple[dict[str, float], float, bool]:
    """``(optimum, best validation loss, interior)`` by a dense grid then a local refinement."""
    fit = _Fit(arrays["x_train"], arrays["y_train"])
    x_valid = np.asarray(arrays["x_valid"], dtype=np.float64)
    y_valid = np.asarray(arrays["y_valid"], dtype=np.float64)

    def at(log_wd: float | None, log_odds: float | None) -> float:
        diagonal = np.zeros_like(fit.second_moment)
        if log_wd is not None:
            diagonal = diagonal + math.exp(log_wd)
        if log_odds is not None:
            diagonal = diagonal + math.exp(log_odds) * fit.second_moment
        w, b = fit.solve(diagonal)
        return float(np.mean((x_valid @ w + b - y_valid) ** 2))

    if family in ("ridge", "dropout"):
        bounds = _LOG_WD if family == "ridge" else _LOG_ODDS

        def one(u: float) -> float:
            return at(u, None) if family == "ridge" else at(None, u)

        grid = np.linspace(*bounds, 301)
        values = np.array([one(u) for u in grid])
        i = int(np.argmin(values))
        interior = 0 < i < len(grid) - 1
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        found = minimize_scalar(one, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
        u, best = float(found.x), float(found.fun)
        if values[i] < best:
            u, best = float(grid[i]), float(values[i])
        name = HYPERPARAMETERS[family][0]
        return {name: constrained(name, u)}, best, interior

    grid_wd = np.linspace(*_LOG_WD, 61)
    grid_odds = np.linspace(*_LOG_ODDS, 61)
    table = np.array([[at(a, c) for c in grid_odds] for a in grid_wd])
    i, j = (int(k) for k in np.unravel_index(int(np.argmin(table)), table.shape))
    interior = bool(0 < i < len(grid_wd) - 1 and 0 < j < len(grid_odds) - 1)
    found = minimize(
        lambda v: at(float(v[0]), float(v[1])),
        np.array([grid_wd[i], grid_odds[j]]),
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-12, "maxiter": 4000},
    )
    point, best = (float(found.x[0]), float(found.x[1])), float(found.fun)
    if table[i, j] < best:
        point, best = (float(grid_wd[i]), float(grid_odds[j])), float(table[i, j])
    optimum = {"weight_decay": math.exp(point[0]), "input_dropout": constrained("input_dropout", point[1])}
    return optimum, best, interior


def start_ratios(problem: KnownProblem, factor: float = 30.0) -> dict[str, tuple[float, float]]:
    """Per hyperparameter, the loss ratios ``(below, above)`` of moving it alone by ``factor``."""
    ratios: dict[str, tuple[float, float]] = {}
    for name in problem.names:
        pair = []
        for f in (1.0 / factor, factor):
            moved = dict(problem.optimum)
            moved[name] = constrained(name, unconstrained(name, moved[name]) + math.log(f))
            pair.append(problem.ratio(moved))
        ratios[name] = (pair[0], pair[1])
    return ratios


def _informative(problem: KnownProblem, gain: float = 1.05) -> bool:
    """Whether a start 30× off the optimum, in each hyperparameter alone, loses more than
    ``gain`` on at least one side and something on both — so a tuner that does not move, or
    moves the wrong hyperparameter, fails."""
    return all(max(r) > gain and min(r) > 1.0 + (gain - 1.0) / 5 for r in start_ratios(problem).values())


def make_known_problem(
    family: Family, seed: int, n_test: int = 500, shape: Shape | None = None, max_tries: int = 200
) -> KnownProblem:
    """A problem of ``family`` drawn from ``seed`` whose optimum is inside the searched range and
    matters: moving each hyperparameter alone 30× off it costs more than 5% validation loss on
    one side and more than 1% on the other. Shapes that fail are drawn again from the same seed's
    stream; ``shape`` fixes the shape instead."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    for _ in range(max_tries):
        drawn = shape or _draw_shape(rng, family)
        arrays = _draw_arrays(rng, drawn, n_test)
        optimum, best, interior = _search(arrays, family)
        problem = KnownProblem(family, seed, drawn, arrays, optimum, best)
        if interior and _informative(problem):
            return problem
    raise RuntimeError(f"no {family} problem with an interior, informative optimum from seed {seed}")


def make_known_problems(family: Family, count: int, first_seed: int = 0) -> Sequence[KnownProblem]:
    """``count`` problems of ``family`` from consecutive seeds."""
    return [make_known_problem(family, seed) for seed in range(first_seed, first_seed + count)]
