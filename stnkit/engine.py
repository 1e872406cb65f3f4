"""The bilevel training loop (Algorithm 1 of MacKay et al., 2019).

The engine only sees interfaces: a data set, a response model driving a model, and the hook
relay through which the store and progress observe the run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from stnkit.build import Built
from stnkit.data import Batch
from stnkit.errors import DivergenceError
from stnkit.events import EpochEnd, RunEnd, RunInfo, StepEnd

__all__ = ["Engine"]


@dataclass
class _Best:
    epoch: int
    val_loss: float
    metrics: dict[str, float]
    values: dict[str, float]
    state: dict[str, Any]


class Engine:
    """Runs one experiment. ``hook`` is the plugin manager's hook relay (``plugins.hook``)."""

    def __init__(self, built: Built, hook: Any, run: RunInfo) -> None:
        self.built = built
        self.hook = hook
        self.run_info = run
        self.parts = built.parts
        self.space = built.parts.space
        self.model = built.parts.model
        self.response = built.response
        self.dataset = built.dataset
        self.device = built.device
        self.train_cfg = built.recipe.train
        self.step = 0
        self.hyper_step = 0
        self.epoch = 0
        self.start = time.perf_counter()
        self.best: _Best | None = None
        steps_per_epoch = self.dataset.info.steps_per_epoch
        cfg = self.train_cfg
        self.warmup = (
            cfg.warmup_steps if cfg.warmup_steps is not None else cfg.warmup_epochs * steps_per_epoch
        )
        self.data_generator = torch.Generator().manual_seed(built.recipe.seed)
        self.hyper_generator = torch.Generator().manual_seed(built.recipe.seed + 1)
        self._hyper_batches: Iterator[Batch] | None = None

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> RunEnd:
        """Train, evaluate each epoch, test at the best state. Returns how the run ended.

        Divergence ends the run with status ``diverged``; KeyboardInterrupt with ``interrupted``
        (re-raised after observers are told); any other exception is a bug and propagates.
        """
        self.hook.stnkit_run_start(run=self.run_info)
        try:
            result = self._train()
        except DivergenceError as error:
            result = self._end("diverged", str(error))
        except KeyboardInterrupt:
            result = self._end("interrupted", "interrupted by the user")
            self.hook.stnkit_run_end(run=self.run_info, result=result)
            raise
        except BaseException as error:
            result = self._end("failed", f"{type(error).__name__}: {error}")
            self.hook.stnkit_run_end(run=self.run_info, result=result)
            raise
        self.hook.stnkit_run_end(run=self.run_info, result=result)
        return result

    # -- loop -----------------------------------------------------------------------------------

    def _train(self) -> RunEnd:
        cfg = self.train_cfg
        since_best = 0
        since_decay = 0
        stop = False
        for epoch in range(1, cfg.epochs + 1):
            self.epoch = epoch
            losses: list[float] = []
            for batch in self.dataset.train_batches(epoch, self.data_generator):
                losses.append(self._weight_step(batch.to(self.device)))
                if self._hyper_due():
                    for _ in range(cfg.hyper_steps):
                        self._hyper_step()
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    stop = True
                    break
            metrics = self.evaluate("valid")
            val_loss = metrics["loss"]
            if not math.isfinite(val_loss):
                raise DivergenceError(
                    f"validation loss became {val_loss} after epoch {epoch} (weight step {self.step}); "
                    f"hyperparameters: {_fmt(self.space.values())}",
                    self.step,
                )
            improved = self.best is None or val_loss < self.best.val_loss
            if improved:
                self.best = _Best(epoch, val_loss, metrics, self.space.values(), self._snapshot())
                since_best = since_decay = 0
            else:
                since_best += 1
                since_decay += 1
            decay = cfg.lr_decay
            if decay is not None and since_decay > decay.patience:
                self._decay_lr(decay.factor, decay.min_lr)
                since_decay = 0
            self.hook.stnkit_epoch_end(
                run=self.run_info,
                epoch=EpochEnd(
                    epoch=epoch,
                    step=self.step,
                    hyper_step=self.hyper_step,
                    time=self._elapsed(),
                    train_loss=sum(losses) / max(len(losses), 1),
                    val_loss=val_loss,
                    val_metrics=metrics,
                    lr=self._lr(),
                    values=self.space.values(),
                    scales=self.space.scales(),
                    best=improved,
                ),
            )
            if cfg.patience is not None and since_best >= cfg.patience:
                stop = True
            if stop:
                break
        return self._finish()

    def _hyper_due(self) -> bool:
        if not self.response.tunes or self.train_cfg.hyper_steps == 0 or self.step <= self.warmup:
            return False
        return (self.step - self.warmup) % self.train_cfg.train_steps == 0

    def _weight_step(self, batch: Batch) -> float:
        if batch.first:
            self.model.reset_state("train")
        self.response.before_weight_step(self.step + 1)
        loss = float(self.response.weight_step(self.parts, batch))
        self.step += 1
        if not math.isfinite(loss):
            raise DivergenceError(
                f"training loss became {loss} at weight step {self.step} (epoch {self.epoch}); "
                f"last hyperparameters: {_fmt(self.space.values())}",
                self.step,
            )
        self.hook.stnkit_step_end(
            run=self.run_info,
            step=StepEnd("weight", self.step, self.hyper_step, self.epoch, loss, self._lr(), self._elapsed()),
        )
        return loss

    def _hyper_step(self) -> None:
        if self._hyper_batches is None:
            self._hyper_batches = self.dataset.hyper_batches(self.hyper_generator)
        batch = next(self._hyper_batches).to(self.device)
        if batch.first:
            self.model.reset_state("hyper")
        before = self.space.values()
        loss = float(self.response.hyper_step(self.parts, batch))
        self.hyper_step += 1
        values = self.space.values()
        scales = self.space.scales()
        bad = [n for n, v in {**values, **scales}.items() if not math.isfinite(v)]
        if not math.isfinite(loss) or bad:
            what = (
                f"validation loss became {loss}"
                if not math.isfinite(loss)
                else f"{', '.join(bad)} became non-finite"
            )
            raise DivergenceError(
                f"{what} at hyper step {self.hyper_step} (weight step {self.step}); "
                f"last finite hyperparameters: {_fmt(before)}",
                self.step,
            )
        self.hook.stnkit_step_end(
            run=self.run_info,
            step=StepEnd(
                "hyper",
                self.step,
                self.hyper_step,
                self.epoch,
                loss,
                self._lr(),
                self._elapsed(),
                values=values,
                scales=scales,
            ),
        )

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of a full pass over ``valid`` or ``test`` at the current, unperturbed ``h``."""
        batches = self.dataset.valid_batches() if split == "valid" else self.dataset.test_batches()
        if batches is None:
            return {}
        task = self.parts.task
        self.model.eval()
        self.model.reset_state("eval")
        sums: dict[str, float] = {}
        for batch in batches:
            batch = batch.to(self.device)
            if batch.first:
                self.model.reset_state("eval")
            output = self.model(batch.inputs, self.response.eval_batch(batch.size), stream="eval")
            for key, value in task.batch_stats(output.prediction, batch.targets).items():
                sums[key] = sums.get(key, 0.0) + value
        return task.summarize(sums) if sums else {}

    def _finish(self) -> RunEnd:
        final_values = self.space.values()
        test: dict[str, float] = {}
        if self.best is not None:
            self._restore(self.best.state)
            test = self.evaluate("test")
        return self._end("completed", "", final_values=final_values, test=test)

    def _end(
        self,
        status: Any,
        message: str,
        final_values: dict[str, float] | None = None,
        test: dict[str, float] | None = None,
    ) -> RunEnd:
        best = self.best
        return RunEnd(
            status=status,
            message=message,
            step=self.step,
            epoch=self.epoch,
            best_epoch=None if best is None else best.epoch,
            best_val_loss=None if best is None else best.val_loss,
            best_val_metrics={} if best is None else best.metrics,
            test_metrics=test or {},
            final_values=final_values if final_values is not None else _finite(self.space.values()),
            best_values={} if best is None else best.values,
        )

    # -- helpers --------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "space": copy.deepcopy(self.space.state_dict()),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.space.load_state_dict(state["space"])

    def _lr(self) -> float:
        return float(self.parts.weight_optimizer.param_groups[0]["lr"])

    def _decay_lr(self, factor: float, min_lr: float) -> None:
        for group in self.parts.weight_optimizer.param_groups:
            group["lr"] = max(group["lr"] * factor, min_lr)

    def _elapsed(self) -> float:
        return time.perf_counter() - self.start


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in values.items()) or "none"


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if math.isfinite(v)}
