"""The response-model interface and the parts of a run it drives."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from stnkit import distributed
from stnkit.augment import Augmentation
from stnkit.config import Component
from stnkit.data import Batch
from stnkit.hyper.space import HyperBatch, HyperSpace
from stnkit.model import ModelOutput, StnModel
from stnkit.objective import Objective
from stnkit.precision import Precision
from stnkit.settings import PerturbationSettings, TrainSettings
from stnkit.task import Task

__all__ = ["ResponseModel", "ScheduledValues", "TrainingParts", "hyper_update", "outer_step", "train_on"]


@dataclass
class TrainingParts:
    """Everything a step touches. Built once per run by :func:`stnkit.build.build`."""

    model: StnModel
    space: HyperSpace
    task: Task
    objective: Objective
    augmentations: Sequence[Augmentation]
    weight_optimizer: torch.optim.Optimizer
    hyper_optimizer: torch.optim.Optimizer | None
    clip: float | None
    hyper_clip: float | None
    perturbation: PerturbationSettings
    #: the regularizer penalty (``ModelOutput.penalty``, 0 without one) of the latest weight step,
    #: set by :func:`train_on`; NaN when a response model's step does not report it
    last_penalty: float = math.nan
    precision: Precision = field(default_factory=Precision)

    def forward(self, inputs: Tensor, hp: HyperBatch, stream: str) -> ModelOutput:
        """The model's forward pass under the run's autocast, with an fp32 prediction and penalty:
        losses and the hypergradient path stay in fp32 whatever ``train.precision`` is."""
        with self.precision.autocast():
            output: ModelOutput = self.model(inputs, hp, stream=stream)
        if self.precision.dtype is None:
            return output
        penalty = None if output.penalty is None else output.penalty.float()
        return ModelOutput(output.prediction.float(), penalty)

    def augment(self, inputs: Tensor, hp: HyperBatch) -> Tensor:
        for augmentation in self.augmentations:
            inputs = augmentation(inputs, hp)
        return inputs


@dataclass(frozen=True)
class ScheduledValues:
    """Values a response model gives hyperparameter ``name`` during a run; ``where`` is their
    dotted location in the response's recipe section (for messages)."""

    name: str
    values: Sequence[float]
    where: str


