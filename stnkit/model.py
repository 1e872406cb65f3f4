"""The model interface: a network built from best-response layers."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from stnkit.config import Component
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch

__all__ = ["ModelOutput", "StnModel"]


@dataclass
class ModelOutput:
    """A forward pass's prediction and its hyperparameter-dependent training penalty.

    ``penalty`` (a scalar tensor, or ``None``) is added to the training loss in weight steps:
    weight decay, activation regularization, anything whose weight is a hyperparameter. It is
    ignored by hyper steps and evaluation.
    """

    prediction: Tensor
    penalty: Tensor | None = None


class StnModel(nn.Module, Component):
    """Base class of model families. Subclasses set ``name``, ``Config`` and ``hyperparameters``.

    ``n_hyper`` is the width ``H`` of the hypernetwork input; pass it to every best-response layer.
    ``forward`` receives inputs ``(B, ...)`` and a :class:`HyperBatch` whose ``hnet`` is ``None``
    when the network should run without its response branch (plain training, replay).
    ``stream`` names the sequence a stateful model continues: ``"train"``, ``"hyper"`` or
    ``"eval"``; stateless models ignore it.
    """

    def __init__(self, config: Any, data: DataInfo, n_hyper: int) -> None:
        super().__init__()
        self.config = config
        self.data = data
        self.n_hyper = n_hyper

    def forward(self, inputs: Tensor, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        raise NotImplementedError

    @classmethod
    def bind_config(cls, config: Any, declared: Collection[str]) -> Any:
        """The config the model is built with, given the declared hyperparameter names (for a
        model whose layers depend on them); by default ``config`` itself."""
        return config

    def reset_state(self, stream: str) -> None:
        """Forget the carried state of ``stream`` (start of a pass). Stateless models do nothing."""

    def stream_state(self) -> dict[str, Any]:
        """The carried state of every stream, for checkpoints (tensors and plain values only)."""
        return {}

    def load_stream_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`stream_state` returned."""
