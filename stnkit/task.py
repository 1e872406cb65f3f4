"""Learning tasks: the loss a data set is trained with and the metrics reported for it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch.nn.functional as F
from torch import Tensor

from stnkit.errors import UsageError

__all__ = ["ClassificationTask", "LanguageModelTask", "LossTask", "RegressionTask", "Task"]


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


class LossTask(Task):
    """A user's loss, ``loss_fn(prediction, targets) -> scalar tensor``, as a task.

    ``base`` (optional) adds its metrics (accuracy, rmse...), computed its own way; ``loss``, the
    one the best epoch is chosen by, is the user's, averaged over examples (batches weighted by
    their size, as the user's loss is taken to be a mean over the batch).
    """

    name = "loss"

    def __init__(self, loss_fn: Callable[[Tensor, Tensor], Tensor], label: str, base: Task | None = None):
        self.loss_fn = loss_fn
        self.label = label
        self.base = base
        self.metrics = ("loss", *(m for m in (base.metrics if base else ()) if m != "loss"))
        self.higher_is_better = base.higher_is_better if base else frozenset()
        self.num_classes = getattr(base, "num_classes", None)

    def loss(self, prediction: Tensor, targets: Tensor) -> Tensor:
        value = self.loss_fn(prediction, targets)
        if not isinstance(value, Tensor) or value.numel() != 1 or not value.is_floating_point():
            raise UsageError(
                f"the loss {self.label} returned {_describe_value(value)}; it must return one number "
                "as a float tensor (reduce a per-example loss with .mean())"
            )
        return value.reshape(())

    def batch_stats(self, prediction: Tensor, targets: Tensor) -> dict[str, float]:
        stats = self.base.batch_stats(prediction, targets) if self.base is not None else {}
        size = float(targets.shape[0]) if targets.ndim else 1.0
        stats["own_loss"] = float(self.loss(prediction, targets)) * size
        stats["own_count"] = size
        return stats

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        out = self.base.summarize(sums) if self.base is not None else {}
        return {**out, "loss": sums["own_loss"] / max(sums["own_count"], 1.0)}


def _describe_value(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
