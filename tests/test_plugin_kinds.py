"""Kinds as a third-party plugin writes them: what consumers receive, what is validated, what
replays and displays use, and whether tuning works without the author choosing the hypernetwork's
input. The ordered-choice kind below is the shape of the one an outside plugin author wrote
(options 0, 4, 8, 14), which none of the built-in kinds is."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from pydantic import Field, model_validator
from torch import Tensor

import stnkit
from stnkit import hookimpl
from stnkit.analysis.replay import plan_replay
from stnkit.build import resolve
from stnkit.errors import RecipeError
from stnkit.hyper.kinds import HyperConfig, HyperKind, IntegerKind, clamp_to
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import load_recipe
from stnkit.runner import validate
from stnkit.testing import HyperKindConformance, make_space
from tests.helpers import write_recipe


class ChoiceKind(HyperKind):
    """An ordered choice of numbers: a continuous value over ``[options[0], top]``, used as the
    largest option at or below it; ``top`` extends the last option's bucket by the last gap."""

    name = "choice"
    discrete = True

    class Config(HyperConfig):
        options: list[float] = Field(min_length=2)

        @model_validator(mode="after")
        def _check(self) -> ChoiceKind.Config:
            if sorted(set(self.options)) != self.options:
                raise ValueError("options must be increasing")
            if self.init not in self.options:
                raise ValueError(f"init ({self.init:g}) must be one of the options {self.options}")
            return self

    config: Config

    @property
    def low(self) -> float:
        return self.config.options[0]

    @property
    def high(self) -> float:
        options = self.config.options
        return 2 * options[-1] - options[-2]

    def constrain(self, u: Tensor) -> Tensor:
        return clamp_to(self.low + (self.high - self.low) * torch.sigmoid(u), self.low, self.high)

    def unconstrain(self, value: Tensor) -> Tensor:
        p = (value - self.low) / (self.high - self.low)
        return torch.log(p) - torch.log1p(-p)

    def initial_unconstrained(self) -> float:
        edges = [*self.config.options, self.high]
        i = edges.index(self.config.init)
        middle = (edges[i] + edges[i + 1]) / 2
        return float(self.unconstrain(torch.tensor(middle, dtype=torch.float64)))

    def discretize(self, value: Tensor) -> Tensor:
        options = torch.tensor(self.config.options, dtype=value.dtype, device=value.device)
        index = torch.searchsorted(options, value.contiguous(), right=True) - 1
        return options[index.clamp(0, len(options) - 1)]


CHOICE_PLUGIN = SimpleNamespace(
    stnkit_register_hyperparameter_kinds=hookimpl(lambda register: register(ChoiceKind))
)


@pytest.fixture
def plugins() -> Plugins:
    return load_plugins(extra=[("choice-test", CHOICE_PLUGIN)])


class TestChoiceKind(HyperKindConformance):
    kind_cls = ChoiceKind
    configs: ClassVar[list[dict[str, Any]]] = [
        {"options": [0, 4, 8, 14], "init": 4},
        {"options": [0.5, 1.5], "init": 1.5},
    ]


# -- bug 1: a consumer receives the values the kind produces -----------------------------------


def test_integer_kind_for_a_continuous_rate_is_rejected(tmp_path: Path) -> None:
    # the reproduction: an integer 0..1 dropout validated and trained stn-mlp at a rate of 1.5
    recipe = write_recipe(
        tmp_path,
        model__hidden_sizes=[16],
        hyperparameters__dropout={"kind": "integer", "low": 0, "high": 1, "init": 1},
    )
    with pytest.raises(RecipeError) as info:
        validate(recipe, [], load_plugins())
    message = str(info.value)
    assert "hyperparameters.dropout.kind" in message
    assert "needs a continuous value" in message and "'integer'" in message


