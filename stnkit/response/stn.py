"""The Self-Tuning Network response model (MacKay et al., 2019, Algorithm 1)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from stnkit import distributed
from stnkit.config import ComponentConfig
from stnkit.data import Batch
from stnkit.hyper.space import HyperBatch
from stnkit.response.base import ResponseModel, TrainingParts, train_on

__all__ = ["STNResponse"]


class STNResponse(ResponseModel):
    """Weight steps at perturbed ``λ̃ = h + σ ⊙ ε`` (detached), which drive both the regularizers and
    the hypernetwork input; hyper steps minimise ``val_loss − τ·entropy(σ)`` over ``h`` and ``s``
    in eval mode, where the loss depends on the hyperparameters only through the response.
    """

    name = "stn"

    class Config(ComponentConfig):
        hypernet_input: Literal["auto", "centered", "unconstrained", "normalized"] = Field(
            "auto",
            description="centered: λ̃ minus its initial value (unconstrained units); "
            "unconstrained: λ̃ itself; normalized: each kind's bounded reading (sigmoid position "
            "in its range, softplus excess over a lower bound)",
        )

    config: Config

    def _hnet(self, lam: Tensor) -> Tensor:
        # Centering makes every gate exactly zero at the initial hyperparameters, so the network
        # starts as the plain one whatever the hyperparameters' units; V has no bias to absorb a
        # large constant input (an initial weight decay of 1e-5 is u ≈ −11.5).
        mode = self.config.hypernet_input
        if mode == "auto":
            return self.space.hypernet_input(lam, bounded_only=True)
        if mode == "centered":
            return lam - self.space.h_initial
        if mode == "unconstrained":
            return lam
        return self.space.hypernet_input(lam)

    def weight_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        lam = self.space.sample(batch.size).detach()
        return train_on(parts, batch, self.space.batch(lam, hnet=self._hnet(lam)))

    def hyper_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        space = self.space
        tune_scale = parts.perturbation.tune
        lam = space.sample(batch.size) if tune_scale else space.expand(batch.size)
        parts.model.eval()
        output = parts.forward(batch.inputs, space.batch(lam, hnet=self._hnet(lam)), stream="hyper")
        val_loss = parts.objective(output, batch)
        params = [space.h, space.s] if tune_scale else [space.h]
        loss = val_loss
        if tune_scale and parts.perturbation.entropy_weight > 0:
            loss = loss - parts.perturbation.entropy_weight * space.entropy()
        # grad w.r.t. h and s only: weight gradients are neither needed nor accumulated
        grads = torch.autograd.grad(parts.precision.scale(loss, "hyper"), params, allow_unused=True)
        assert parts.hyper_optimizer is not None
        parts.hyper_optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(params, grads, strict=True):
            param.grad = torch.zeros_like(param) if grad is None else grad
        # every rank must take the same hyper step: h and s stay identical across ranks
        distributed.average_gradients_([p.grad for p in params])
        parts.precision.step(parts.hyper_optimizer, params, parts.hyper_clip, "hyper")
        return val_loss.detach()

    def eval_batch(self, batch_size: int) -> HyperBatch:
        centre = self.space.expand(batch_size).detach()
        return self.space.batch(centre, hnet=self._hnet(centre))
