"""The log-uniform kind: stnkit's kind conformance suite plus what makes it log-scaled."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from stnkit.testing import HyperKindConformance
from stnkit_example import LogUniformKind


class TestLogUniformConformance(HyperKindConformance):
    kind_cls = LogUniformKind
    # bounds float32 cannot represent exactly (1e-5, 0.3) are the ones that catch rounding bugs
    configs = [
        {"low": 1e-5, "high": 1.0, "init": 1e-3},
        {"low": 0.1, "high": 0.3, "init": 0.2},
        {"low": 1.0, "high": 1000.0, "init": 10.0, "per_example": False},
    ]


def kind(**options: float) -> LogUniformKind:
    return LogUniformKind(LogUniformKind.Config.model_validate({"init": 1e-2, **options}))


def test_the_midpoint_of_the_unconstrained_axis_is_the_geometric_mean() -> None:
    k = kind(low=1e-4, high=1.0)
    assert math.isclose(float(k.constrain(torch.tensor([0.0], dtype=torch.float64))), 1e-2, rel_tol=1e-12)


def test_equal_steps_in_u_are_equal_ratios_in_value_near_the_middle() -> None:
    k = kind(low=1e-6, high=1e2)
    u = torch.tensor([-0.02, 0.0, 0.02], dtype=torch.float64)
    x = k.constrain(u)
    assert math.isclose(float(x[1] / x[0]), float(x[2] / x[1]), rel_tol=1e-3)


def test_extreme_u_stays_exactly_within_the_bounds_in_float32() -> None:
    k = kind(low=1e-5, high=0.3)
    x = k.constrain(torch.tensor([-1e6, 1e6], dtype=torch.float32))
    assert float(x[0]) >= 1e-5 and float(x[1]) <= 0.3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"low": 0.0, "high": 1.0}, "greater than 0"),
        ({"low": 1.0, "high": 0.5}, "must be below high"),
        ({"low": 0.1, "high": 1.0, "init": 2.0}, "strictly between"),
    ],
)
def test_bad_declarations_are_rejected(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LogUniformKind.Config.model_validate({"init": 0.5, **options})
