"""The bilevel loop's own state: counters, data position, best epoch and the policies' memory.

Everything here is what a checkpoint must carry for a resumed run to continue bit for bit. The
checkpoint form is derived from the dataclass fields in one place (:meth:`LoopState.state_dict`
and :meth:`LoopState.from_state`), so a field added to the state is saved and restored without
being listed again.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

__all__ = ["Best", "LoopState"]


@dataclass
class Best:
    """The epoch with the lowest validation loss so far, and the weights and ``h`` it ended with."""

    epoch: int
    val_loss: float
    metrics: dict[str, float]
    values: dict[str, float]
    state: dict[str, Any]

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Best:
        return cls(
            int(state["epoch"]),
            float(state["val_loss"]),
            {k: float(v) for k, v in state["metrics"].items()},
            {k: float(v) for k, v in state["values"].items()},
            state["state"],
        )


def _empty_generator_state() -> torch.Tensor:
    return torch.Generator().get_state()


@dataclass
class LoopState:
    """Where the loop stands. Plain values and tensors only, so the checkpoint loads with
    ``torch.load(weights_only=True)``."""

    #: weight steps and hyper steps taken, from 1
    step: int = 0
    hyper_step: int = 0
    #: the epoch in progress (or last finished), from 1
    epoch: int = 0
    #: weight steps already taken in the epoch in progress
    batch_in_epoch: int = 0
    #: the training losses of the epoch in progress
    epoch_losses: list[float] = field(default_factory=list)
    #: finished epochs since the validation loss last improved (``train.patience``)
    since_best: int = 0
    #: every epoch the run will train is done: a run resumed here goes straight to the test
    training_done: bool = False
    #: why training ended early, for the run's end (a policy's message; ``""``: none)
    end_message: str = ""
    #: seconds trained up to the moment this state was taken
    elapsed: float = 0.0
    #: hyper batches drawn from the hyper stream so far
    hyper_consumed: int = 0
    #: the data-order generator's state at the start of the epoch in progress (mid-epoch) or of
    #: the next epoch (at an epoch boundary)
    epoch_generator: torch.Tensor = field(default_factory=_empty_generator_state)
    best: Best | None = None

    def state_dict(self) -> dict[str, Any]:
        """Every field under its own name (``best`` as a plain dict); lists are copied."""
        state: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Best):
                value = asdict(value)
            elif isinstance(value, list):
                value = list(value)
            state[f.name] = value
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LoopState:
        """The inverse of :meth:`state_dict`; ``state`` may hold other keys besides."""
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _convert(hints[f.name], state[f.name]) for f in fields(cls)})


def _convert(kind: Any, value: Any) -> Any:
    """``value`` as a field of type ``kind`` holds it (numbers may come back as tensors or numpy
    scalars from other writers; ``best`` as a dict)."""
    if kind in (int, float, bool, str):
        return kind(value)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return [item(x) for x in value]
    if kind == Best | None:
        return None if value is None else Best.from_state(value)
    return value
