"""Hyperparameter kinds and the hyperparameter space."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stnkit.hyper import HyperSpace, IntegerKind, IntervalKind, PositiveKind, UnitKind
from stnkit.hyper.kinds import HyperConfig
from stnkit.testing import HyperKindConformance, make_space


class TestUnitKind(HyperKindConformance):
    kind_cls = UnitKind
    configs = [{"init": 0.05}, {"init": 0.5}, {"init": 0.95}]


class TestIntervalKind(HyperKindConformance):
    kind_cls = IntervalKind
    configs = [
        {"low": -1.0, "high": 3.0, "init": 0.0},
        {"low": 0.0, "high": 0.5, "init": 0.1},
        {"low": 0.0, "high": 0.3, "init": 0.1},  # 0.3 has no float32 form: it rounded up
        {"low": 0.1, "high": 0.7, "init": 0.5},  # 0.1 rounds up, 0.7 down
    ]


class TestPositiveKind(HyperKindConformance):
    kind_cls = PositiveKind
    configs = [{"init": 1e-4}, {"init": 2.0}, {"lower": 1.0, "init": 1.5}, {"lower": 1e-5, "init": 1e-3}]


class TestIntegerKind(HyperKindConformance):
    kind_cls = IntegerKind
    configs = [
        {"low": 0, "high": 4, "init": 1},
        {"low": 2, "high": 24, "init": 16},
        {"low": 3, "high": 3, "init": 3},
    ]


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        (UnitKind, {"init": 1.0}),
        (UnitKind, {"init": 0.0}),
        (IntervalKind, {"low": 1, "high": 0, "init": 0.5}),
        (IntervalKind, {"low": 0, "high": 1, "init": 1.0}),
        (PositiveKind, {"init": 0.0}),
        (PositiveKind, {"lower": 2.0, "init": 1.0}),
        (IntegerKind, {"low": 0, "high": 4, "init": 5}),
        (IntegerKind, {"low": 0, "high": 4, "init": 1.5}),
        (IntegerKind, {"low": 5, "high": 4, "init": 5}),
        (UnitKind, {"init": 0.5, "scale": 0.0}),
        (UnitKind, {"init": 0.5, "colour": "red"}),
    ],
)
def test_invalid_declarations_are_rejected(kind: type, config: dict) -> None:
    with pytest.raises(ValidationError):
        kind.Config.model_validate(config)


@settings(max_examples=40, deadline=None)
@given(
    value=st.integers(min_value=0, max_value=30),
    u=st.floats(min_value=-30, max_value=30, allow_nan=False),
)
def test_integer_values_stay_in_range(value: int, u: float) -> None:
    kind = IntegerKind(IntegerKind.Config(low=0, high=value, init=0))
    used = kind.discretize(kind.constrain(torch.tensor([u])))
    assert 0 <= int(used) <= value


def test_integer_initial_value_sits_mid_bucket() -> None:
    kind = IntegerKind(IntegerKind.Config(low=0, high=10, init=4))
    value = float(kind.constrain(torch.tensor(kind.initial_unconstrained(), dtype=torch.float64)))
    assert value == pytest.approx(4.5)


def space() -> HyperSpace:
    return make_space(
        {
            "p": {"kind": "unit", "init": 0.2},
            "q": {"kind": "unit", "init": 0.4, "per_example": False},
            "wd": {"kind": "positive", "init": 0.01, "tune": False},
            "n": {"kind": "integer", "low": 0, "high": 8, "init": 2, "scale": 2.0},
        },
        constants={"c": 0.5},
    )


def test_space_values_and_scales_start_at_the_declaration() -> None:
    s = space()
    values = s.values()
    assert values["p"] == pytest.approx(0.2, rel=1e-5)
    assert values["wd"] == pytest.approx(0.01, rel=1e-4)
    assert math.floor(values["n"]) == 2
    scales = s.scales()
    assert scales["p"] == pytest.approx(0.5)
    assert scales["n"] == pytest.approx(2.0)
    assert scales["wd"] == 0.0  # untuned: never perturbed


def test_sample_is_per_example_or_shared() -> None:
    torch.manual_seed(0)
    s = space()
    lam = s.sample(64)
    assert lam.shape == (64, 4)
    p, q, wd, n = (lam[:, i] for i in range(4))
    assert p.std() > 0.1 and n.std() > 0.5  # per example
    assert torch.all(q == q[0])  # one draw per batch
    assert torch.all(wd == s.h[2])  # untuned: fixed at h


def test_sample_statistics_match_sigma() -> None:
    torch.manual_seed(1)
    s = space()
    lam = s.sample(20000)
    lam = lam.detach()
    assert float(lam[:, 0].mean()) == pytest.approx(float(s.h[0].detach()), abs=0.02)
    assert float(lam[:, 0].std()) == pytest.approx(0.5, rel=0.03)


def test_gradients_reach_h_and_s_only_for_tuned_entries() -> None:
    s = space()
    lam = s.sample(16)
    values = s.constrain(lam)
    values.sum().backward()
    assert s.h.grad is not None and s.s.grad is not None
    assert s.h.grad[2] == 0 and s.s.grad[2] == 0
    assert (s.h.grad[[0, 1, 3]] != 0).all()
    assert (s.s.grad[[0, 1, 3]] != 0).all()


def test_entropy_counts_tuned_entries() -> None:
    s = space()
    expected = sum(math.log(v) for n, v in s.scales().items() if n != "wd")
    assert float(s.entropy().detach()) == pytest.approx(expected, rel=1e-5)


def test_batch_holds_constants_and_discrete_values() -> None:
    s = space()
    hp = s.batch(s.expand(3), hnet=None)
    assert torch.allclose(hp["c"], torch.full((3,), 0.5))
    assert hp.discrete("n").tolist() == [2, 2, 2]
    assert hp.scalar("q") == pytest.approx(0.4, rel=1e-5)


def test_set_values_moves_h() -> None:
    s = space()
    s.set_values({"p": 0.7, "wd": 0.3})
    assert s.values()["p"] == pytest.approx(0.7, rel=1e-5)
    assert s.values()["wd"] == pytest.approx(0.3, rel=1e-5)


# -- the kind suite must fail for broken kinds ----------------------------------------------------


class _RoundedInterval(IntervalKind):
    """The interval kind as it was: clamped to bounds rounded to the nearest float32."""

    def constrain(self, u: torch.Tensor) -> torch.Tensor:
        width = self.config.high - self.config.low
        return (self.config.low + width * torch.sigmoid(u)).clamp(self.low, self.high)


class _LaxConfigInterval(IntervalKind):
    class Config(HyperConfig):  # no check that init lies within [low, high]
        low: float
        high: float


def _suite(kind: type, configs: list[dict]) -> HyperKindConformance:
    suite = HyperKindConformance()
    suite.kind_cls = kind  # type: ignore[misc]
    suite.configs = configs  # type: ignore[misc]
    return suite


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        (_RoundedInterval, "test_bounds_never_violated"),
        (_LaxConfigInterval, "test_config_rejects_init_outside_the_range"),
    ],
)
def test_kind_suite_catches_broken_kinds(kind: type, check: str) -> None:
    good = _suite(IntervalKind, [{"low": 0.0, "high": 0.3, "init": 0.1}])
    getattr(good, check)()  # the same check passes for the real kind
    broken = _suite(kind, [{"low": 0.0, "high": 0.3, "init": 0.1}])
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        getattr(broken, check)()
