"""Known answer: in the paper's linear setting STN must find the best weight decay.

The ridge problem's validation loss as a function of weight decay is known in closed form, so
the weight decay STN ends with can be scored exactly against the best one over all values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import stnkit
import stnkit.response.stn as stn_module
from stnkit_tabular.synthetic import make_ridge_problem, save_problem, validation_loss

RECIPE = Path(__file__).parents[1] / "recipes" / "toy-ridge.yaml"


def best_closed_form(arrays: dict[str, np.ndarray]) -> tuple[float, float]:
    grid = np.logspace(-6, 3, 2000)
    losses = np.array([validation_loss(arrays, g) for g in grid])
    i = int(np.argmin(losses))
    # refine around the grid minimum
    fine = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 400)
    fine_losses = np.array([validation_loss(arrays, g) for g in fine])
    j = int(np.argmin(fine_losses))
    return float(fine[j]), float(fine_losses[j])


def tuned_ratio(tmp_path: Path, *overrides: str) -> tuple[float, float, float]:
    """Run the toy-ridge recipe on a freshly made problem; return (final wd, best wd, loss ratio)."""
    arrays = make_ridge_problem(seed=7)
    data = save_problem(arrays, tmp_path / "ridge.npz")
    result = stnkit.run(RECIPE, overrides=[f"data.path={data}", *overrides], out_dir=tmp_path / "runs")
    assert result.status == "completed"
    final = result.end.final_values["weight_decay"]
    best_wd, best_loss = best_closed_form(arrays)
    return final, best_wd, validation_loss(arrays, final) / best_loss


def test_stn_finds_the_best_weight_decay(tmp_path: Path) -> None:
    start = 0.01
    final, best_wd, ratio = tuned_ratio(tmp_path)
    arrays = make_ridge_problem(seed=7)
    assert validation_loss(arrays, start) > 1.5 * validation_loss(arrays, best_wd)  # the start is poor
    assert ratio < 1.05, f"STN ended at weight decay {final:.4g}, best is {best_wd:.4g}"


def test_the_check_catches_a_broken_hypergradient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the hypergradient's sign flipped, the same check must fail."""
    real_grad = torch.autograd.grad

    def flipped(outputs, inputs, **kwargs):  # type: ignore[no-untyped-def]
        return tuple(None if g is None else -g for g in real_grad(outputs, inputs, **kwargs))

    monkeypatch.setattr(stn_module.torch.autograd, "grad", flipped)
    final, best_wd, ratio = tuned_ratio(tmp_path)
    assert ratio > 1.05, f"a broken hypergradient still reached {final:.4g} (best {best_wd:.4g})"


INTERVAL = (
    'hyperparameters.weight_decay={"kind": "interval", "low": 0, "high": 20, "init": 0.01, '
    '"per_example": false}'
)


@pytest.mark.parametrize("hypernet_input", ["centered", "unconstrained"])
def test_stn_finds_it_with_an_interval_kind(tmp_path: Path, hypernet_input: str) -> None:
    """The weight decay declared as an ``interval`` (0, 20). Fed an input linear in the
    unconstrained value, STN finds the optimum whatever the kind (a sigmoid position in the range
    would have a slope of ~5e-4 near 0.01/20, and the hypergradient in ``h`` would vanish)."""
    response = f'response={{"name": "stn", "hypernet_input": "{hypernet_input}"}}'
    final, best_wd, ratio = tuned_ratio(tmp_path, INTERVAL, response)
    assert ratio < 1.05, f"STN ({hypernet_input}) ended at weight decay {final:.4g}, best is {best_wd:.4g}"
