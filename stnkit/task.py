"""Learning tasks: the loss a data set is trained with and the metrics reported for it."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

__all__ = ["ClassificationTask", "LanguageModelTask", "RegressionTask", "Task"]


class Task:
    """Loss and metrics of one kind of prediction problem.

    ``loss`` is the differentiable mean loss of a batch; ``batch_stats`` returns sums that
    ``summarize`` turns into metrics over a whole pass (so batches of unequal size weigh right).
    ``metrics`` names what ``summarize`` returns; ``loss`` is always among them.
    """

    name: str = "task"
    metrics: tuple[str, ...] = ("loss",)
    #: metrics for which larger is better (for display only; the best epoch is chosen by loss)
    higher_is_better: frozenset[str] = frozenset()

    def loss(self, prediction: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def batch_stats(self, prediction: Tensor, targets: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        raise NotImplementedError


class RegressionTask(Task):
    """Mean squared error, the plain mean over every target entry of the batch."""

    name = "regression"
    metrics = ("loss", "rmse")

    def loss(self, prediction: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(prediction.reshape(targets.shape), targets)

    def batch_stats(self, prediction: Tensor, targets: Tensor) -> dict[str, float]:
        error = prediction.reshape(targets.shape) - targets
        return {"se": float((error * error).sum()), "count": float(targets.numel())}

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        mse = sums["se"] / max(sums["count"], 1.0)
        return {"loss": mse, "rmse": math.sqrt(mse)}


class ClassificationTask(Task):
    """Cross-entropy over classes; prediction ``(N, C)`` logits, targets ``(N,)`` class indices."""

    name = "classification"
    metrics = ("loss", "accuracy", "error")
    higher_is_better = frozenset({"accuracy"})

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def _flat(self, prediction: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        return prediction.reshape(-1, prediction.shape[-1]), targets.reshape(-1)

    def loss(self, prediction: Tensor, targets: Tensor) -> Tensor:
        logits, labels = self._flat(prediction, targets)
        return F.cross_entropy(logits, labels)

    def batch_stats(self, prediction: Tensor, targets: Tensor) -> dict[str, float]:
        logits, labels = self._flat(prediction, targets)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        correct = (logits.argmax(dim=1) == labels).sum()
        return {"loss": float(loss), "correct": float(correct), "count": float(labels.numel())}

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        count = max(sums["count"], 1.0)
        accuracy = sums["correct"] / count
        return {"loss": sums["loss"] / count, "accuracy": accuracy, "error": 1.0 - accuracy}


class LanguageModelTask(ClassificationTask):
    """Next-token cross-entropy; prediction ``(B, T, V)``, targets ``(B, T)``; adds perplexity."""

    name = "language-model"
    metrics = ("loss", "perplexity", "accuracy")

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        base = super().summarize(sums)
        # exp overflows past ~709; a diverged model's perplexity is reported as inf, not an error
        perplexity = math.exp(base["loss"]) if base["loss"] < 700 else math.inf
        return {"loss": base["loss"], "perplexity": perplexity, "accuracy": base["accuracy"]}
