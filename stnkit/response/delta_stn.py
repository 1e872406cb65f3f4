"""The Δ-STN response model (Bae & Grosse, NeurIPS 2020): centred, linearized best responses.

Three changes to STN. The hypernetwork input is the deviation ``λ̃ − h`` of the perturbed
hyperparameters from the *current* centre (``h`` detached there), so at ``h`` every gate is
zero and the network is its general (elementary) part — the plain network, whatever the
hyperparameters' units. Each weight step makes two updates on one batch, each with its own
optimizer: the general weights at the unperturbed ``h``, then the response weights and ``V`` at
``λ̃``. And the response update fits the first-order expansion ``f(x, 0) + J·(λ̃ − h)`` of the
prediction in the hypernetwork input — the local Jacobian the hypergradient actually uses —
instead of the network's output at ``λ̃``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from stnkit import distributed
from stnkit.config import ComponentConfig
from stnkit.data import Batch
from stnkit.errors import UsageError
from stnkit.hyper.space import HyperBatch, HyperSpace
from stnkit.model import ModelOutput, StnModel
from stnkit.nn.split import ParameterGroup, ParameterSplit, split_parameters, zero_hyper_weights
from stnkit.optim import make_optimizer
from stnkit.response.base import ResponseModel, TrainingParts, outer_step
from stnkit.settings import TrainSettings

__all__ = ["RESPONSE_LR_FACTOR", "DeltaSTNResponse", "linearized_prediction"]

#: The response weights' learning rate, as a multiple of the weights', where the recipe names no
#: ``train.response_optimizer``. The hypergradient is the validation loss's slope along the
#: response, and that slope is small wherever the hyperparameter matters little (a weight decay
#: far below the data's curvature): at the general weights' rate, Adam's normalised steps keep
#: the response weights jittering by more than the slope they should settle to, and the
#: hypergradient is that jitter — a weight decay tuned from below then drifts down on it by
#: orders of magnitude (docs/known-answers.md).
RESPONSE_LR_FACTOR = 0.1

LinearizeMethod = Literal["jvp", "double-backward"]


def linearized_prediction(
    forward: Callable[[Tensor], Tensor], zero: Tensor, delta: Tensor, method: LinearizeMethod
) -> Tensor:
    """``f(0) + J·delta`` for ``f = forward`` at hypernetwork input ``zero`` ``(B, H)``.

    The result is differentiable in whatever ``forward`` closes over (the model's weights).
    ``jvp``: forward-mode AD (``torch.func.jvp``), one pass carrying primal and tangent.
    ``double-backward``: the reverse-mode trick — ``J·δ = ∂/∂u ⟨J^T u, δ⟩`` for a dummy ``u`` —
    which works wherever plain autograd does (e.g. under DistributedDataParallel).
    """
    if method == "jvp":
        pair = torch.func.jvp(forward, (zero,), (delta,))
        primal: Tensor = pair[0]
        tangent: Tensor = pair[1]
        return primal + tangent
    point = zero.detach().requires_grad_(True)
    prediction = forward(point)
    # the backward is linear in u, so its value never matters; zeros avoid inf/nan surprises
    dummy = torch.zeros_like(prediction, requires_grad=True)
    (vjp,) = torch.autograd.grad(prediction, point, dummy, create_graph=True)
    (jvp,) = torch.autograd.grad(vjp, dummy, delta, create_graph=True)
    return prediction + jvp


class DeltaSTNResponse(ResponseModel):
    """Δ-STN: centred hypernetwork input, a general and a response update per weight step, a
    linearized response fit; hyper steps like STN's but with separate optimizers for ``h`` and
    ``s``. Optimizers: ``train.optimizer`` (general weights), ``train.response_optimizer``
    (response weights and ``V``; default: ``train.optimizer``'s settings at a tenth of its learning
    rate, :data:`RESPONSE_LR_FACTOR`; its learning rate follows every decay of the weight
    learning rate), ``train.hyper_optimizer`` (``h``),
    ``train.scale_optimizer`` (``s``; default: ``train.hyper_optimizer``'s settings).
    """

    name = "delta-stn"

    class Config(ComponentConfig):
        linearize: bool = Field(
            True,
            description="fit the response to f(x, h) + J·(λ̃ − h), the prediction's first-order "
            "expansion in the hypernet input; false: to the network's output at λ̃",
        )

    config: Config

    def __init__(self, config: Any, space: HyperSpace) -> None:
        super().__init__(config, space)
        self.split: ParameterSplit | None = None
        self.response_optimizer: torch.optim.Optimizer | None = None
        self.scale_optimizer: torch.optim.Optimizer | None = None
        self.response_clip: float | None = None
        self.scale_clip: float | None = None
        self._initial_lrs = (1.0, 1.0)  # (weight lr, response lr) as configured, to follow decays
        # how J·(λ̃ − h) is computed: found on the first linearized step (forward-mode jvp, or the
        # double-backward trick where jvp does not compose with the model or with DDP)
        self._method: LinearizeMethod | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def _split(self, model: StnModel) -> ParameterSplit:
        if self.split is None:
            split = split_parameters(model)
            if not split.hyper_weights:
                raise UsageError(
                    f"response 'delta-stn' needs a model built from stnkit.nn best-response layers, "
                    f"but model {getattr(model, 'name', type(model).__name__)!r} has none with a "
                    "response branch"
                )
            self.split = split
        return self.split

    def weight_parameters(self, model: StnModel, train: TrainSettings) -> list[Tensor]:
        return self._split(model).general.tensors

    def hyper_parameters(self, space: HyperSpace, train: TrainSettings) -> list[Tensor]:
        return [space.h]

    def setup(self, parts: TrainingParts, train: TrainSettings) -> None:
        if parts.precision.mode != "fp32":
            # its two updates and the JVP run outside autocast and without a loss scaler
            raise UsageError(f"train.precision: delta-stn runs in fp32 only (not {parts.precision.mode})")
        split = self._split(parts.model)
        # V = 0 exactly: the response branch starts silent and only the response update moves it
        zero_hyper_weights(parts.model)
        response_cfg = train.response_optimizer or replace(
            train.optimizer, lr=train.optimizer.lr * RESPONSE_LR_FACTOR
        )
        self.response_optimizer = make_optimizer(response_cfg, split.response.tensors)
        self.response_clip = response_cfg.clip
        self._initial_lrs = (train.optimizer.lr, response_cfg.lr)
        if parts.hyper_optimizer is not None:
            scale_cfg = train.scale_optimizer or train.hyper_optimizer
            self.scale_optimizer = make_optimizer(scale_cfg, [self.space.s])
            self.scale_clip = scale_cfg.clip

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.response_optimizer is not None:
            state["response_optimizer"] = self.response_optimizer.state_dict()
        if self.scale_optimizer is not None:
            state["scale_optimizer"] = self.scale_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.response_optimizer is not None and "response_optimizer" in state:
            self.response_optimizer.load_state_dict(state["response_optimizer"])
        if self.scale_optimizer is not None and "scale_optimizer" in state:
            self.scale_optimizer.load_state_dict(state["scale_optimizer"])

    # -- steps ----------------------------------------------------------------------------------

    def weight_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        assert self.split is not None and self.response_optimizer is not None, "setup() was not called"
        model, space, task = parts.model, self.space, parts.task
        model.train()
        # both updates read the batch from the same carried state; the stream then continues
        # from the general pass, the network at h
        before = model.stream_state()

        # 1. general weights at h: hypernet input 0, i.e. the plain network (no response branch)
        centre = space.expand(batch.size).detach()
        at_h = space.batch(centre, hnet=None)
        output = model(parts.augment(batch.inputs, at_h), at_h, stream="train")
        loss = task.loss(output.prediction, batch.targets)
        total = loss if output.penalty is None else loss + output.penalty
        parts.last_penalty = 0.0 if output.penalty is None else float(output.penalty.detach())
        _update(total, self.split.general, parts.weight_optimizer, parts.clip)
        after = model.stream_state()

        # 2. response weights and V at λ̃, on the batch augmented at λ̃
        lam = space.sample(batch.size).detach()
        at_lam = space.batch(lam, hnet=None)
        inputs = parts.augment(batch.inputs, at_lam)
        delta = lam - centre  # = σ ⊙ ε: the centred hypernet input
        prediction, penalty = self._respond(model, inputs, at_lam, delta, before)
        response_loss = task.loss(prediction, batch.targets)
        if penalty is not None:
            response_loss = response_loss + penalty
        self._follow_lr(parts.weight_optimizer)
        _update(response_loss, self.split.response, self.response_optimizer, self.response_clip)
        model.load_stream_state(after)
        return loss.detach()

    def _respond(
        self, model: StnModel, inputs: Tensor, at_lam: HyperBatch, delta: Tensor, streams: dict[str, Any]
    ) -> tuple[Tensor, Tensor | None]:
        """The prediction the response is fitted to, and the training penalty at ``λ̃``."""

        def run(hnet: Tensor) -> ModelOutput:
            model.load_stream_state(streams)
            output: ModelOutput = model(
                inputs, HyperBatch(hnet=hnet, values=at_lam.values, kinds=at_lam.kinds), stream="train"
            )
            return output

        if not self.config.linearize:
            output = run(delta)
            return output.prediction, output.penalty
        zero = torch.zeros_like(delta)
        penalized: list[bool] = []

        def forward(hnet: Tensor) -> Tensor:
            output = run(hnet)
            penalized.append(output.penalty is not None)
            return output.prediction

        if self._method is None and _distributed(model):
            self._method = "double-backward"  # forward-mode AD does not compose with DDP
        prediction = self._linearize(forward, zero, delta)
        penalty = None
        if penalized and penalized[-1]:
            # A penalty (weight decay, activation regularization) is a function of the weights
            # at λ̃ themselves, which are linear in the hypernet input already: it is evaluated
            # exactly there. Its first-order expansion would average away under ε ~ N(0, I)
            # and leave the response nothing to fit.
            penalty = run(delta).penalty
        return prediction, penalty

    def _linearize(self, forward: Callable[[Tensor], Tensor], zero: Tensor, delta: Tensor) -> Tensor:
        if self._method is not None:
            return linearized_prediction(forward, zero, delta, self._method)
        # auto: try forward mode; where an op or the model does not support it, fall back for
        # the rest of the run. The failed attempt must leave no trace in the random streams, or
        # a resumed run (which tries again) would draw different dropout masks.
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        try:
            prediction = linearized_prediction(forward, zero, delta, "jvp")
        except (RuntimeError, NotImplementedError):
            torch.set_rng_state(cpu_rng)
            if cuda_rng:
                torch.cuda.set_rng_state_all(cuda_rng)
            self._method = "double-backward"
            return linearized_prediction(forward, zero, delta, "double-backward")
        self._method = "jvp"
        return prediction

    def _follow_lr(self, weight_optimizer: torch.optim.Optimizer) -> None:
        """Give the response optimizer the weight optimizer's learning-rate decay so far."""
        assert self.response_optimizer is not None
        weight_lr, response_lr = self._initial_lrs
        lr = response_lr * float(weight_optimizer.param_groups[0]["lr"]) / weight_lr
        for group in self.response_optimizer.param_groups:
            group["lr"] = lr

    def hyper_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        space = self.space
        tune_scale = parts.perturbation.tune
        # λ̃ − h.detach(): zero-valued without tuned scales, but with the identity gradient in h
        lam = space.sample(batch.size) if tune_scale else space.expand(batch.size)
        hnet = lam - space.h.detach()
        parts.model.eval()
        # the values that drive regularization are detached: the validation loss depends on the
        # hyperparameters only through the response
        output = parts.model(batch.inputs, space.batch(lam.detach(), hnet=hnet), stream="hyper")
        return outer_step(parts, output, batch, tune_scale, self.scale_optimizer, self.scale_clip)

    def eval_batch(self, batch_size: int) -> HyperBatch:
        # hypernet input 0 is the plain network exactly: run it without the response branch
        centre = self.space.expand(batch_size).detach()
        return self.space.batch(centre, hnet=None)


def _update(
    loss: Tensor, group: ParameterGroup, optimizer: torch.optim.Optimizer, clip: float | None
) -> None:
    """Backpropagate ``loss`` into ``group``'s parameters only, clip, step ``optimizer``."""
    group.clear_grads()
    torch.autograd.backward([loss], inputs=group.bases)
    group.collect_grads()
    # under torchrun: the mean over ranks of their slices' gradients is the global batch's
    distributed.average_weight_gradients_(group.tensors)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(group.tensors, clip)
    optimizer.step()
    group.clear_grads()


def _distributed(model: torch.nn.Module) -> bool:
    """Whether the model trains under DistributedDataParallel (or any multi-process group)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return True
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