class ResponseModel(Component):
    """How the hypernetwork is fed and how weight and hyper steps are taken.

    ``tunes``: whether the engine runs hyper steps at all. ``uses_response``: whether the model is
    built with response branches (without them it is exactly the plain network). Subclasses
    implement :meth:`weight_step`, :meth:`hyper_step` (if they tune) and :meth:`eval_batch`.

    Building a run asks the response which tensors the weight and hyper optimizers update
    (:meth:`weight_parameters`, :meth:`hyper_parameters`), then calls :meth:`setup` once, where
    a response builds any optimizer of its own. What such optimizers hold goes into checkpoints
    through :meth:`state_dict` / :meth:`load_state_dict` (stored under ``"response"``).
    """

    tunes: ClassVar[bool] = True
    uses_response: ClassVar[bool] = True

    def __init__(self, config: Any, space: HyperSpace) -> None:
        self.config = config
        self.space = space

    @classmethod
    def scheduled_values(cls, config: Any) -> list[ScheduledValues]:
        """The values a response with ``config`` sets for hyperparameters as the run goes (by
        default none). Before a run, each name must be declared and each value lie in its kind's
        range."""
        return []

    def weight_parameters(self, model: StnModel, train: TrainSettings) -> list[Tensor]:
        """What ``train.optimizer`` updates: by default every parameter of the model."""
        return list(model.parameters())

    def hyper_parameters(self, space: HyperSpace, train: TrainSettings) -> list[Tensor]:
        """What ``train.hyper_optimizer`` updates: by default ``h`` and ``s`` together."""
        return [space.h, space.s]

    def setup(self, parts: TrainingParts, train: TrainSettings) -> None:
        """Called once the model and the optimizers exist, before any step (and before a resumed
        run's checkpoint is loaded): build extra optimizers, adjust the initial model."""

    def state_dict(self) -> dict[str, Any]:
        """The response's own training state (extra optimizers, counters): tensors and plain
        values only, so checkpoints load with ``weights_only=True``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def before_weight_step(self, step: int) -> None:
        """Called before weight step ``step`` (counted from 1); schedules change values here."""

    def weight_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        """Take one weight step on a training batch; return the (detached) training loss."""
        raise NotImplementedError

    def hyper_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        """Take one hyper step on a validation batch; return the (detached) validation loss."""
        raise NotImplementedError

    def eval_batch(self, batch_size: int) -> HyperBatch:
        """Hyperparameters for evaluation passes: the current centre, unperturbed."""
        raise NotImplementedError


def train_on(parts: TrainingParts, batch: Batch, hp: HyperBatch) -> Tensor:
    """A weight step at hyperparameters ``hp``: augment, forward, loss + penalty, clipped update.

    Returns the task loss without the penalty; the penalty goes to ``parts.last_penalty``.
    """
    parts.model.train()
    inputs = parts.augment(batch.inputs, hp)
    output = parts.forward(inputs, hp, stream="train")
    loss = parts.task.loss(output.prediction, batch.targets)
    total = loss if output.penalty is None else loss + output.penalty
    parts.last_penalty = 0.0 if output.penalty is None else float(output.penalty.detach())
    parts.weight_optimizer.zero_grad(set_to_none=True)
    parts.precision.scale(total, "weight").backward()  # type: ignore[no-untyped-call]
    params = [p for group in parts.weight_optimizer.param_groups for p in group["params"]]
    # under torchrun: the mean over ranks of their slices' gradients is the global batch's
    distributed.average_weight_gradients_(params)
    parts.precision.step(parts.weight_optimizer, params, parts.clip, "weight")
    return loss.detach()


def hyper_update(
    parts: TrainingParts,
    loss: Tensor,
    tune_scale: bool,
    scale_optimizer: torch.optim.Optimizer | None = None,
    scale_clip: float | None = None,
) -> None:
    """One hyper-optimizer step on ``loss``'s gradient with respect to ``h`` (and ``s`` when
    ``tune_scale``). Weight gradients are neither computed nor accumulated.

    Without ``scale_optimizer``, ``h`` and ``s`` share ``parts.hyper_optimizer`` and one clipping
    norm; with it, ``s`` has its own optimizer and clip (``train.scale_optimizer``).
    """
    space = parts.space
    params = [space.h, space.s] if tune_scale else [space.h]
    grads = torch.autograd.grad(parts.precision.scale(loss, "hyper"), params, allow_unused=True)
    assert parts.hyper_optimizer is not None
    parts.hyper_optimizer.zero_grad(set_to_none=True)
    if scale_optimizer is not None:
        scale_optimizer.zero_grad(set_to_none=True)
    for param, grad in zip(params, grads, strict=True):
        param.grad = torch.zeros_like(param) if grad is None else grad
    # every rank must take the same hyper step: h and s stay identical across ranks
    distributed.average_gradients_([p.grad for p in params])
    if scale_optimizer is None:
        parts.precision.step(parts.hyper_optimizer, params, parts.hyper_clip, "hyper")
        return
    parts.precision.step(parts.hyper_optimizer, [space.h], parts.hyper_clip, "hyper")
    if tune_scale:
        parts.precision.step(scale_optimizer, [space.s], scale_clip, "hyper")


def outer_step(
    parts: TrainingParts,
    output: ModelOutput,
    batch: Batch,
    tune_scale: bool,
    scale_optimizer: torch.optim.Optimizer | None = None,
    scale_clip: float | None = None,
) -> Tensor:
    """The end of every response's hyper step: the outer objective on the hyper forward's
    ``output``, less ``τ · entropy(σ)`` when scales are tuned, then :func:`hyper_update`.
    Returns the validation loss, detached."""
    val_loss = parts.objective(output, batch)
    loss = val_loss
    if tune_scale and parts.perturbation.entropy_weight > 0:
        loss = loss - parts.perturbation.entropy_weight * parts.space.entropy()
    hyper_update(parts, loss, tune_scale, scale_optimizer, scale_clip)
    return val_loss.detach()
