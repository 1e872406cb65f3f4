"""The rules around the bilevel loop: learning rates, when to stop, when to checkpoint.

The loop (:meth:`stnkit.engine.Engine._train`) only trains and evaluates; everything that decides
*around* it is a small policy object with one interface, :class:`Policy`, called at the loop's
boundaries:

- ``before_weight_step`` / ``before_hyper_step``: set a learning rate (``train.lr_schedule``,
  ``train.hyper_lr_schedule``);
- ``after_step``, after a weight step and the hyper steps it was due: may ask to finish training
  (``train.max_steps``), to checkpoint (``store.checkpoint_steps``) or to stop now (Ctrl-C);
- ``after_epoch``, after an epoch's validation pass: may change the learning rate
  (``train.lr_decay``) and ask to finish training (``train.patience``, ``lr_decay.stop_below``,
  ``train.max_steps``).

Each boundary returns a :class:`Verdict`; :class:`Policies` merges them and makes every rank agree
on the decisions that can differ between ranks (a signal reaches one rank; the clock is rank 0's)
with one collective, so under torchrun all ranks checkpoint and stop together.

Policies are objects rather than observers on the lifecycle hooks because the hooks only watch:
under torchrun they reach rank 0 alone, and a weight step's hook runs before its hyper steps,
while a policy must run on every rank, after the whole cycle, and change the run. A policy with
memory (the plateau rule's count of bad epochs, the non-monotone rule's loss history) keeps it in
its own ``state_dict``, saved in every checkpoint, so a resumed run decides exactly as one that
never stopped. The plateau rule is torch's :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau`,
set to compare losses exactly; the schedules stay closed forms of the step count
(:func:`stnkit.optim.schedule_lr`), which need no state to resume.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from stnkit import distributed
from stnkit.events import Plan
from stnkit.loop import LoopState
from stnkit.optim import schedule_lr

__all__ = [
    "CheckpointCadence",
    "HyperLrSchedule",
    "LrDecay",
    "MaxSteps",
    "Patience",
    "Policies",
    "Policy",
    "StopRequest",
    "Verdict",
    "WeightLrSchedule",
]


@dataclass(frozen=True)
class Verdict:
    """What a policy asks for at a boundary.

    ``finish``: training ends after this epoch's validation pass, with this message for the run's
    end (``""``: none); ``None`` while training goes on. ``interrupt``: stop now with a
    checkpoint, as ``interrupted``. ``checkpoint``: checkpoint now and go on.
    """

    finish: str | None = None
    interrupt: bool = False
    checkpoint: bool = False

    def __or__(self, other: Verdict) -> Verdict:
        finishes = [f for f in (self.finish, other.finish) if f is not None]
        # the first policy with a message to give keeps it
        finish = next((f for f in finishes if f), finishes[0]) if finishes else None
        return Verdict(finish, self.interrupt or other.interrupt, self.checkpoint or other.checkpoint)


_GO_ON = Verdict()


class Policy:
    """One rule around the loop. Every method has a do-nothing default; override what applies."""

    #: the key of :meth:`state_dict` in a checkpoint; policies without memory need none
    name: ClassVar[str] = ""

    def before_weight_step(self, loop: LoopState) -> None:
        """``loop.step`` weight steps are done; the next one is about to be taken."""

    def before_hyper_step(self, loop: LoopState) -> None:
        """``loop.hyper_step`` hyper steps are done; the next one is about to be taken."""

    def after_step(self, loop: LoopState) -> Verdict:
        """A weight step and the hyper steps due after it are done."""
        return _GO_ON

    def after_epoch(self, loop: LoopState, val_loss: float) -> Verdict:
        """Epoch ``loop.epoch`` and its validation pass are done; ``loop.best`` and
        ``loop.since_best`` already count it."""
        return _GO_ON

    def checkpointed(self, loop: LoopState) -> None:
        """A checkpoint of ``loop`` was just taken."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output."""