def test_components_receive_discretized_values() -> None:
    space = make_space({"n": {"kind": "integer", "low": 0, "high": 1, "init": 1}})
    u = torch.tensor([[-30.0], [-0.5], [0.9], [17.0], [30.0]])
    hp = space.batch(u, hnet=u)
    received = hp["n"]
    assert set(received.tolist()) <= {0.0, 1.0}  # was 1.5 and 1.99...
    assert received.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert hp.discrete("n").tolist() == [0, 0, 1, 1, 1]
    # the hypernetwork still sees the continuous value: that is where the gradient comes from
    assert torch.equal(hp.hnet, u)  # type: ignore[arg-type]


def test_range_check_uses_the_discretized_values(plugins: Plugins, tmp_path: Path) -> None:
    # weight decay accepts [0, inf): a choice over [0, 14] fits; over [-1, 3] does not
    fits = write_recipe(
        tmp_path,
        hyperparameters__weight_decay={"kind": "choice", "options": [0, 4, 8, 14], "init": 4},
    )
    resolve(load_recipe(fits, []), plugins)
    below = write_recipe(
        tmp_path, hyperparameters__weight_decay={"kind": "choice", "options": [-1, 3], "init": 3}
    )
    with pytest.raises(
        RecipeError, match=r"gives values in \[-1, 3\] but model 'stn-mlp' accepts only \[0, inf\]"
    ):
        resolve(load_recipe(below, []), plugins)


def test_a_kind_that_discretizes_is_discrete() -> None:
    class Rounded(HyperKind):  # an author who implemented discretize and set nothing else
        name = "rounded-test"

        def discretize(self, value: Tensor) -> Tensor:
            return torch.round(value)

    assert Rounded.discrete and not Rounded.integer
    assert not HyperKind.discrete and IntegerKind.discrete


def test_used_range_defaults_to_the_discretized_bounds() -> None:
    kind = ChoiceKind(ChoiceKind.Config(options=[0, 4, 8, 14], init=4))
    assert kind.discrete and kind.used_range() == (0.0, 14.0)
    integer = IntegerKind(IntegerKind.Config(low=2, high=5, init=3))
    assert integer.used_range() == (2.0, 5.0)  # the continuous value reaches 6
    assert integer.used_value(5.999) == 5.0 and integer.used_value(2.0) == 2.0


# -- bug 2: replay --final asks the kind -------------------------------------------------------


def test_final_replay_asks_the_kind_for_the_used_value(plugins: Plugins, tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        model__hidden_sizes=[4],
        hyperparameters__weight_decay={
            "kind": "choice",
            "options": [0, 4, 8, 14],
            "init": 4,
            "tune": False,
            "per_example": False,
        },
        hyperparameters__dropout={"kind": "unit", "init": 0.1},
        train__epochs=1,
        train__warmup_epochs=0,
    )
    result = stnkit.run(recipe, plugins=plugins)
    assert result.status == "completed" and result.path is not None
    record = stnkit.open_run(result.path)
    recorded = float(record.final["weight_decay"])
    assert recorded == pytest.approx(6.0, abs=1e-4)  # the continuous value, mid-bucket of 4
    plan = plan_replay(result.path, final=True, plugins=plugins)
    assert plan.recipe.hyperparameters["weight_decay"]["init"] == 4.0  # flooring gave 6
    resolve(plan.recipe, plugins)  # and it validates: 6 is not one of the options


# -- bug 3: bounds hold exactly in float32 ------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_builtin_bounds_hold_in_every_dtype(dtype: torch.dtype) -> None:
    space = make_space(
        {
            "a": {"kind": "interval", "low": 0, "high": 0.3, "init": 0.1},
            "b": {"kind": "positive", "lower": 1e-5, "init": 1e-3},
            "c": {"kind": "interval", "low": 0.1, "high": 0.7, "init": 0.2},
        }
    )
    u = torch.tensor([-1e6, -17.0, 17.0, 1e6], dtype=dtype)
    for kind in space.kinds.values():
        values = kind.constrain(u).double()
        assert bool((values >= kind.low).all()) and bool((values <= kind.high).all()), (kind.config, values)


