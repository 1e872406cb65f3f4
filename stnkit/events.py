"""Records passed to the lifecycle hooks. Plain frozen dataclasses: cheap to build every step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from stnkit.hyper.kinds import HyperKind

__all__ = ["EpochEnd", "RunEnd", "RunInfo", "RunStatus", "StepEnd", "StopRun"]

RunStatus = Literal["running", "completed", "failed", "interrupted", "diverged", "pruned"]


class StopRun(Exception):  # noqa: N818 -- a request, not an error
    """Raised by a lifecycle observer (``stnkit_epoch_end``, ``stnkit_step_end``) to end the run
    at once with ``status``: ``stnkit tune``'s pruner ends unpromising trials as ``pruned``."""

    def __init__(self, status: RunStatus, message: str) -> None:
        self.status: RunStatus = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class RunInfo:
    """What observers need to know about a run before it starts."""

    name: str
    path: Path | None
    hyperparameters: tuple[str, ...]
    initial_values: dict[str, float]
    initial_scales: dict[str, float]
    integer: tuple[str, ...]
    epochs: int
    steps_per_epoch: int
    metrics: tuple[str, ...]
    device: str
    tunes: bool
    seed: int
    start_step: int = 0
    start_epoch: int = 0
    #: parameters of the plain network, and what the best-response branches and V add (0 when
    #: the model is built without them); ``None`` where unknown
    parameters_elementary: int | None = None
    parameters_response: int | None = None
    #: free-form facts about the run (e.g. ``source_run`` for a replay); stored as attributes
    metadata: dict[str, str] = field(default_factory=dict)
    #: each declared hyperparameter's kind, for :meth:`used`
    kinds: Mapping[str, HyperKind] = field(default_factory=dict)

    def used(self, values: Mapping[str, float]) -> dict[str, float]:
        """``values`` as the hooks carry them (constrained; a discrete kind's continuous value) turned
        into what components receive (:meth:`~stnkit.hyper.HyperKind.used_value`): what an observer
        should display. The hooks keep the constrained values, which stores need to replay a run."""
        kinds = self.kinds
        return {name: kinds[name].used_value(v) if name in kinds else v for name, v in values.items()}

    #: processes training the run together (torchrun) and their backend ("" in one plain process)
    world_size: int = 1
    backend: str = ""


@dataclass(frozen=True)
class StepEnd:
    """One finished step. ``step`` counts weight steps, ``hyper_step`` hyper steps, both from 1.

    ``loss`` of a weight step is the task's training loss *without* the regularizer penalty; the
    step minimised ``loss + penalty`` (``penalty`` NaN where the response model does not report it,
    and for hyper steps).
    """

    phase: Literal["weight", "hyper"]
    step: int
    hyper_step: int
    epoch: int
    loss: float
    lr: float
    time: float
    values: dict[str, float] | None = None
    scales: dict[str, float] | None = None
    penalty: float = math.nan


@dataclass(frozen=True)
class EpochEnd:
    """One finished epoch (numbered from 1) with its full validation pass."""

    epoch: int
    step: int
    hyper_step: int
    time: float
    train_loss: float
    val_loss: float
    val_metrics: dict[str, float]
    lr: float
    values: dict[str, float]
    scales: dict[str, float]
    best: bool


@dataclass(frozen=True)
class RunEnd:
    """How a run ended."""

    status: RunStatus
    message: str = ""
    step: int = 0
    epoch: int = 0
    best_epoch: int | None = None
    best_val_loss: float | None = None
    best_val_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    final_values: dict[str, float] = field(default_factory=dict)
    best_values: dict[str, float] = field(default_factory=dict)
