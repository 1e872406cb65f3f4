"""The Python entry point: a torch model, its DataLoaders and a loss → one tuning run.

:class:`Tuner` writes the recipe a YAML user would write — ``model: {name: module}`` converting
the user's own module, ``data: {name: loaders}`` over the user's DataLoaders — and runs it with
:func:`stnkit.run`: the same validation, the same engine, the same run file. The in-memory
objects reach those components through :mod:`stnkit.live`.

Before anything is built, one forward pass of the user's plain model on the first training batch
checks what only Python users get wrong: a model on another device or with another float type
than the batches, a loss that does not return one number.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from stnkit import live
from stnkit.errors import RunFileError, UsageError
from stnkit.loaders import describe_batch, to_batch
from stnkit.recipe import Recipe, RunConfig, parse_recipe
from stnkit.runner import RunResult
from stnkit.task import LossTask

__all__ = ["FitResult", "Tuner"]

Progress = Literal["auto", "quiet", "notebook"]
ModelFactory = Callable[[], nn.Module]

_TRAINABLE_DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class FitResult(RunResult):
    """How :meth:`Tuner.fit` ended: ``status``, ``path`` (the run file), ``end`` (best and final
    hyperparameters, metrics), and :meth:`replay` of the schedule it found."""

    tuner: Tuner | None = field(default=None, repr=False, compare=False)
    #: the trained model: a converted copy of the one given, at the best epoch's weights
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def best_values(self) -> dict[str, float]:
        """The hyperparameters at the best validation epoch."""
        return dict(self.end.best_values)

    @property
    def final_values(self) -> dict[str, float]:
        return dict(self.end.final_values)

    def record(self) -> Any:
        """The run file, opened for reading (:func:`stnkit.open_run`)."""
        from stnkit.store.reader import open_run

        if self.path is None:
            raise UsageError("this run recorded nothing on disk")
        return open_run(self.path)

    def replay(
        self, model_factory: ModelFactory, *, final: bool = False, out: str | Path | None = None
    ) -> FitResult:
        """Train a fresh plain model from ``model_factory()`` on the schedule this run found
        (``final=True``: at its final values), with the same data, loss and settings."""
        if self.tuner is None or self.path is None:
            raise UsageError("only a run made by a Tuner and recorded on disk can be replayed this way")
        return self.tuner.replay(self.path, model_factory, final=final, out=out)


class Tuner:
    """Tune an existing torch model's hyperparameters while it trains (Self-Tuning Networks).

    ``model``: any ``nn.Module``; a copy of it is converted to best-response form (see
    ``docs/own-model.md``), its class and ``forward`` unchanged, and trained: the result's
    ``model``. The object given stays as it was. ``hyperparameters``:
    ``{name: declaration}`` as in a recipe (``{"kind": "unit", "init": 0.1}``), or ``{name: value}``
    for the names the conversion rules know: ``dropout``/``<part>_dropout`` (a rate in (0, 1)) and
    ``weight_decay``/``<part>_weight_decay`` (a positive weight, one per batch). ``train``,
    ``valid``, ``test``: DataLoaders yielding ``(inputs, targets)`` or dicts (``inputs=``/``targets=``
    name the keys); stnkit draws the training order from ``seed`` (see :mod:`stnkit.loaders`).
    ``loss``: ``loss(prediction, targets) -> scalar tensor``; default the task's (cross-entropy for
    integer targets, mean squared error for float ones). ``convert``: the conversion spec
    (``targets``, ``exclude``, ``dropout``, ``weight_decay``). ``options``: any further
    ``train:`` or ``run:`` setting of a recipe (``warmup_epochs``, ``patience``, ``log_every``...).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        hyperparameters: Mapping[str, float | Mapping[str, Any]],
        train: DataLoader[Any],
        valid: DataLoader[Any],
        test: DataLoader[Any] | None = None,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        task: Literal["classification", "regression", "language-model"] | None = None,
        inputs: str | int | None = None,
        targets: str | int | None = None,
        convert: Mapping[str, Any] | None = None,
        response: Literal["delta-stn", "stn"] = "delta-stn",
        epochs: int = 10,
        optimizer: Mapping[str, Any] | None = None,
        hyper_optimizer: Mapping[str, Any] | None = None,
        augment: Sequence[Mapping[str, Any]] | None = None,
        options: Mapping[str, Any] | None = None,
        out: str | Path = "runs",
        name: str | None = None,
        progress: Progress = "auto",
        seed: int = 0,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UsageError(f"model must be a torch nn.Module, not {type(model).__name__}")
        for label, loader in (("train", train), ("valid", valid), ("test", test)):
            if loader is not None and not isinstance(loader, DataLoader):
                raise UsageError(f"{label} must be a torch DataLoader, not {type(loader).__name__}")
        if progress not in ("auto", "quiet", "notebook"):
            raise UsageError(f"progress must be 'auto', 'quiet' or 'notebook', not {progress!r}")
        self.model = model
        self.loaders = (train, valid, test)
        self.loss = loss
        self.task = task
        self.inputs = inputs
        self.targets = targets
        self.convert = dict(convert) if convert is not None else None
        self.hyperparameters = {k: _declaration(k, v) for k, v in hyperparameters.items()}
        self.response = response
        self.epochs = epochs
        self.optimizer = dict(optimizer) if optimizer is not None else {"name": "adam", "lr": 1e-3}
        self.hyper_optimizer = dict(hyper_optimizer) if hyper_optimizer is not None else None
        self.augment = [dict(a) for a in augment or ()]
        self.options = dict(options or {})
        self.out = Path(out)
        self.name = name or _run_name(type(model).__name__)
        self.progress = progress
        self.seed = seed
        self.device = _model_device(model, device)
        self._fitted = False
        self._num_classes: int | None = None
        # one key per role and run name: the recipe (and the run file) of equal settings is equal,
        # and every run binds its own objects to the keys just before it starts
        ident = re.sub(r"\W", "_", self.name)
        self._keys = {
            "model": live.target(f"model_{ident}"),
            "data": live.target(f"loaders_{ident}"),
            **({"loss": live.target(f"loss_{ident}")} if loss is not None else {}),
        }

    # -- the recipe ------------------------------------------------------------------------------

    def recipe_data(self) -> dict[str, Any]:
        """The recipe this Tuner runs, as the mapping a YAML file would hold."""
        data: dict[str, Any] = {"name": "loaders", "target": self._keys["data"]}
        for key, value in (("inputs", self.inputs), ("targets", self.targets), ("task", self.task)):
            if value is not None:
                data[key] = value
        if self._num_classes is not None:
            data["num_classes"] = self._num_classes
        if "loss" in self._keys:
            data["loss"] = self._keys["loss"]
        model: dict[str, Any] = {"name": "module", "target": self._keys["model"]}
        if self.convert is not None:
            model["convert"] = self.convert
        # operational settings (log_every, flush_seconds...) belong to the recipe's run: section
        run = {k: v for k, v in self.options.items() if k in RunConfig.model_fields}
        train_options = {k: v for k, v in self.options.items() if k not in run}
        train: dict[str, Any] = {"epochs": self.epochs, "optimizer": self.optimizer, **train_options}
        if self.hyper_optimizer is not None:
            train["hyper_optimizer"] = self.hyper_optimizer
        return {
            "name": self.name,
            "seed": self.seed,
            "device": self.device,
            "data": data,
            "model": model,
            "response": {"name": self.response},
            "augment": self.augment,
            "hyperparameters": self.hyperparameters,
            "train": train,
            "store": {"dir": str(self.out)},
            "run": run,
        }

    def recipe(self) -> Recipe:
        """The recipe as stnkit validates it (``.to_yaml()`` shows it)."""
        return parse_recipe(self.recipe_data(), base_dir=Path.cwd())

    # -- running ---------------------------------------------------------------------------------

    def fit(self, resume: str | Path | None = None) -> FitResult:
        """Train and tune; return how the run ended. ``resume``: a run file this Tuner's settings
        made (stopped by Ctrl-C or a crash), continued exactly from its last checkpoint.

        Ctrl-C finishes the current step, checkpoints and returns with status ``interrupted``.
        """
        from stnkit import runner

        if self._fitted:
            raise UsageError(
                "fit() was already called on this Tuner, and a Tuner runs once: make a new Tuner to "
                "train again (or pass resume= to a new Tuner to continue a run file)"
            )
        self._check_first_batch()  # a mistake found here leaves the Tuner ready for another try
        self._fitted = True
        observers = self._observers()
        built = _Copies(self.model)
        if resume is None:
            self._bind(built)
            result = runner.run(self.recipe(), out_dir=self.out, observers=observers)
        else:
            self._adopt(Path(resume), built)
            result = runner.resume(resume, observers=observers)
        return FitResult(result.path, result.end, tuner=self, model=built.last)

    def resume(self, path: str | Path) -> FitResult:
        """``fit(resume=path)``."""
        return self.fit(resume=path)

    def replay(
        self,
        path: str | Path,
        model_factory: ModelFactory,
        *,
        final: bool = False,
        out: str | Path | None = None,
    ) -> FitResult:
        """Train ``model_factory()`` (a fresh, plain model) on the schedule the run file ``path``
        found (``final=True``: at its final values), with this Tuner's DataLoaders and loss."""
        from stnkit.analysis.replay import plan_replay
        from stnkit.runner import run

        plan = plan_replay(path, final=final, out_dir=out)
        stored = plan.recipe.model_dump(mode="json")
        fresh = _Fresh(model_factory)
        self._rebind(stored, model=fresh)
        result = run(plan.recipe, out_dir=plan.out_dir, observers=self._observers(), metadata=plan.metadata)
        return FitResult(result.path, result.end, tuner=self, model=fresh.last)

    # -- helpers ---------------------------------------------------------------------------------

    def _make_loaders(self) -> tuple[DataLoader[Any], ...]:
        train, valid, test = self.loaders
        return (train, valid) if test is None else (train, valid, test)

    def _bind(self, model: Any) -> None:
        """Put this Tuner's objects under its keys (another Tuner of the same name may have used them)."""
        values = {"model": model, "data": self._make_loaders, "loss": _Named(self.loss)}
        for role, spec in self._keys.items():
            key = live.key_of(spec)
            assert key is not None
            live.put(role, values[role], key=key)

    def _observers(self) -> list[object]:
        if self.progress == "quiet":
            return []
        from rich.console import Console

        from stnkit.progress import RichProgress, make_progress

        if self.progress == "notebook":
            return [RichProgress(Console(force_jupyter=True))]
        return [make_progress(Console(stderr=True))]

    def _adopt(self, path: Path, model: _Copies) -> None:
        """Put this Tuner's objects under the keys the run file's recipe names, after checking
        that the run was made with these settings."""
        from stnkit.store.reader import open_run

        stored = open_run(path).recipe
        if not stored:
            raise RunFileError(f"{path} holds no recipe to resume with")
        self._rebind(stored, model=model)
        mine = self.recipe().model_dump(mode="json")
        theirs = parse_recipe(stored).model_dump(mode="json")
        for section in ("store",):
            mine.pop(section, None)
            theirs.pop(section, None)
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise UsageError(
                f"{path} was made with other settings than this Tuner's (they differ in: "
                f"{', '.join(differ)}); resume it with the Tuner settings that made it"
            )

    def _rebind(self, stored: Mapping[str, Any], model: Any) -> None:
        """Register this Tuner's objects under the ``stnkit.live`` keys of a stored recipe."""
        sections = {"model": stored.get("model") or {}, "data": stored.get("data") or {}}
        wanted = {
            "model": sections["model"].get("target"),
            "data": sections["data"].get("target"),
            "loss": sections["data"].get("loss"),
        }
        values = {"model": model, "data": self._make_loaders, "loss": _Named(self.loss)}
        for role, spec in wanted.items():
            key = live.key_of(spec) if isinstance(spec, str) else None
            if key is None:
                continue
            if role == "loss" and self.loss is None:
                raise UsageError("the run was made with a loss function: pass the same loss= to the Tuner")
            live.put(role, values[role], key=key)
            self._keys[role] = live.target(key)

    def _check_first_batch(self) -> None:
        """One forward pass of the plain model on the first training batch: device, float type,
        output and loss, each checked with a message that says what to change."""
        train = self.loaders[0]
        raw = next(iter(train), None)
        if raw is None:
            raise UsageError("the train DataLoader yields no batch: its data set is empty")
        batch = to_batch(raw, "the train DataLoader", self.inputs, self.targets)
        device = torch.device(self.device)
        inputs = batch.inputs.to(device)
        float_types = {p.dtype for p in self.model.parameters() if p.is_floating_point()}
        if inputs.is_floating_point() and float_types and inputs.dtype not in float_types:
            kinds = ", ".join(sorted(str(t).removeprefix("torch.") for t in float_types))
            raise UsageError(
                f"the model's parameters are {kinds} but the batches' inputs are "
                f"{str(inputs.dtype).removeprefix('torch.')}: make them match (model.float(), "
                "or convert the inputs in the DataLoader)"
            )
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                output = self.model(inputs)
        except Exception as error:
            raise UsageError(
                f"the model's forward failed on the first training batch ({describe_batch(raw)}): "
                f"{type(error).__name__}: {error}"
            ) from error
        finally:
            self.model.train(was_training)
        if not isinstance(output, Tensor):
            return  # the converted model reports what it cannot use
        targets = batch.targets.to(device)
        if self.loss is not None:
            with torch.no_grad():
                LossTask(self.loss, _label(self.loss)).loss(output, targets)
        integer = not targets.is_floating_point() and targets.dtype != torch.bool
        if integer and self.task != "regression" and output.ndim >= 2:
            self._num_classes = int(output.shape[-1])


