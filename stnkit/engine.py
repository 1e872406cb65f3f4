"""The bilevel training loop (Algorithm 1 of MacKay et al., 2019).

The engine only sees interfaces: a data set, a response model driving a model, and the hook
relay through which the store and progress observe the run. It can hand its complete state to
the ``stnkit_checkpoint`` hook and be restored from it: a resumed run continues bit for bit (on
the CPU) as if it had never stopped.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from stnkit import distributed
from stnkit.build import Built
from stnkit.data import Batch
from stnkit.errors import DistributedError, DivergenceError, RunFileError
from stnkit.events import EpochEnd, RunEnd, RunInfo, StepEnd, StopRun
from stnkit.killpoints import kill_point
from stnkit.optim import schedule_lr

__all__ = ["CHECKPOINT_VERSION", "Engine"]

CHECKPOINT_VERSION = 1


@dataclass
class _Best:
    epoch: int
    val_loss: float
    metrics: dict[str, float]
    values: dict[str, float]
    state: dict[str, Any]


class Engine:
    """Runs one experiment. ``hook`` is the plugin manager's hook relay (``plugins.hook``).

    ``checkpoint_steps`` / ``checkpoint_seconds``: also checkpoint mid-epoch, after a weight step
    (and its hyper steps) once that many steps or seconds have passed since the last checkpoint;
    every epoch end is a checkpoint regardless.
    """

    def __init__(
        self,
        built: Built,
        hook: Any,
        run: RunInfo,
        checkpoint_steps: int | None = None,
        checkpoint_seconds: float | None = None,
    ) -> None:
        self.built = built
        # under torchrun only rank 0 reports: store, progress and observers live there
        self.hook = distributed.hook_for(hook)
        self.run_info = run
        self.parts = built.parts
        self.space = built.parts.space
        self.model = built.parts.model
        self.response = built.response
        self.dataset = built.dataset
        self.device = built.device
        self.train_cfg = built.recipe.train
        self.checkpoint_steps = checkpoint_steps
        self.checkpoint_seconds = checkpoint_seconds
        self.step = 0
        self.hyper_step = 0
        self.epoch = 0  # the epoch in progress (or last finished), from 1
        self.batch_in_epoch = 0  # weight steps already taken in the epoch in progress
        self.epoch_losses: list[float] = []
        self.since_best = 0
        self.since_decay = 0
        self.val_losses: list[float] = []  # every finished epoch's validation loss (lr rules)
        self.lr_stopped = False  # the lr fell below train.lr_decay.stop_below
        self.best: _Best | None = None
        self.elapsed_before = 0.0  # seconds trained before a resume
        self.start = time.perf_counter()
        steps_per_epoch = self.dataset.info.steps_per_epoch
        cfg = self.train_cfg
        self.warmup = (
            cfg.warmup_steps if cfg.warmup_steps is not None else cfg.warmup_epochs * steps_per_epoch
        )
        planned_steps = cfg.epochs * steps_per_epoch
        if cfg.max_steps is not None:
            planned_steps = min(planned_steps, cfg.max_steps)
        self.planned_steps = planned_steps  # what train.lr_schedule spreads its decay over
        # what train.hyper_lr_schedule spreads its decay over (a patience stop ends it early)
        self.planned_hyper_steps = max(planned_steps - self.warmup, 0) // cfg.train_steps * cfg.hyper_steps
        self.data_generator = torch.Generator().manual_seed(built.recipe.seed)
        self.epoch_generator_state = self.data_generator.get_state()
        self.hyper_generator = torch.Generator().manual_seed(built.recipe.seed + 1)
        self.hyper_consumed = 0
        self._hyper_batches: Iterator[Batch] | None = None
        # ε of every perturbation: a stream of its own, seeded alike in one process and on every
        # rank, so the draws do not depend on the model's other randomness or the world size
        self.perturbation_generator = torch.Generator(device=self.space.h.device)
        self.perturbation_generator.manual_seed(built.recipe.seed + 2)
        self.space.set_generator(self.perturbation_generator)
        self.stop_requested = False
        self.training_done = False  # every epoch the run will train is done
        self._last_checkpoint_step = 0
        self._last_checkpoint_time = time.monotonic()

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
        self.stop_requested = True

    # -- loop -----------------------------------------------------------------------------------

    def _train(self) -> RunEnd:
        cfg = self.train_cfg
        if self.training_done or self.lr_stopped:  # resumed from the checkpoint after the last epoch
            return self._finish()
        first_epoch = self.epoch if self.batch_in_epoch else self.epoch + 1
        for epoch in range(first_epoch, cfg.epochs + 1):
            if self.batch_in_epoch == 0:
                self.epoch_generator_state = self.data_generator.get_state()
                self.epoch_losses = []
            self.epoch = epoch
            skip = self.batch_in_epoch  # a resumed run replays the data order and skips what it did
            batches = self.dataset.train_batches(epoch, self.data_generator)
            for index, batch in enumerate(batches):
                if index < skip:
                    continue
                self.epoch_losses.append(self._weight_step(distributed.shard(batch).to(self.device)))
                self.batch_in_epoch = index + 1
                if self._hyper_due():
                    for _ in range(cfg.hyper_steps):
                        self._hyper_step()
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    break
                # ranks stop and checkpoint together: a signal may reach only one of them, and
                # the time-based checkpoint follows rank 0's clock
                stop, due = distributed.agree(self.stop_requested, self._checkpoint_due())
                if stop:
                    self.checkpoint()
                    return self._end("interrupted", f"stopped by the user at weight step {self.step}")
                if due:
                    self.checkpoint()
                kill_point("weight-step")
            self._end_epoch(epoch)
            self.batch_in_epoch = 0
            # at an epoch boundary the generator's state is where the next epoch's order starts
            self.epoch_generator_state = self.data_generator.get_state()
            stop = cfg.max_steps is not None and self.step >= cfg.max_steps
            stop = stop or (cfg.patience is not None and self.since_best >= cfg.patience)
            stop = stop or self.lr_stopped
            # recorded in the checkpoint: a run resumed from it goes straight to the final test
            self.training_done = stop or epoch == cfg.epochs
            self.checkpoint()
            if stop:
                break
            if distributed.agree(self.stop_requested)[0]:
                return self._end("interrupted", f"stopped by the user after epoch {epoch}")
        return self._finish()

    def _end_epoch(self, epoch: int) -> None:
        metrics = self.evaluate("valid")
        distributed.check_identical(
            [self.space.h, self.space.s], self.model.parameters(), f"after epoch {epoch}"
        )
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
            self.since_best = self.since_decay = 0
        else:
            self.since_best += 1
            self.since_decay += 1
        self._apply_lr_rule(val_loss)
        losses = self.epoch_losses
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

    def _apply_lr_rule(self, val_loss: float) -> None:
        """``train.lr_decay`` after an epoch whose validation loss is ``val_loss``."""
        decay = self.train_cfg.lr_decay
        history = self.val_losses  # the earlier epochs' validation losses
        if decay is not None:
            if decay.rule == "plateau":
                assert decay.patience is not None
                if self.since_decay > decay.patience:
                    self._decay_lr(decay.factor, decay.min_lr)
                    self.since_decay = 0
            else:
                assert decay.window is not None
                window = decay.window
                if len(history) > window and val_loss > min(history[:-window]):
                    self._decay_lr(decay.factor, decay.min_lr)
            if decay.stop_below is not None and self._lr() < decay.stop_below:
                self.lr_stopped = True
        history.append(val_loss)

    def _hyper_due(self) -> bool:
        if not self.response.tunes or self.train_cfg.hyper_steps == 0 or self.step <= self.warmup:
            return False
        return (self.step - self.warmup) % self.train_cfg.train_steps == 0

    def _checkpoint_due(self) -> bool:
        steps, seconds = self.checkpoint_steps, self.checkpoint_seconds
        if steps is not None and self.step - self._last_checkpoint_step >= steps:
            return True
        return seconds is not None and time.monotonic() - self._last_checkpoint_time >= seconds

    def _weight_step(self, batch: Batch) -> float:
        if batch.first:
            self.model.reset_state("train")
        self._set_weight_lr()
        self.response.before_weight_step(self.step + 1)
        self.parts.last_penalty = math.nan  # unknown unless the step reports it (train_on does)
        loss = distributed.mean(self.response.weight_step(self.parts, batch))
        self.step += 1
        if not math.isfinite(loss):
            raise DivergenceError(
                f"training loss became {loss} at weight step {self.step} (epoch {self.epoch}); "
                f"last hyperparameters: {_fmt(self.space.values())}{_bad_data(batch)}",
                self.step,
            )
        self.hook.stnkit_step_end(
            run=self.run_info,
            step=StepEnd(
                "weight",
                self.step,
                self.hyper_step,
                self.epoch,
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
        self.hyper_consumed += 1
        return next(self._hyper_batches)

    def _hyper_step(self) -> None:
        batch = distributed.shard(self._next_hyper_batch()).to(self.device)
        if batch.first:
            self.model.reset_state("hyper")
        before = self.space.values()
        self._set_hyper_lr()
        loss = distributed.mean(self.response.hyper_step(self.parts, batch))
        max_scale = self.train_cfg.perturbation.max_scale
        if max_scale is not None:
            self.space.clamp_scales(max_scale)
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
                f"last finite hyperparameters: {_fmt(before)}{_bad_data(batch)}",
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
        # evaluation must not disturb the training stream's state, nor the random state a resumed
        # run will replay
        self.model.reset_state("eval")
        sums: dict[str, float] = {}
        for whole in batches:
            # under torchrun each rank evaluates its part of every batch and the sums are added
            part = distributed.eval_shard(whole)
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
        sums = distributed.sum_stats(sums)
        return task.summarize(sums) if sums else {}

    def _finish(self) -> RunEnd:
        final_values = self.space.values()
        test: dict[str, float] = {}
        if self.best is not None:
            self._restore_weights(self.best.state)
            test = self.evaluate("test")
        message = ""
        if self.lr_stopped:
            decay = self.train_cfg.lr_decay
            assert decay is not None
            message = f"the learning rate fell below lr_decay.stop_below ({decay.stop_below:g})"
        return self._end("completed", message, final_values=final_values, test=test)

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

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Hand the complete training state to the ``stnkit_checkpoint`` hook (the store)."""
        self.hook.stnkit_checkpoint(run=self.run_info, state=self.state(), step=self.step)
        self._last_checkpoint_step = self.step
        self._last_checkpoint_time = time.monotonic()

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, hyperparameters, optimizers, random
        states, data position, counters, best state. Tensors and plain Python values only, so it
        loads with ``torch.load(weights_only=True)``."""
        best = self.best
        hyper_opt = self.parts.hyper_optimizer
        return {
            "version": CHECKPOINT_VERSION,
            "step": self.step,
            "hyper_step": self.hyper_step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "training_done": self.training_done,
            "epoch_losses": list(self.epoch_losses),
            "since_best": self.since_best,
            "since_decay": self.since_decay,
            "val_losses": list(self.val_losses),
            "lr_stopped": self.lr_stopped,
            "elapsed": self._elapsed(),
            "model": self.model.state_dict(),
            "model_streams": self.model.stream_state(),
            "space": self.space.state_dict(),
            "weight_optimizer": self.parts.weight_optimizer.state_dict(),
            "hyper_optimizer": None if hyper_opt is None else hyper_opt.state_dict(),
            "response": self.response.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "perturbation_rng": self.perturbation_generator.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "epoch_generator": self.epoch_generator_state,
            "hyper_generator_seed": self.built.recipe.seed + 1,
            "hyper_consumed": self.hyper_consumed,
            "precision": self.parts.precision.state_dict(),
            # every rank's random state and the world size (a collective under torchrun)
            "distributed": distributed.state(),
            "best": None
            if best is None
            else {
                "epoch": best.epoch,
                "val_loss": best.val_loss,
                "metrics": best.metrics,
                "values": best.values,
                "state": best.state,
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s output (a checkpoint)."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise RunFileError(f"checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
        self.step = int(state["step"])
        self.hyper_step = int(state["hyper_step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.training_done = bool(state.get("training_done", False))
        self.epoch_losses = [float(x) for x in state["epoch_losses"]]
        self.since_best = int(state["since_best"])
        self.since_decay = int(state["since_decay"])
        # absent from checkpoints written before the non-monotone rule existed
        self.val_losses = [float(x) for x in state.get("val_losses", [])]
        self.lr_stopped = bool(state.get("lr_stopped", False))
        self.elapsed_before = float(state["elapsed"])
        self.start = time.perf_counter()
        self.model.load_state_dict(state["model"])
        self.model.load_stream_state(state["model_streams"])
        self.space.load_state_dict(state["space"])
        self.parts.weight_optimizer.load_state_dict(state["weight_optimizer"])
        if self.parts.hyper_optimizer is not None and state["hyper_optimizer"] is not None:
            self.parts.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        # checkpoints written before responses had a state of their own have no entry
        self.response.load_state_dict(state.get("response") or {})
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._restore_perturbation(state)
        self.epoch_generator_state = state["epoch_generator"]
        # mid-epoch, the epoch's order is redrawn from its start state and the done part skipped;
        # at an epoch boundary the saved state is the next epoch's start
        self.data_generator.set_state(self.epoch_generator_state)
        self.hyper_generator = torch.Generator().manual_seed(int(state["hyper_generator_seed"]))
        self._hyper_batches = self.dataset.hyper_batches(self.hyper_generator)
        for _ in range(int(state["hyper_consumed"])):
            next(self._hyper_batches)
        self.hyper_consumed = int(state["hyper_consumed"])
        self.parts.precision.load_state_dict(state.get("precision") or {})
        distributed.load_state(state.get("distributed"))
        best = state["best"]
        self.best = (
            None
            if best is None
            else _Best(
                int(best["epoch"]),
                float(best["val_loss"]),
                dict(best["metrics"]),
                dict(best["values"]),
                best["state"],
            )
        )
        self._last_checkpoint_step = self.step

    def _restore_perturbation(self, state: dict[str, Any]) -> None:
        """The perturbation stream where the checkpoint left it. A checkpoint without one was
        written by a run that drew ε from torch's global stream in one process and from a
        generator kept by the distributed state under torchrun: it continues as it started."""
        saved = state.get("perturbation_rng")
        if saved is None:
            saved = (state.get("distributed") or {}).get("perturbation")
        if saved is None:
            self.space.set_generator(None)
            return
        self.perturbation_generator.set_state(saved)
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

    def _set_weight_lr(self) -> None:
        """The weight learning rate ``train.lr_schedule`` gives the next weight step."""
        cfg = self.train_cfg
        optimizer = self.parts.weight_optimizer
        schedule_lr(optimizer, cfg.optimizer.lr, cfg.lr_schedule, self.step, self.planned_steps)

    def _set_hyper_lr(self) -> None:
        """The hyper learning rate ``train.hyper_lr_schedule`` gives the next hyper step."""
        cfg = self.train_cfg
        if self.parts.hyper_optimizer is not None:
            schedule_lr(
                self.parts.hyper_optimizer,
                cfg.hyper_optimizer.lr,
                cfg.hyper_lr_schedule,
                self.hyper_step,
                self.planned_hyper_steps,
            )

    def _decay_lr(self, factor: float, min_lr: float) -> None:
        for group in self.parts.weight_optimizer.param_groups:
            group["lr"] = max(group["lr"] * factor, min_lr)

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start


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