def test_reported_float32_escapes_are_gone() -> None:
    interval = make_space({"a": {"kind": "interval", "low": 0, "high": 0.3, "init": 0.1}}).kinds["a"]
    assert float(interval.constrain(torch.tensor([17.0]))) <= 0.3  # was 0.30000001
    positive = make_space({"b": {"kind": "positive", "lower": 1e-5, "init": 1e-3}}).kinds["b"]
    assert float(positive.constrain(torch.tensor([-1e6]))) >= 1e-5  # was 9.9999997e-06


# -- presentation --------------------------------------------------------------------------------


def test_used_value_is_identity_for_continuous_kinds() -> None:
    space = make_space({"p": {"kind": "unit", "init": 0.3}})
    assert space.kinds["p"].used_value(0.123456789) == 0.123456789
    assert not space.kinds["p"].discrete and not math.isnan(space.kinds["p"].used_value(0.5))


class LogKind(HyperKind):
    """A log-scaled kind written the obvious way, ``value = exp(u)``."""

    name = "log-direct"

    class Config(HyperConfig):
        init: float = Field(gt=1e-6, lt=1e3)

    @property
    def low(self) -> float:
        return 1e-6

    @property
    def high(self) -> float:
        return 1e3

    def constrain(self, u: Tensor) -> Tensor:
        return clamp_to(torch.exp(u.clamp(math.log(1e-6), math.log(1e3))), 1e-6, 1e3)

    def unconstrain(self, value: Tensor) -> Tensor:
        return torch.log(value)


class TestLogKind(HyperKindConformance):
    kind_cls = LogKind
    configs: ClassVar[list[dict[str, Any]]] = [{"init": 0.01}, {"init": 3e-6}]


def test_a_third_party_log_kind_tunes(tmp_path: Path) -> None:
    """The toy-ridge run with weight decay declared by :class:`LogKind` must find the best weight
    decay, as the built-in ``positive`` kind does: the response's centred input works whatever
    the kind's units."""
    from stnkit_tabular.synthetic import make_ridge_problem, save_problem, validation_loss

    plugins = load_plugins(
        extra=[
            (
                "log-test",
                SimpleNamespace(
                    stnkit_register_hyperparameter_kinds=hookimpl(lambda register: register(LogKind))
                ),
            )
        ]
    )
    arrays = make_ridge_problem(seed=7)
    data = save_problem(arrays, tmp_path / "ridge.npz")
    result = stnkit.run(
        Path(__file__).parents[1] / "recipes" / "toy-ridge.yaml",
        overrides=[
            f"data.path={data}",
            "hyperparameters.weight_decay={kind: log-direct, init: 0.01, per_example: false}",
        ],
        store=False,
        plugins=plugins,
    )
    assert result.status == "completed" and result.end is not None
    final = result.end.final_values["weight_decay"]
    best = min(validation_loss(arrays, g) for g in np.logspace(-6, 3, 3000))
    assert validation_loss(arrays, 0.01) > 1.5 * best  # the start is poor
    assert validation_loss(arrays, final) < 1.05 * best, f"ended at weight decay {final:.4g}"


# -- presentation: the value a component uses is the value displayed ----------------------------


@pytest.fixture
def integer_run(tmp_path: Path) -> tuple[Path, str]:
    """A stored tuning run whose weight decay is an integer 0..3 (continuous 1.5 at the start),
    and its plain progress output."""
    import io

    from rich.console import Console

    from stnkit.progress import PlainProgress

    recipe = write_recipe(
        tmp_path,
        hyperparameters__weight_decay={
            "kind": "integer",
            "low": 0,
            "high": 3,
            "init": 1,
            "per_example": False,
        },
        train__epochs=2,
        train__warmup_epochs=0,
    )
    buffer = io.StringIO()
    view = PlainProgress(Console(file=buffer, width=200, color_system=None), interval=0.0)
    result = stnkit.run(recipe, observers=[view])
    assert result.status == "completed" and result.path is not None
    return result.path, buffer.getvalue()


