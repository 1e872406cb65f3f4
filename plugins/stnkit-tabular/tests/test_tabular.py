"""The tabular plugin: loader checks and the stn-mlp model conformance suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stnkit.data import Batch, BuildContext, DataInfo
from stnkit.errors import DataError
from stnkit.task import ClassificationTask, RegressionTask
from stnkit.testing import ModelConformance
from stnkit_tabular import STNMLP, TabularData, make_ridge_problem, ridge_solution
from stnkit_tabular.synthetic import save_problem, validation_loss


def load(path: Path, **options: object) -> TabularData:
    config = TabularData.Config.model_validate({"path": path, **options})
    return TabularData(config, BuildContext())


def test_regression_arrays_make_a_regression_task(tmp_path: Path) -> None:
    data = load(save_problem(make_ridge_problem(n_train=33), tmp_path / "r.npz"), batch_size=10)
    info = data.info
    assert isinstance(info.task, RegressionTask)
    assert info.n_train == 33 and info.steps_per_epoch == 4 and info.n_test == 400
    batches = list(data.train_batches(1, torch.Generator().manual_seed(0)))
    assert [b.size for b in batches] == [10, 10, 10, 3]
    assert batches[0].first and not batches[1].first
    seen = torch.cat([b.targets for b in batches])
    assert torch.equal(seen.sort().values, data.splits["train"][1].sort().values)


def test_integer_targets_make_a_classification_task(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(30, 4)),
        "y_train": rng.integers(0, 3, 30),
        "x_valid": rng.normal(size=(10, 4)),
        "y_valid": rng.integers(0, 3, 10),
    }
    np.savez(tmp_path / "c.npz", **arrays)
    data = load(tmp_path / "c.npz")
    assert isinstance(data.info.task, ClassificationTask)
    assert data.info.output_size == 3 and data.test_batches() is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((3, 2))}, "missing arrays"),
        (
            {
                "x_train": np.zeros((3, 2)),
                "y_train": np.zeros(4),
                "x_valid": np.zeros((2, 2)),
                "y_valid": np.zeros(2),
            },
            "x_train has 3 rows but y_train has 4",
        ),
        (
            {
                "x_train": np.zeros((3, 2)),
                "y_train": np.zeros(3),
                "x_valid": np.zeros((2, 5)),
                "y_valid": np.zeros(2),
            },
            "feature shapes differ",
        ),
        (
            {
                "x_train": np.full((3, 2), np.nan),
                "y_train": np.zeros(3),
                "x_valid": np.zeros((2, 2)),
                "y_valid": np.zeros(2),
            },
            "finite",
        ),
        (
            {
                "x_train": np.zeros((3, 2)),
                "y_train": np.zeros(3),
                "x_valid": np.zeros((2, 2)),
                "y_valid": np.zeros(2, dtype=int),
            },
            "all integer",
        ),
    ],
)
def test_malformed_files_give_a_clear_error(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load(tmp_path / "bad.npz")


def test_not_an_npz_file(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        load(tmp_path / "x.npz")


def test_ridge_solution_solves_the_normal_equations() -> None:
    arrays = make_ridge_problem()
    w, b = ridge_solution(arrays["x_train"], arrays["y_train"], 0.3)
    x, y = arrays["x_train"].astype(np.float64), arrays["y_train"].astype(np.float64)
    residual = x @ w + b - y
    grad_w = 2 * x.T @ residual / len(x) + 2 * 0.3 * w
    grad_b = 2 * residual.mean()
    assert np.abs(grad_w).max() < 1e-8 and abs(grad_b) < 1e-8
    assert validation_loss(arrays, 0.78) < validation_loss(arrays, 1e-4)


def test_mlp_penalty_is_weight_decay_times_squared_weights() -> None:
    from stnkit.testing import make_space

    info = DataInfo(RegressionTask(), (4,), 1, 8, 8)
    space = make_space(
        {"weight_decay": {"kind": "positive", "init": 0.2, "per_example": False}}, constants={"dropout": 0.0}
    )
    model = STNMLP(STNMLP.Config(hidden_sizes=[5]), info, space.size)
    model.train()
    out = model(torch.randn(3, 4), space.batch(space.expand(3), hnet=None))
    weights = sum(float(layer.weight[0].detach().pow(2).sum()) for layer in model.layers)
    assert float(out.penalty.detach()) == pytest.approx(0.2 * weights, rel=1e-4)  # type: ignore[union-attr]


class TestMLPConformance(ModelConformance):
    model_cls = STNMLP
    config = {"hidden_sizes": [8, 6], "activation": "tanh"}
    hyperparameters = {
        "weight_decay": {"kind": "positive", "init": 0.01},
        "dropout": {"kind": "unit", "init": 0.2},
    }

    def make_data(self) -> DataInfo:
        return DataInfo(ClassificationTask(3), (5,), 1, 16, 16, output_size=3)

    def make_batch(self, batch_size: int) -> Batch:
        g = torch.Generator().manual_seed(batch_size)
        return Batch(torch.randn(batch_size, 5, generator=g), torch.randint(0, 3, (batch_size,), generator=g))

    def test_hypergradient_reaches_every_tuned_hyperparameter(self) -> None:
        # weight decay and dropout act only in training, so their hypergradient comes purely
        # from the response: exactly what this check must see
        super().test_hypergradient_reaches_every_tuned_hyperparameter()


def test_stn_mlp_is_a_converted_plain_torch_mlp() -> None:
    from stnkit.convert import ConvertedModel
    from stnkit_tabular.mlp import MLP

    info = DataInfo(RegressionTask(), (4,), 1, 8, 8)
    model = STNMLP(STNMLP.Config(hidden_sizes=[5]), info, 3)
    assert isinstance(model, ConvertedModel) and type(model.module) is MLP
    assert [row.path for row in model.report] == ["layers.0", "layers.1", "input_dropout", "dropout.0"]