class _Copies:
    """The user's model as the ``module`` component's factory: a copy per call, since validation
    converts one to learn what it consumes and the build converts another; ``last`` is the one
    the run trains. The user's own object stays as it was."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.last: nn.Module | None = None

    def __call__(self) -> nn.Module:
        try:
            self.last = copy.deepcopy(self.model)
        except Exception as error:
            raise UsageError(
                f"the model cannot be copied (copy.deepcopy failed: {type(error).__name__}: {error}); "
                "stnkit trains a converted copy and leaves the given model as it is"
            ) from error
        return self.last


class _Fresh:
    """A model factory: a new plain model per build (replays)."""

    def __init__(self, factory: ModelFactory) -> None:
        self.factory = factory
        self.last: nn.Module | None = None

    def __call__(self) -> nn.Module:
        model = self.factory()
        if not isinstance(model, nn.Module):
            raise UsageError(f"the model factory returned {type(model).__name__}, not an nn.Module")
        self.last = model
        return model


class _Named:
    """The user's loss, callable under a readable name."""

    def __init__(self, loss: Callable[[Tensor, Tensor], Tensor] | None) -> None:
        self.loss = loss
        self.__qualname__ = _label(loss)

    def __call__(self, prediction: Tensor, targets: Tensor) -> Tensor:
        assert self.loss is not None
        return self.loss(prediction, targets)


