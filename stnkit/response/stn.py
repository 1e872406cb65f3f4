"""The Self-Tuning Network response model (MacKay et al., 2019, Algorithm 1)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from stnkit.config import ComponentConfig
from stnkit.data import Batch
from stnkit.hyper.space import HyperBatch, HyperSpace
from stnkit.optim import make_optimizer
from stnkit.response.base import ResponseModel, TrainingParts, outer_step, train_on
from stnkit.settings import TrainSettings

__all__ = ["STNResponse"]


class STNResponse(ResponseModel):
    """Weight steps at perturbed ``λ̃ = h + σ ⊙ ε`` (detached), which drive both the regularizers and
    the hypernetwork input; hyper steps minimise ``val_loss − τ·entropy(σ)`` over ``h`` and ``s``
    in eval mode, where the loss depends on the hyperparameters only through the response.

    With ``train.scale_optimizer`` set, ``s`` gets its own optimizer (the released CIFAR STN runs
    one Adam on ``h`` and another on ``s``); otherwise one ``train.hyper_optimizer`` updates both.
    """

    name = "stn"

    class Config(ComponentConfig):
        # centered by default: a sigmoid position in range has a vanishing slope near the ends of
        # the range, so the hypergradient in h vanishes there; the offset from the initial value
        # keeps its slope everywhere (the comparison is in docs/results.md)
        hypernet_input: Literal["centered", "unconstrained"] = Field(
            "centered",
            description="centered (default): λ̃ minus its initial value (unconstrained units); "
            "unconstrained: λ̃ itself, as the released CNN code feeds it (divided by one constant, "
            "max(1, RMS of the initial h), fixed when the run is built)",
        )

    config: Config
    scale_optimizer: torch.optim.Optimizer | None = None
    scale_clip: float | None = None

    def hyper_parameters(self, space: HyperSpace, train: TrainSettings) -> list[Tensor]:
        return [space.h] if train.scale_optimizer is not None else [space.h, space.s]

    def setup(self, parts: TrainingParts, train: TrainSettings) -> None:
        if train.scale_optimizer is not None and parts.hyper_optimizer is not None:
            self.scale_optimizer = make_optimizer(train.scale_optimizer, [self.space.s])
            self.scale_clip = train.scale_optimizer.clip

    def state_dict(self) -> dict[str, Any]:
        if self.scale_optimizer is None:
            return {}
        return {"scale_optimizer": self.scale_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scale_optimizer is not None and "scale_optimizer" in state:
            self.scale_optimizer.load_state_dict(state["scale_optimizer"])

    def _hnet(self, lam: Tensor) -> Tensor:
        # Centering makes every gate exactly zero at the initial hyperparameters, so the network
        # starts as the plain one whatever the hyperparameters' units; V has no bias to absorb a
        # large constant input (an initial weight decay of 1e-5 is u ≈ −11.5).
        if self.config.hypernet_input == "centered":
            return lam - self.space.h_initial
        return lam / self.unconstrained_scale()

    def unconstrained_scale(self) -> Tensor:
        """The constant ``r = max(1, RMS(h_initial))`` the ``unconstrained`` input is divided by.

        A gate is ``V·λ̂``, so an SGD step moves it by ``lr·‖λ̂‖²`` per unit of gradient. Rates
        near 0.05 are ``u ≈ −2.9`` unconstrained: eleven of them make ``‖λ̂‖² ≈ 80``, against
        ``≈ 0.2`` for the sigmoid readings, and the gate-times-response-weight product can
        outrun SGD with momentum until the weights reach NaN. Dividing by ``r`` is a fixed
        reparametrisation of ``V`` — the gates stay linear in the unconstrained values, as in the
        released code — that brings ``‖λ̂‖²`` back to the number of hyperparameters whatever
        their units.
        """
        initial = self.space.h_initial
        if initial.numel() == 0:
            return torch.ones((), device=initial.device)
        return initial.pow(2).mean().sqrt().clamp(min=1.0)

    def weight_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        lam = self.space.sample(batch.size).detach()
        return train_on(parts, batch, self.space.batch(lam, hnet=self._hnet(lam)))

    def hyper_step(self, parts: TrainingParts, batch: Batch) -> Tensor:
        space = self.space
        tune_scale = parts.perturbation.tune
        lam = space.sample(batch.size) if tune_scale else space.expand(batch.size)
        parts.model.eval()
        output = parts.forward(batch.inputs, space.batch(lam, hnet=self._hnet(lam)), stream="hyper")
        return outer_step(parts, output, batch, tune_scale, self.scale_optimizer, self.scale_clip)

    def eval_batch(self, batch_size: int) -> HyperBatch:
        centre = self.space.expand(batch_size).detach()
        return self.space.batch(centre, hnet=self._hnet(centre))