class WeightLrSchedule(Policy):
    """``train.lr_schedule``: the weight learning rate before each weight step, spread over the
    planned weight steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, base: float, schedule: str, plan: Plan) -> None:
        self.optimizer, self.base, self.schedule, self.total = optimizer, base, schedule, plan.steps

    def before_weight_step(self, loop: LoopState) -> None:
        schedule_lr(self.optimizer, self.base, self.schedule, loop.step, self.total)


class HyperLrSchedule(Policy):
    """``train.hyper_lr_schedule``: the hyper learning rate before each hyper step, spread over the
    planned hyper steps (a run that stops early never reaches the end of it)."""

    def __init__(self, optimizer: torch.optim.Optimizer, base: float, schedule: str, plan: Plan) -> None:
        self.optimizer, self.base, self.schedule, self.total = optimizer, base, schedule, plan.hyper_steps

    def before_hyper_step(self, loop: LoopState) -> None:
        schedule_lr(self.optimizer, self.base, self.schedule, loop.hyper_step, self.total)


class LrDecay(Policy):
    """``train.lr_decay``: decay the weight learning rate by ``factor`` (not below ``min_lr``)
    after epochs that did not improve, and finish training once it falls below ``stop_below``.

    ``plateau``: after more than ``patience`` epochs without a new best validation loss (torch's
    ``ReduceLROnPlateau``, comparing losses exactly). ``nonmonotone``: after an epoch whose loss
    is above the best of all but the last ``window`` epochs before it (the released STN code's rule).
    """

    name = "lr_decay"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        rule: str,
        factor: float,
        min_lr: float,
        patience: int | None,
        window: int | None,
        stop_below: float | None,
    ) -> None:
        self.optimizer, self.rule, self.factor, self.min_lr = optimizer, rule, factor, min_lr
        self.window, self.stop_below = window, stop_below
        self.plateau: ReduceLROnPlateau | None = None
        if rule == "plateau":
            assert patience is not None
            self.plateau = ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=factor,
                patience=patience,
                threshold=0.0,
                threshold_mode="abs",
                cooldown=0,
                min_lr=min_lr,
                eps=0.0,
            )
        self.history: list[float] = []  # every finished epoch's validation loss

    def after_epoch(self, loop: LoopState, val_loss: float) -> Verdict:
        if self.plateau is not None:
            self.plateau.step(val_loss)
        else:
            assert self.window is not None
            past = self.history
            if len(past) > self.window and val_loss > min(past[: -self.window]):
                for group in self.optimizer.param_groups:
                    group["lr"] = max(group["lr"] * self.factor, self.min_lr)
        self.history.append(val_loss)
        lr = float(self.optimizer.param_groups[0]["lr"])
        if self.stop_below is not None and lr < self.stop_below:
            return Verdict(finish=f"the learning rate fell below lr_decay.stop_below ({self.stop_below:g})")
        return _GO_ON

    def state_dict(self) -> dict[str, Any]:
        plateau = None if self.plateau is None else self.plateau.state_dict()
        return {"history": list(self.history), "plateau": plateau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [float(x) for x in state["history"]]
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])


class Patience(Policy):
    """``train.patience``: finish training after that many epochs without a new best
    validation loss."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def after_epoch(self, loop: LoopState, val_loss: float) -> Verdict:
        return Verdict(finish="") if loop.since_best >= self.patience else _GO_ON


class MaxSteps(Policy):
    """``train.max_steps``: finish training after that many weight steps, mid-epoch too (the
    epoch cut short is still evaluated)."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def after_step(self, loop: LoopState) -> Verdict:
        return Verdict(finish="") if loop.step >= self.max_steps else _GO_ON

    def after_epoch(self, loop: LoopState, val_loss: float) -> Verdict:
        return self.after_step(loop)


class CheckpointCadence(Policy):
    """``store.checkpoint_steps`` (or a number of seconds): also checkpoint mid-epoch, once that
    many weight steps or seconds have passed since the last checkpoint (every epoch end is one)."""

    def __init__(self, steps: int | None, seconds: float | None) -> None:
        self.steps, self.seconds = steps, seconds
        self.last_step, self.last_time = 0, time.monotonic()

    def after_step(self, loop: LoopState) -> Verdict:
        if self.steps is not None and loop.step - self.last_step >= self.steps:
            return Verdict(checkpoint=True)
        due = self.seconds is not None and time.monotonic() - self.last_time >= self.seconds
        return Verdict(checkpoint=due)

    def checkpointed(self, loop: LoopState) -> None:
        self.last_step, self.last_time = loop.step, time.monotonic()


class StopRequest(Policy):
    """Ctrl-C or SIGTERM (:meth:`request`): stop after the current step or epoch, with a
    checkpoint."""

    def __init__(self) -> None:
        self.requested = False

    def request(self) -> None:
        self.requested = True

    def after_step(self, loop: LoopState) -> Verdict:
        return Verdict(interrupt=self.requested)

    def after_epoch(self, loop: LoopState, val_loss: float) -> Verdict:
        return self.after_step(loop)


class Policies:
    """The policies of one run, asked in order, with rank agreement on what ranks may see
    differently.

    A finishing verdict is final as it stands: what finishes training (step counts, validation
    losses) is identical on every rank. Otherwise the ranks agree in one collective: a stop
    request that reached any rank stops them all, and rank 0's checkpoint decision (its clock)
    holds for all.
    """

    def __init__(self, policies: Sequence[Policy], ranks: distributed.Distributed | None = None) -> None:
        self.policies = tuple(policies)
        self.ranks = ranks or distributed.current()

    def before_weight_step(self, loop: LoopState) -> None:
        for policy in self.policies:
            policy.before_weight_step(loop)

    def before_hyper_step(self, loop: LoopState) -> None:
        for policy in self.policies:
            policy.before_hyper_step(loop)

    def after_step(self, loop: LoopState) -> Verdict:
        verdict = _merge(policy.after_step(loop) for policy in self.policies)
        if verdict.finish is not None:
            return Verdict(finish=verdict.finish)
        interrupt, checkpoint = self.ranks.agree(verdict.interrupt, verdict.checkpoint)
        return Verdict(interrupt=interrupt, checkpoint=checkpoint)

    def after_epoch(self, loop: LoopState, val_loss: float) -> Verdict:
        verdict = _merge(policy.after_epoch(loop, val_loss) for policy in self.policies)
        if verdict.finish is not None:
            return Verdict(finish=verdict.finish)
        return Verdict(interrupt=self.ranks.agree(verdict.interrupt)[0])

    def checkpointed(self, loop: LoopState) -> None:
        for policy in self.policies:
            policy.checkpointed(loop)

    def state_dict(self) -> dict[str, Any]:
        return {policy.name: policy.state_dict() for policy in self.policies if policy.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for policy in self.policies:
            if policy.name:
                policy.load_state_dict(state[policy.name])


def _merge(verdicts: Any) -> Verdict:
    merged = _GO_ON
    for verdict in verdicts:
        merged = merged | verdict
    return merged