def _label(loss: object) -> str:
    name = getattr(loss, "__qualname__", None)
    return str(name) if isinstance(name, str) else type(loss).__name__


def _declaration(name: str, value: float | Mapping[str, Any]) -> dict[str, Any]:
    """A recipe declaration from a Tuner's ``hyperparameters`` entry."""
    from stnkit.convert.spec import is_dropout_name, is_weight_decay_name

    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"hyperparameters[{name!r}] must be a number or a declaration dict, not {value!r}")
    if is_dropout_name(name):
        return {"kind": "unit", "init": float(value)}
    if is_weight_decay_name(name):
        return {"kind": "positive", "init": float(value), "per_example": False}
    raise UsageError(
        f"hyperparameters[{name!r}]: give a declaration such as {{'kind': 'unit', 'init': {value!r}}}; "
        "a bare value serves only names the conversion rules know (dropout, <part>_dropout, "
        "weight_decay, <part>_weight_decay)"
    )


def _model_device(model: nn.Module, asked: str | torch.device | None) -> str:
    """The device the run trains on: the model's. A model spread over several devices, on one
    torch cannot train on, or elsewhere than ``asked`` is an error."""
    devices = {t.device for t in [*model.parameters(), *model.buffers()]}
    if len(devices) > 1:
        where = ", ".join(sorted(map(str, devices)))
        raise UsageError(
            f"the model's parameters lie on several devices ({where}): move it to one (model.to(...))"
        )
    here = next(iter(devices), torch.device("cpu") if asked is None else torch.device(asked))
    if here.type not in _TRAINABLE_DEVICES:
        raise UsageError(
            f"the model's parameters are on device {str(here)!r}, which holds no data to train: "
            "build it on the CPU or a GPU (model.to('cpu'))"
        )
    wanted = None if asked is None else torch.device(asked)
    # "cuda" asks for the current GPU, which a model on cuda:N is on
    same = wanted is None or wanted == here or (wanted.type == here.type == "cuda" and wanted.index is None)
    if not same:
        raise UsageError(
            f"the model is on {here} but device={str(asked)!r}: move it (model.to({str(asked)!r})) "
            "or leave device out"
        )
    return str(here)


def _run_name(class_name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", class_name).strip("-._").lower()
    return name[:60] or "model"
