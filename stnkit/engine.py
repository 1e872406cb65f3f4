"""The bilevel training loop (Algorithm 1 of MacKay et al., 2019).

The engine only sees interfaces: a data set, a response model driving a model, and the hook
relay through which the store and progress observe the run. ``Engine._train`` is the algorithm
itself; where it stands is one :class:`~stnkit.loop.LoopState`, and the rules around it
(learning-rate schedules and decay, early stopping, ``max_steps``, checkpoint cadence, stop
requests and the ranks' agreement on them) are policies (:mod:`stnkit.policies`) it asks at its
step and epoch boundaries. It can hand its complete state to the ``stnkit_checkpoint`` hook and be
restored from it: a resumed run continues bit for bit (on the CPU) as if it had never stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Iterator
from typing import Any

import torch

from stnkit import distributed
from stnkit.build import Built
from stnkit.data import Batch
from stnkit.errors import DistributedError, DivergenceError
from stnkit.events import EpochEnd, Plan, RunEnd, RunInfo, StepEnd, StopRun
from stnkit.killpoints import kill_point
from stnkit.loop import Best, LoopState
from stnkit.policies import (
    CheckpointCadence,
    HyperLrSchedule,
    LrDecay,
    MaxSteps,
    Patience,
    Policies,
    Policy,
    StopRequest,
    Verdict,
    WeightLrSchedule,
)
from stnkit.store.checkpoint import CHECKPOINT_VERSION, check_version

__all__ = ["CHECKPOINT_VERSION", "Engine"]


class Engine:
    """Runs one experiment. ``hook`` is the plugin manager's hook relay (``plugins.hook``).

    ``checkpoint_steps`` / ``checkpoint_seconds``: also checkpoint mid-epoch, after a weight step
    (and its hyper steps) once that many steps or seconds have passed since the last checkpoint;
    every epoch end is a checkpoint regardless (:class:`~stnkit.policies.CheckpointCadence`).
    """

    def __init__(
        self,
        built: Built,
        hook: Any,
        run: RunInfo,
        checkpoint_steps: int | None = None,
        checkpoint_seconds: float | None = None,
        ranks: distributed.Distributed | None = None,
    ) -> None:
        self.built = built
        # this process's part in the run (one process unless the runner joined torchrun's group)
        self.ranks = ranks or distributed.current()
        # under torchrun only rank 0 reports: store, progress and observers live there
        self.hook = self.ranks.hook_for(hook)
        self.run_info = run
        self.parts = built.parts
        self.space = built.parts.space
        self.model = built.parts.model
        self.response = built.response
        self.dataset = built.dataset
        self.device = built.device
        self.train_cfg = built.recipe.train
        self.plan = run.plan
        self.loop = LoopState()
        self.start = time.perf_counter()
        self.stop_request = StopRequest()
        cadence = CheckpointCadence(checkpoint_steps, checkpoint_seconds)
        self.policies = Policies([*_train_policies(built, self.plan), cadence, self.stop_request], self.ranks)
        self.data_generator = torch.Generator().manual_seed(built.recipe.seed)
        self.loop.epoch_generator = self.data_generator.get_state()
        self.hyper_generator = torch.Generator().manual_seed(built.recipe.seed + 1)
        self._hyper_batches: Iterator[Batch] | None = None
        # ε of every perturbation: a stream of its own, seeded alike in one process and on every
        # rank, so the draws do not depend on the model's other randomness or the world size
        self.perturbation_generator = torch.Generator(device=self.space.h.device)
        self.perturbation_generator.manual_seed(built.recipe.seed + 2)
        self.space.set_generator(self.perturbation_generator)

    # -- public ---------------------------------------------------------------------------------

    def run(self) -> RunEnd:
        """Train, evaluate each epoch, test at the best state. Returns how the run ended.

        Divergence ends the run with status ``diverged``; an observer raising
        :class:`~stnkit.events.StopRun` ends it with the status it names (``pruned``); a stop
        request (Ctrl-C) finishes the current step, checkpoints and ends with ``interrupted``; a
        KeyboardInterrupt arriving anyway ends with ``interrupted`` and is re-raised; any other
        exception is a bug and ends with ``failed`` before propagating.
        """
        self.hook.stnkit_run_start(run=self.run_info)
        try:
            result = self._train()
        except DivergenceError as error:
            result = self._end("diverged", str(error))
        except DistributedError as error:
            # a lost rank stops a sound run (it resumes from its last checkpoint); drift is a bug
            result = self._end("interrupted" if error.lost else "failed", str(error))
            self.hook.stnkit_run_end(run=self.run_info, result=result)
            raise
        except StopRun as stop:
            # an observer ended the run (a pruned tuning trial): no test pass, status as asked
            result = self._end(stop.status, stop.message)
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

    def request_stop(self) -> None:
        """Ask the loop to stop after the current step, with a checkpoint (a signal handler calls
        this)."""
        self.stop_request.request()

    # -- loop -----------------------------------------------------------------------------------

    def _train(self) -> RunEnd:
        """Algorithm 1: for each training batch, a weight step on the training loss at a
        perturbed ``h``; after every ``train_steps`` weight steps past the warm-up, ``hyper_steps``
        hyper steps on the validation objective; at the end of each epoch, a validation pass.
        The policies decide around it when to checkpoint, stop, or change a learning rate."""
        loop, hyper_steps = self.loop, self.train_cfg.hyper_steps
        if loop.training_done:  # resumed from the checkpoint after the last epoch
            return self._finish()
        for epoch in self._epochs():
            for batch in self._batches(epoch):
                loop.epoch_losses.append(self._weight_step(batch))
                if self._hyper_due():
                    for _ in range(hyper_steps):
                        self._hyper_step()
                verdict = self.policies.after_step(loop)
                if verdict.interrupt:
                    self.checkpoint()
                    return self._end("interrupted", f"stopped by the user at weight step {loop.step}")
                if verdict.checkpoint:
                    self.checkpoint()
                if verdict.finish is not None:
                    break
                kill_point("weight-step")
            verdict = self._end_epoch(epoch)
            # recorded in the checkpoint: a run resumed from it goes straight to the final test
            loop.training_done = verdict.finish is not None or epoch == self.plan.epochs
            loop.end_message = verdict.finish or ""
            self.checkpoint()
            if verdict.finish is not None:
                break
            if verdict.interrupt:
                return self._end("interrupted", f"stopped by the user after epoch {epoch}")
        return self._finish()

    def _epochs(self) -> range:
        """The epochs left to train: a run resumed mid-epoch starts with that epoch again."""
        loop = self.loop
        return range(loop.epoch if loop.batch_in_epoch else loop.epoch + 1, self.plan.epochs + 1)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        """The epoch's training batches not yet trained on, on the device (this rank's part). A
        run resumed mid-epoch redraws the epoch's order and skips the batches it did."""
        loop = self.loop
        if loop.batch_in_epoch == 0:
            loop.epoch_generator = self.data_generator.get_state()
            loop.epoch_losses = []
        loop.epoch = epoch
        done = loop.batch_in_epoch
        for index, batch in enumerate(self.dataset.train_batches(epoch, self.data_generator)):
            if index < done:
                continue
            loop.batch_in_epoch = index + 1
            yield self.ranks.shard(batch).to(self.device)

    def _end_epoch(self, epoch: int) -> Verdict:
        """The validation pass, the best epoch so far, the policies' epoch rules, the hook."""
        loop = self.loop
        metrics = self.evaluate("valid")
        self.ranks.check_identical(
            [self.space.h, self.space.s], self.model.parameters(), f"after epoch {epoch}"
        )
        val_loss = metrics["loss"]
        if not math.isfinite(val_loss):
            raise DivergenceError(
                f"validation loss became {val_loss} after epoch {epoch} (weight step {loop.step}); "
                f"hyperparameters: {_fmt(self.space.values())}",
                loop.step,
            )
        improved = loop.best is None or val_loss < loop.best.val_loss
        if improved:
            loop.best = Best(epoch, val_loss, metrics, self.space.values(), self._snapshot())
            loop.since_best = 0
        else:
            loop.since_best += 1
        verdict = self.policies.after_epoch(loop, val_loss)  # an lr rule acts before the hook reports
        loop.batch_in_epoch = 0
        # at an epoch boundary the generator's state is where the next epoch's order starts
        loop.epoch_generator = self.data_generator.get_state()
        losses = loop.epoch_losses
        self.hook.stnkit_epoch_end(
            run=self.run_info,
            epoch=EpochEnd(
                epoch=epoch,
                step=loop.step,
                hyper_step=loop.hyper_step,
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
        return verdict

    def _hyper_due(self) -> bool:
        warmup = self.plan.warmup_steps
        if not self.response.tunes or self.train_cfg.hyper_steps == 0 or self.loop.step <= warmup:
            return False
        return (self.loop.step - warmup) % self.train_cfg.train_steps == 0

    def _weight_step(self, batch: Batch) -> float:
        if batch.first:
            self.model.reset_state("train")
        self.policies.before_weight_step(self.loop)
        self.response.before_weight_step(self.loop.step + 1)
        self.parts.last_penalty = math.nan  # unknown unless the step reports it (train_on does)
        loss = self.ranks.mean(self.response.weight_step(self.parts, batch))
        self.loop.step += 1
        if not math.isfinite(loss):
            raise DivergenceError(
                f"training loss became {loss} at weight step {self.loop.step} (epoch {self.loop.epoch}); "
                f"last hyperparameters: {_fmt(self.space.values())}{_bad_data(batch)}",
                self.loop.step,
            )
        self.hook.stnkit_step_end(
            run=self.run_info,
            step=StepEnd(
                "weight",
                self.loop.step,
                self.loop.hyper_step,
                self.loop.epoch,
                loss,
                self._lr(),
                self._elapsed(),
                penalty=self.parts.last_penalty,
            ),
        )
        return loss

    def _next_hyper_batch(self) -> Batch:
        if self._hyper_batches is None:
            self._hyper_batches = self.dataset.hyper_batches(self.hyper_generator)
        self.loop.hyper_consumed += 1
        return next(self._hyper_batches)

    def _hyper_step(self) -> None:
        batch = self.ranks.shard(self._next_hyper_batch()).to(self.device)
        if batch.first:
            self.model.reset_state("hyper")
        before = self.space.values()
        self.policies.before_hyper_step(self.loop)
        loss = self.ranks.mean(self.response.hyper_step(self.parts, batch))
        max_scale = self.train_cfg.perturbation.max_scale
        if max_scale is not None:
            self.space.clamp_scales(max_scale)
        self.loop.hyper_step += 1
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
                f"{what} at hyper step {self.loop.hyper_step} (weight step {self.loop.step}); "
                f"last finite hyperparameters: {_fmt(before)}{_bad_data(batch)}",
                self.loop.step,
            )
        self.hook.stnkit_step_end(
            run=self.run_info,
            step=StepEnd(
                "hyper",
                self.loop.step,
                self.loop.hyper_step,
                self.loop.epoch,
                loss,
                self._lr(),
                self._elapsed(),
                values=values,
                scales=scales,
                gradients=self.space.gradients(),
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
        # evaluation must not disturb the training stream's state, nor the random state a resumed
        # run will replay
        self.model.reset_state("eval")
        sums: dict[str, float] = {}
        for whole in batches:
            # under torchrun each rank evaluates its part of every batch and the sums are added
            part = self.ranks.eval_shard(whole)
            if part is None:
                continue
            if split == "test":
                kill_point("final-eval")
            batch = part.to(self.device)
            if batch.first:
                self.model.reset_state("eval")
            output = self.parts.forward(batch.inputs, self.response.eval_batch(batch.size), stream="eval")
            for key, value in task.batch_stats(output.prediction, batch.targets).items():
                sums[key] = sums.get(key, 0.0) + value
        sums = self.ranks.sum_stats(sums)
        return task.summarize(sums) if sums else {}

    def _finish(self) -> RunEnd:
        final_values = self.space.values()
        test: dict[str, float] = {}
        if self.loop.best is not None:
            self._restore_weights(self.loop.best.state)
            test = self.evaluate("test")
        return self._end("completed", self.loop.end_message, final_values=final_values, test=test)

    def _end(
        self,
        status: Any,
        message: str,
        final_values: dict[str, float] | None = None,
        test: dict[str, float] | None = None,
    ) -> RunEnd:
        best = self.loop.best
        return RunEnd(
            status=status,
            message=message,
            step=self.loop.step,
            epoch=self.loop.epoch,
            best_epoch=None if best is None else best.epoch,
            best_val_loss=None if best is None else best.val_loss,
            best_val_metrics={} if best is None else best.metrics,
            test_metrics=test or {},
            final_values=final_values if final_values is not None else _finite(self.space.values()),
            best_values={} if best is None else best.values,
        )

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Hand the complete training state to the ``stnkit_checkpoint`` hook (the store)."""
        self.hook.stnkit_checkpoint(run=self.run_info, state=self.state(), step=self.loop.step)
        self.policies.checkpointed(self.loop)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, hyperparameters, optimizers, random
        states, data position, counters, best state. Tensors and plain Python values only, so it
        loads with ``torch.load(weights_only=True)``."""
        hyper_opt = self.parts.hyper_optimizer
        loop = dataclasses.replace(self.loop, elapsed=self._elapsed())
        return {
            "version": CHECKPOINT_VERSION,
            **loop.state_dict(),
            "policies": self.policies.state_dict(),
            "model": self.model.state_dict(),
            "model_streams": self.model.stream_state(),
            "space": self.space.state_dict(),
            "weight_optimizer": self.parts.weight_optimizer.state_dict(),
            "hyper_optimizer": None if hyper_opt is None else hyper_opt.state_dict(),
            "response": self.response.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "perturbation_rng": self.perturbation_generator.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "precision": self.parts.precision.state_dict(),
            # every rank's random state and the world size (a collective under torchrun)
            "distributed": self.ranks.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s output (a checkpoint)."""
        check_version(state, str(self.run_info.path))
        self.loop = LoopState.from_state(state)
        self.start = time.perf_counter()
        self.model.load_state_dict(state["model"])
        self.model.load_stream_state(state["model_streams"])
        self.space.load_state_dict(state["space"])
        self.parts.weight_optimizer.load_state_dict(state["weight_optimizer"])
        if self.parts.hyper_optimizer is not None and state["hyper_optimizer"] is not None:
            self.parts.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        self.response.load_state_dict(state["response"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._restore_perturbation(state)
        # mid-epoch, the epoch's order is redrawn from its start state and the done part skipped;
        # at an epoch boundary the saved state is the next epoch's start
        self.data_generator.set_state(self.loop.epoch_generator)
        self.hyper_generator = torch.Generator().manual_seed(self.built.recipe.seed + 1)
        self._hyper_batches = self.dataset.hyper_batches(self.hyper_generator)
        for _ in range(self.loop.hyper_consumed):
            next(self._hyper_batches)
        self.parts.precision.load_state_dict(state["precision"])
        self.ranks.load_state(state["distributed"])
        self.policies.load_state_dict(state["policies"])
        self.policies.checkpointed(self.loop)

    def _restore_perturbation(self, state: dict[str, Any]) -> None:
        """The perturbation stream where the checkpoint left it."""
        self.perturbation_generator.set_state(state["perturbation_rng"])
        self.space.set_generator(self.perturbation_generator)

    # -- helpers --------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "space": copy.deepcopy(self.space.state_dict()),
        }

    def _restore_weights(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.space.load_state_dict(state["space"])

    def _lr(self) -> float:
        return float(self.parts.weight_optimizer.param_groups[0]["lr"])

    def _elapsed(self) -> float:
        return self.loop.elapsed + time.perf_counter() - self.start


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in values.items()) or "none"


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if math.isfinite(v)}


def _bad_data(batch: Batch) -> str:
    """What a diverged step's batch says about its cause: its NaN or infinite inputs or targets,
    if any (data that passed no loader's checks; counted only once the step has diverged)."""
    found = []
    for part, values in (("inputs", batch.inputs), ("targets", batch.targets)):
        if values.is_floating_point() or values.is_complex():
            bad = int((~torch.isfinite(values)).sum())
            if bad:
                found.append(f"{bad} NaN or infinite value(s) in its {part}")
    if not found:
        return ""
    return f"; the step's batch has {' and '.join(found)}: the data is bad, not the training"


def _train_policies(built: Built, plan: Plan) -> list[Policy]:
    """The policies ``train:`` asks for, in the order they are asked."""
    cfg, weights, hyper = built.recipe.train, built.parts.weight_optimizer, built.parts.hyper_optimizer
    policies: list[Policy] = [WeightLrSchedule(weights, cfg.optimizer.lr, cfg.lr_schedule, plan)]
    if hyper is not None:
        policies.append(HyperLrSchedule(hyper, cfg.hyper_optimizer.lr, cfg.hyper_lr_schedule, plan))
    if cfg.max_steps is not None:
        policies.append(MaxSteps(cfg.max_steps))
    if cfg.patience is not None:
        policies.append(Patience(cfg.patience))
    decay = cfg.lr_decay
    if decay is not None:
        rule = (decay.rule, decay.factor, decay.min_lr, decay.patience, decay.window, decay.stop_below)
        policies.append(LrDecay(weights, *rule))
    return policies
