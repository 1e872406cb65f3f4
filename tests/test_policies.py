"""The policies around the loop: their verdicts, the plateau rule's memory across a checkpoint,
and rank agreement only where ranks can differ."""

from __future__ import annotations

import pytest
import torch

from stnkit import distributed
from stnkit.loop import LoopState
from stnkit.policies import LrDecay, MaxSteps, Patience, Policies, StopRequest, Verdict

LR_MESSAGE = "the learning rate fell below lr_decay.stop_below (0.01)"


def hand_plateau(losses: list[float], lr: float, factor: float, patience: int) -> list[float]:
    """The plateau rule written out: decay once more than ``patience`` epochs passed without a new
    best loss (or since the last decay)."""
    best, since, out = float("inf"), 0, []
    for loss in losses:
        if loss < best:
            best, since = loss, 0
        else:
            since += 1
        if since > patience:
            lr, since = lr * factor, 0
        out.append(lr)
    return out


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_the_plateau_rule_decays_as_written_and_resumes_from_its_state() -> None:
    losses = [1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.86, 0.87, 0.7, 0.71, 0.72, 0.73]
    expected = hand_plateau(losses, 0.1, 0.5, 1)
    optimizer = _optimizer(0.1)
    rule = LrDecay(optimizer, "plateau", 0.5, 0.0, 1, None, None)
    seen = []
    for loss in losses[:5]:
        rule.after_epoch(LoopState(), loss)
        seen.append(optimizer.param_groups[0]["lr"])
    # a resumed run: a fresh optimizer and rule, given the checkpointed lr and the rule's state
    resumed_optimizer = _optimizer(seen[-1])
    resumed = LrDecay(resumed_optimizer, "plateau", 0.5, 0.0, 1, None, None)
    resumed.load_state_dict(rule.state_dict())
    for loss in losses[5:]:
        resumed.after_epoch(LoopState(), loss)
        seen.append(resumed_optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx(expected) and min(seen) < 0.1 / 4


def test_a_learning_rate_stop_keeps_its_message_beside_an_early_stop() -> None:
    loop = LoopState(since_best=5)
    optimizer = _optimizer(0.001)
    decay = LrDecay(optimizer, "nonmonotone", 0.5, 0.0, None, 1, 0.01)
    for order in ([Patience(2), decay], [decay, Patience(2)]):
        verdict = Policies(order).after_epoch(loop, 1.0)
        assert verdict.finish == LR_MESSAGE
    assert (Verdict(finish="") | Verdict()).finish == ""
    assert Verdict().finish is None


def test_ranks_agree_only_on_what_can_differ() -> None:
    calls: list[tuple[bool, bool]] = []

    class Ranks(distributed.Distributed):
        def agree(self, any_rank: bool, main_rank: bool = False) -> tuple[bool, bool]:
            calls.append((any_rank, main_rank))
            return True, False  # another rank was asked to stop

    stop = StopRequest()
    policies = Policies([MaxSteps(10), stop], Ranks())
    assert policies.after_step(LoopState(step=3)) == Verdict(interrupt=True)  # agreed across ranks
    stop.request()
    # reaching max_steps is the same on every rank: no collective, and no stop either
    assert policies.after_step(LoopState(step=10)) == Verdict(finish="")
    assert calls == [(False, False)]
