"""Running a recipe: validate, build, open the store, train, close. The library's main entry point."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stnkit import distributed
from stnkit.allocator import tune_allocator
from stnkit.build import Built, build, resolve, resolve_device, store_settings
from stnkit.engine import Engine
from stnkit.errors import RecipeError, RunFileError, UsageError
from stnkit.events import Plan, RunEnd, RunInfo
from stnkit.interrupts import Deferral
from stnkit.killpoints import signal_point
from stnkit.loaders import check_own_loss
from stnkit.nn import count_parameters
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import Recipe, load_recipe, parse_recipe
from stnkit.store.lock import lock_path, writer_alive

__all__ = ["RunResult", "prepare", "resume", "run", "run_path", "validate"]

_log = logging.getLogger("stnkit")


@dataclass(frozen=True)
class RunResult:
    """How a run ended and where it was recorded."""

    path: Path | None
    end: RunEnd

    @property
    def status(self) -> str:
        return self.end.status


def _as_recipe(recipe: Recipe | str | Path, overrides: Sequence[str]) -> Recipe:
    if isinstance(recipe, Recipe):
        if overrides:
            raise TypeError("overrides apply to recipe files; edit the Recipe object instead")
        return recipe.checked()  # edits made in Python are held to the recipe's own rules
    return load_recipe(recipe, overrides)


def validate(
    recipe: Recipe | str | Path, overrides: Sequence[str] = (), plugins: Plugins | None = None
) -> Recipe:
    """Validate a recipe fully: structure, components, hyperparameter cross-checks, and its data,
    which is opened and checked as a run would (a bad data file is a
    :class:`~stnkit.errors.DataError`); the model is built too, so nothing a run checks before
    its run file exists is left out."""
    plugins = plugins or load_plugins()
    parsed = _as_recipe(recipe, overrides)
    build(resolve(parsed, plugins))
    return parsed


def prepare(
    recipe: Recipe | str | Path, overrides: Sequence[str] = (), plugins: Plugins | None = None
) -> Built:
    """Validate and build a run without training: data loaded, model and optimizers made."""
    plugins = plugins or load_plugins()
    return build(resolve(_as_recipe(recipe, overrides), plugins))


def run_path(out_dir: Path, name: str) -> Path:
    """``<out_dir>/<name>-<UTC timestamp>.h5``, suffixed ``-1``, ``-2``... if it is taken.

    The name is claimed atomically by creating its writer-lock sidecar exclusively: two runs
    started in the same second in one folder (parallel seeds, ``tune --jobs``) would otherwise
    both pick the same name and the second would stop at the first one's lock. The store's
    writer lock reuses the sidecar; :func:`release_path` drops a claim that was never used.
    """
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for counter in itertools.count():
        suffix = f"-{counter}" if counter else ""
        path = out_dir / f"{name}-{stamp}{suffix}.h5"
        if path.exists():
            continue
        try:
            os.close(os.open(lock_path(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        signal_point("claim")
        return path
    raise AssertionError("unreachable")


def release_path(path: Path | None) -> None:
    """Remove the name claim of a run that never started writing (it failed before its store
    opened): no stray lock file is left. A finished store has removed the sidecar itself."""
    if path is None or path.exists() or writer_alive(path):
        return
    with contextlib.suppress(OSError):
        lock_path(path).unlink()


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the run folder {out_dir}: {error.strerror or error}") from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write run files to {out_dir}: not a writable folder")


def run_info(built: Built, path: Path | None, metadata: Mapping[str, str] | None = None) -> RunInfo:
    space = built.parts.space
    recipe = built.recipe
    world = distributed.world()
    elementary, response = count_parameters(built.parts.model)
    return RunInfo(
        name=recipe.name,
        path=path,
        hyperparameters=space.names,
        initial_values=space.values(),
        initial_scales=space.scales(),
        integer=tuple(n for n, k in space.kinds.items() if k.integer),
        plan=Plan.of(
            epochs=recipe.train.epochs,
            steps_per_epoch=built.dataset.info.steps_per_epoch,
            max_steps=recipe.train.max_steps,
            warmup_epochs=recipe.train.warmup_epochs,
            train_steps=recipe.train.train_steps,
            hyper_steps=recipe.train.hyper_steps,
            tunes=built.response.tunes,
            log_every=recipe.run.log_every,
        ),
        metrics=built.parts.task.metrics,
        device=str(built.device),
        tunes=built.response.tunes,
        seed=recipe.seed,
        metadata=dict(metadata or {}),
        kinds=dict(space.kinds),
        world_size=world.world_size,
        backend=world.backend,
        parameters_elementary=elementary,
        parameters_response=response,
    )


def _join(recipe: Recipe) -> distributed.Distributed:
    """Under torchrun: join the process group the recipe asks for (before building anything).
    Outside torchrun, or when the device is wrong, the current (one-process) part."""
    if not distributed.launched():
        return distributed.current()
    try:
        device = distributed.local_device(resolve_device(recipe.device))
    except RecipeError:
        return distributed.current()  # resolve() reports it, identically on every rank
    return distributed.setup(recipe.train.distributed.backend, recipe.run.distributed_timeout, device)


def _distribute(built: Built, ranks: distributed.Distributed) -> None:
    """Under torchrun: check the batches divide, give every rank rank 0's initial weights and
    h/s (see :mod:`stnkit.distributed`)."""
    if not ranks.world.active:
        return
    dataset = built.dataset
    # the first batch of an epoch and of the hyper stream is a full one; peek with copies of the
    # engine's generators so the run's own streams are untouched
    seed = built.recipe.seed
    first_train = next(iter(dataset.train_batches(1, _generator(seed))), None)
    hyper_size = None
    if built.response.tunes and built.recipe.train.hyper_steps > 0:
        hyper_size = next(iter(dataset.hyper_batches(_generator(seed + 1)))).size
    ranks.check_batches(0 if first_train is None else first_train.size, hyper_size)
    model, space = built.parts.model, built.parts.space
    ranks.broadcast_tensors_([*model.parameters(), *model.buffers(), *space.parameters()])


@contextlib.contextmanager
def _world(ranks: distributed.Distributed) -> Iterator[distributed.Distributed]:
    """``ranks`` is the current run's part for the block (:func:`stnkit.distributed.use`). Leave
    the process group at the end: cleanly after a normal end; after an error only forget it,
    since a clean exit would wait for ranks that may be gone."""
    with distributed.use(ranks):
        try:
            yield ranks
        except BaseException:
            ranks.teardown(clean=False)
            raise
        ranks.teardown()


def _generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


def _build_everywhere(make: Any, ranks: distributed.Distributed) -> Built:
    def build_and_distribute() -> Built:
        built: Built = make()
        _distribute(built, ranks)
        return built

    return ranks.collectively(build_and_distribute, "building the run")


def run(
    recipe: Recipe | str | Path,
    *,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    plugins: Plugins | None = None,
    observers: Iterable[object] = (),
    store: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> RunResult:
    """Run an experiment end to end and return how it ended.

    ``recipe``: a path to a YAML recipe or a :class:`Recipe`. ``overrides``: ``dotted.key=value``
    strings. ``out_dir`` overrides ``store.dir``. ``observers``: extra plugin objects receiving the
    lifecycle hooks (progress views, loggers). ``store=False`` records nothing on disk.
    ``metadata``: extra facts stored with the run as ``meta.<key>`` attributes.

    Bad input raises a :class:`~stnkit.errors.UsageError` before any run file exists. Ctrl-C (or
    SIGTERM) finishes the current step, checkpoints and ends the run as ``interrupted``.
    """
    plugins = plugins or load_plugins()
    parsed = _as_recipe(recipe, overrides)
    with _world(_join(parsed)) as ranks:
        return _run(parsed, plugins, out_dir, observers, store, metadata, ranks)


def _run(
    parsed: Recipe,
    plugins: Plugins,
    out_dir: str | Path | None,
    observers: Iterable[object],
    store: bool,
    metadata: Mapping[str, str] | None,
    ranks: distributed.Distributed,
) -> RunResult:
    built = _build_everywhere(lambda: prepare(parsed, (), plugins), ranks)
    check_own_loss(built)  # a user's loss that is not a scalar: found before the run file exists
    recipe_obj = built.recipe

    def open_store() -> tuple[Path | None, object | None]:
        if not (store and ranks.world.is_main):
            return None, None  # under torchrun rank 0 alone writes the run file
        folder = Path(out_dir) if out_dir is not None else recipe_obj.store.dir
        if not folder.is_absolute() and out_dir is None:
            folder = Path.cwd() / folder
        _check_writable(folder)
        path = run_path(folder, recipe_obj.name)
        try:
            return path, plugins.hook.stnkit_make_store(
                path=path, settings=store_settings(recipe_obj), resume=False
            )
        except BaseException:
            release_path(path)
            raise

    # from the run name's claim until the run's own handler is in place, a signal is held back:
    # landing in between it would leave a half-made file or an orphaned lock claim
    with Deferral() as held:
        path, run_store = ranks.collectively(open_store, "creating the run file")
        signal_point("store")
        try:
            info = run_info(built, path, metadata)
            return _execute(built, plugins, info, run_store, observers, ranks, state=None, held=held)
        finally:
            release_path(path)


def resume(
    path: str | Path,
    *,
    plugins: Plugins | None = None,
    observers: Iterable[object] = (),
    notice: Callable[[str], None] | None = None,
) -> RunResult:
    """Continue a stopped or crashed run from its latest checkpoint, in the same run file.

    On the CPU the continued run's trajectory is identical to that of an uninterrupted run. A run
    killed before its first checkpoint starts again from the beginning in the same file (its
    recipe and seed are stored, so the result is the same); ``notice`` (default: a warning on
    the ``stnkit`` logger) is told so in one line.
    """
    from stnkit.store.reader import open_run

    plugins = plugins or load_plugins()
    path = Path(path)
    record = open_run(path)
    status = str(record.attrs.get("status"))
    if status == "completed":
        raise RunFileError(f"{path} has already completed; there is nothing to resume")
    data = record.recipe
    if not data:
        raise RunFileError(f"{path} holds no recipe to resume with")
    base_dir = record.base_dir or path.parent
    recipe = parse_recipe(data, base_dir=base_dir, source=str(record.attrs.get("recipe_source") or path))
    recorded_world = int(record.attrs.get("world_size", 1))
    with _world(_join(recipe)) as ranks:
        now = ranks.world.world_size
        if recorded_world != now:
            raise RunFileError(
                f"{path} was trained on {recorded_world} process(es); resume it with the same world "
                f"size (now {now}): the data split and the random streams depend on it"
            )
        return _resume(path, recipe, record, plugins, observers, notice, ranks)


def _resume(
    path: Path,
    recipe: Recipe,
    record: Any,
    plugins: Plugins,
    observers: Iterable[object],
    notice: Callable[[str], None] | None,
    ranks: distributed.Distributed,
) -> RunResult:
    built = _build_everywhere(lambda: build(resolve(recipe, plugins)), ranks)

    def open_store() -> tuple[object | None, dict[str, Any] | None]:
        # rank 0 alone opens the run file; the others receive its checkpoint
        if not ranks.world.is_main:
            return None, None
        opened = plugins.hook.stnkit_make_store(path=path, settings=store_settings(recipe), resume=True)
        if opened is None or not hasattr(opened, "load_checkpoint"):
            raise RunFileError("the installed run store cannot resume runs")
        return opened, opened.load_checkpoint()

    with Deferral() as held:
        run_store, state = ranks.collectively(open_store, "opening the run file")
        state = ranks.broadcast_object(state)
        info = run_info(built, path, record.metadata)
        if state is None:
            if ranks.world.is_main:
                (notice or _log.warning)(
                    f"{path} has no checkpoint yet: starting the run again from the beginning, "
                    "in the same file"
                )
        else:
            info = dataclasses.replace(info, start_step=int(state["step"]), start_epoch=int(state["epoch"]))
        return _execute(built, plugins, info, run_store, observers, ranks, state=state, held=held)


def _execute(
    built: Built,
    plugins: Plugins,
    info: RunInfo,
    run_store: object | None,
    observers: Iterable[object],
    ranks: distributed.Distributed,
    state: dict[str, Any] | None,
    held: Deferral | None = None,
) -> RunResult:
    tune_allocator()  # reuse freed activation memory instead of mapping it anew each step
    engine = Engine(
        built, plugins.hook, info, checkpoint_steps=built.recipe.store.checkpoint_steps, ranks=ranks
    )
    if state is not None:
        engine.restore(state)
    registered: list[object] = []
    # the recipe's own observers (``observers:``) come first, then the caller's (progress views)
    enabled = [chosen.cls(chosen.config, Path.cwd()) for chosen in built.resolved.observers]
    observers = [*enabled, *observers]
    try:
        if run_store is not None:
            plugins.pm.register(run_store, name=f"store:{info.path}")
            registered.append(run_store)
        # under torchrun rank 0 alone prints progress
        for index, observer in enumerate(observers if ranks.world.is_main else ()):
            plugins.pm.register(observer, name=f"observer:{index}:{id(observer)}")
            registered.append(observer)
        with _stop_on_signals(engine, held):
            end = engine.run()
    finally:
        for plugin in registered:
            close = getattr(plugin, "close", None)
            if callable(close):
                close()
            plugins.pm.unregister(plugin)
    return RunResult(info.path, end)


@contextlib.contextmanager
def _stop_on_signals(engine: Engine, held: Deferral | None = None) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM asks the engine to stop cleanly after its current step (with a
    checkpoint); a second one interrupts at once. Signals ``held`` back while the run file was
    made count as if they came now."""
    received = held.hand_over() if held is not None else []
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    first: list[float] = []
    # torchrun forwards the terminal's Ctrl-C to its workers, which got it from the terminal
    # too: under torchrun a repeat within a few seconds is that echo, not a second request
    grace = 5.0 if engine.ranks.world.active else 0.0

    def handler(signum: int, frame: Any) -> None:
        if not first:
            first.append(time.monotonic())
            engine.request_stop()
            if not grace:
                signal.signal(signum, previous[signum])
        elif time.monotonic() - first[0] > grace:
            signal.signal(signum, previous[signum])
            raise KeyboardInterrupt

    for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        if received:  # one stop request, however many came while held back
            handler(received[0], None)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
