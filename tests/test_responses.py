"""The built-in response models pass the response conformance suite."""

from __future__ import annotations

from stnkit.response import FixedResponse, STNResponse
from stnkit.testing import ResponseConformance


class TestSTNResponse(ResponseConformance):
    response_cls = STNResponse


class TestFixedResponse(ResponseConformance):
    response_cls = FixedResponse


class TestFixedSchedule(ResponseConformance):
    response_cls = FixedResponse
    config = {"schedule": {"steps": [1, 3], "values": {"weight_decay": [0.2, 0.05]}}}

    def test_schedule_sets_values_by_step(self) -> None:
        parts, response, _ = self.parts()
        seen = []
        for step in range(1, 6):
            response.before_weight_step(step)
            seen.append(round(parts.space.values()["weight_decay"], 6))
        assert seen == [0.2, 0.2, 0.05, 0.05, 0.05]