def _shown(text: str, name: str) -> list[float]:
    import re

    return [float(v) for v in re.findall(rf"{name}=([-0-9.e+]+)", text)]


def test_progress_shows_used_values(integer_run: tuple[Path, str]) -> None:
    path, output = integer_run
    shown = _shown(output, "weight_decay")
    assert len(shown) > 5
    assert all(v == math.floor(v) and 0 <= v <= 3 for v in shown), shown
    recorded = stnkit.open_run(path).values("weight_decay")
    assert not np.all(recorded == np.floor(recorded))  # the file keeps the continuous values


def test_show_export_and_plot_display_used_values(
    integer_run: tuple[Path, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import json

    from stnkit.analysis.export import record_to_json
    from stnkit.analysis.kinds import Presentation, rebuild_kinds
    from stnkit.analysis.plot import trajectory
    from stnkit.cli import main

    path, _ = integer_run
    record = stnkit.open_run(path)
    recorded = record.values("weight_decay")
    assert main(["show", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["hyperparameters"]["weight_decay"]
    assert info["initial"] == pytest.approx(1.5, abs=1e-5)  # recorded: the continuous value
    assert info["used"]["initial"] == 1.0
    assert info["used"]["final"] == math.floor(info["final"])
    assert main(["show", str(path)]) == 0
    table = capsys.readouterr().out
    assert "1.0000" in table and "1.5000" not in table
    present = Presentation.of(record, load_plugins())
    exported = record_to_json(record, present)
    assert exported["hyper"]["weight_decay"] == pytest.approx(recorded.tolist())
    assert exported["hyper"]["used.weight_decay"] == np.floor(recorded).tolist()
    assert exported["hyperparameters"]["used"]["initial"]["weight_decay"] == 1.0
    assert main(["export", str(path), "--format", "csv", "-o", str(tmp_path / "csv")]) == 0
    header = (tmp_path / "csv" / f"{path.stem}.hyper.csv").read_text().splitlines()[0].split(",")
    assert "weight_decay" in header and "used.weight_decay" in header
    kind = rebuild_kinds(record, load_plugins())["weight_decay"]
    drawn = trajectory(record, "weight_decay", kind)
    assert np.array_equal(drawn.values, np.floor(drawn.values)) and drawn.values[0] == 1.0
    assert drawn.low is not None and np.array_equal(drawn.low, np.floor(drawn.low))


def test_a_kind_can_ask_for_a_log_axis(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from stnkit.analysis.plot import _panel_hyper

    class LogAxisKind(LogKind):
        name = "log-axis"
        log_scale = True

    plugin = SimpleNamespace(
        stnkit_register_hyperparameter_kinds=hookimpl(lambda register: register(LogAxisKind))
    )
    plugins = load_plugins(extra=[("log-axis", plugin)])
    recipe = write_recipe(
        tmp_path,
        hyperparameters__weight_decay={"kind": "log-axis", "init": 0.01, "per_example": False},
        train__epochs=1,
    )
    result = stnkit.run(recipe, plugins=plugins)
    assert result.path is not None
    record = stnkit.open_run(result.path)
    from stnkit.analysis.kinds import rebuild_kinds

    axes = Figure().subplots()
    _panel_hyper(axes, "weight_decay", [record], [rebuild_kinds(record, plugins)])
    assert axes.get_yscale() == "log"
    plain = Figure().subplots()
    _panel_hyper(plain, "weight_decay", [record], [{}])  # kind not rebuilt: no request, linear axis
    assert plain.get_yscale() == "linear"


def test_compare_shows_used_final_values(
    integer_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from stnkit.cli import main

    path, _ = integer_run
    final = float(stnkit.open_run(path).final["weight_decay"])
    assert main(["compare", str(path), str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["final"]["weight_decay"]
    assert shown == [math.floor(final)] * 2 and final != math.floor(final)
