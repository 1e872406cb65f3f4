"""Records passed to the lifecycle hooks. Plain frozen dataclasses: cheap to build every step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from stnkit.hyper.kinds import HyperKind

__all__ = ["EpochEnd", "Plan", "RunEnd", "RunInfo", "RunStatus", "StepEnd", "StopRun"]

RunStatus = Literal["running", "completed", "failed", "interrupted", "diverged", "pruned"]


class StopRun(Exception):  # noqa: N818 -- a request, not an error
    """Raised by a lifecycle observer (``stnkit_epoch_end``, ``stnkit_step_end``) to end the run
    at once with ``status``: ``stnkit tune``'s pruner ends unpromising trials as ``pruned``."""

    def __init__(self, status: RunStatus, message: str) -> None:
        self.status: RunStatus = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Plan:
    """How long a run trains if nothing stops it early, computed once (:meth:`of`) and read by the
    loop, the learning-rate schedules, the store (its table sizes) and the progress views."""

    epochs: int
    steps_per_epoch: int
    #: weight steps: ``epochs`` × ``steps_per_epoch``, at most ``train.max_steps``
    steps: int
    #: weight steps of the warm-up, before the first hyper step
    warmup_steps: int
    #: hyper steps: ``hyper_steps`` after every ``train_steps`` weight steps past the warm-up
    #: (0 when the response model does not tune)
    hyper_steps: int
    #: a training-loss row every ``log_every`` weight steps
    log_every: int = 1

    @classmethod
    def of(
        cls,
        *,
        epochs: int,
        steps_per_epoch: int,
        max_steps: int | None,
        warmup_epochs: int,
        train_steps: int,
        hyper_steps: int,
        tunes: bool,
        log_every: int = 1,
    ) -> Plan:
        steps = epochs * steps_per_epoch
        if max_steps is not None:
            steps = min(steps, max_steps)
        warmup = warmup_epochs * steps_per_epoch
        hyper = max(steps - warmup, 0) // train_steps * hyper_steps if tunes else 0
        return cls(epochs, steps_per_epoch, steps, warmup, hyper, log_every)

    def table_rows(self) -> dict[str, int]:
        """Rows each run-file table needs for the plan (at least one each)."""
        return {
            "hyper": max(self.hyper_steps, 1),
            "train": self.steps // self.log_every + 1,
            "epochs": max(self.epochs, 1),
        }


@dataclass(frozen=True)
class RunInfo:
    """What observers need to know about a run before it starts."""

    name: str
    path: Path | None
    hyperparameters: tuple[str, ...]
    initial_values: dict[str, float]
    initial_scales: dict[str, float]
    integer: tuple[str, ...]
    #: how long the run trains if nothing stops it early, and the run file's table sizes
    plan: Plan
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

    @property
    def epochs(self) -> int:
        return self.plan.epochs

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

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
    #: a hyper step's gradient of the hyper objective in each hyperparameter's unconstrained value,
    #: as the hyper optimizer used it (after averaging over ranks and clipping); None for weight
    #: steps and where a response leaves no gradient on ``h``
    gradients: dict[str, float] | None = None


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
