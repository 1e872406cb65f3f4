"""Every hook stnkit calls, with the markers plugins use.

Plugins implement hooks with ``from stnkit import hookimpl``. Hooks evolve only by adding
arguments, and pluggy lets an implementation accept any subset of a hook's arguments, so a plugin
written against an older stnkit keeps working.

Registration hooks run once when the plugin manager is built; every plugin's implementation runs
and calls ``register(cls)`` for each component it provides. Lifecycle hooks run during a training
run, in the training process, and must be cheap: they are called on every step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stnkit.markers import PROJECT, hookimpl, hookspec

if TYPE_CHECKING:
    import typer

    from stnkit.events import EpochEnd, RunEnd, RunInfo, StepEnd
    from stnkit.settings import StoreSettings
    from stnkit.store.base import RunStore

#: the markers live in :mod:`stnkit.markers`; these names stay importable from here
__all__ = ["PROJECT", "hookimpl", "hookspec"]

Register = Callable[[type[Any]], object]


# -- registration --------------------------------------------------------------------------------


@hookspec
def stnkit_register_hyperparameter_kinds(register: Register) -> None:
    """Register hyperparameter kinds (maps between unconstrained and constrained values).

    :param register: call ``register(cls)`` with each subclass of
        :class:`stnkit.hyper.HyperKind` the plugin provides; ``cls.name`` is the ``kind:`` a
        recipe's hyperparameter declaration uses.
    """


@hookspec
def stnkit_register_response_models(register: Register) -> None:
    """Register best-response models: how the hypernetwork is fed and how steps are taken.

    :param register: call ``register(cls)`` with each subclass of
        :class:`stnkit.response.ResponseModel`; ``cls.name`` is the recipe's ``response.name``.
    """


@hookspec
def stnkit_register_models(register: Register) -> None:
    """Register network families built from best-response layers.

    :param register: call ``register(cls)`` with each subclass of :class:`stnkit.model.StnModel`;
        the class declares the hyperparameters it consumes in ``hyperparameters``.
    """


@hookspec
def stnkit_register_objectives(register: Register) -> None:
    """Register outer objectives: the loss hyper steps minimise on validation batches.

    :param register: call ``register(cls)`` with each subclass of :class:`stnkit.objective.Objective`.
    """


@hookspec
def stnkit_register_augmentations(register: Register) -> None:
    """Register data augmentations driven by hyperparameters.

    :param register: call ``register(cls)`` with each subclass of
        :class:`stnkit.augment.Augmentation`; augmentations run on training batches only.
    """


@hookspec
def stnkit_register_datasets(register: Register) -> None:
    """Register data sources yielding train / valid / test batches.

    :param register: call ``register(cls)`` with each subclass of :class:`stnkit.data.Dataset`.
    """


@hookspec
def stnkit_register_observers(register: Register) -> None:
    """Register run observers a recipe can switch on in its ``observers:`` section.

    :param register: call ``register(cls)`` with each subclass of :class:`stnkit.observer.Observer`;
        ``cls.name`` is the key under ``observers:`` (and an ``stnkit export --format`` if the class
        implements ``export``).
    """


@hookspec
def stnkit_register_commands(app: typer.Typer) -> None:
    """Add subcommands to the ``stnkit`` command line.

    :param app: the root :class:`typer.Typer`; add commands with ``@app.command()``. Raise
        :class:`stnkit.errors.StnkitError` subclasses for user errors so the CLI prints them cleanly.
    """


# -- factories -----------------------------------------------------------------------------------


@hookspec(firstresult=True)
def stnkit_make_store(path: Path, settings: StoreSettings, resume: bool) -> RunStore | None:
    """Create the store that records one run.

    The built-in HDF5 store is ``trylast``, so a plugin returning a store wins; return ``None`` to
    defer. The returned object is registered as a plugin for the run's duration, so it receives
    the lifecycle hooks below.

    :param path: the run file the user asked for (``<store.dir>/<name>-<UTC timestamp>.h5``).
    :param settings: what to record of the validated recipe (its YAML text, source file, base
        folder, response and kind names) and the ``run:`` / ``store:`` settings to obey.
    :param resume: ``path`` is an existing run to continue (``stnkit run --resume``); the store's
        ``load_checkpoint()`` is then called before the run starts.
    :returns: a :class:`stnkit.store.base.RunStore`, or ``None``.
    """


# -- lifecycle observers -------------------------------------------------------------------------


@hookspec
def stnkit_run_start(run: RunInfo) -> None:
    """A run is about to take its first step.

    :param run: names, sizes and hyperparameters of the run; the same object is passed to every
        later lifecycle hook of the run.
    """


@hookspec
def stnkit_step_end(run: RunInfo, step: StepEnd) -> None:
    """A weight step or a hyper step finished.

    :param run: the run.
    :param step: the step's phase, counters and loss; hyper steps also carry the current
        constrained hyperparameter values and perturbation scales.
    """


@hookspec
def stnkit_epoch_end(run: RunInfo, epoch: EpochEnd) -> None:
    """An epoch and its full validation pass finished.

    :param run: the run.
    :param epoch: the epoch's training loss, validation loss and metrics, learning rate and
        hyperparameter values.
    """


@hookspec
def stnkit_checkpoint(run: RunInfo, state: dict[str, Any], step: int) -> None:
    """The engine's complete state at a step boundary, to be saved for resuming.

    Called at every epoch end, at the configured mid-epoch interval and when a stop is requested.
    The state holds tensors and plain Python values only (``torch.load(weights_only=True)`` can
    read it back). The store saves it; other observers may ignore it.

    :param run: the run.
    :param state: what :meth:`stnkit.engine.Engine.restore` needs to continue exactly.
    :param step: weight steps taken so far.
    """


@hookspec
def stnkit_run_end(run: RunInfo, result: RunEnd) -> None:
    """A run ended, whatever the reason (``result.status`` says which).

    :param run: the run.
    :param result: final status, best validation loss, test metrics and final hyperparameters.
    """
