"""Running a recipe: validate, build, open the store, train, close. The library's main entry point."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stnkit.allocator import tune_allocator
from stnkit.build import Built, build, resolve
from stnkit.engine import Engine
from stnkit.errors import RunFileError, UsageError
from stnkit.events import RunEnd, RunInfo
from stnkit.plugins import Plugins, load_plugins
from stnkit.recipe import Recipe, load_recipe, parse_recipe

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
        return recipe
    return load_recipe(recipe, overrides)


def validate(
    recipe: Recipe | str | Path, overrides: Sequence[str] = (), plugins: Plugins | None = None
) -> Recipe:
    """Validate a recipe fully (structure, components, hyperparameter cross-checks)."""
    plugins = plugins or load_plugins()
    parsed = _as_recipe(recipe, overrides)
    resolve(parsed, plugins)
    return parsed


def prepare(
    recipe: Recipe | str | Path, overrides: Sequence[str] = (), plugins: Plugins | None = None
) -> Built:
    """Validate and build a run without training: data loaded, model and optimizers made."""
    plugins = plugins or load_plugins()
    return build(resolve(_as_recipe(recipe, overrides), plugins))


def run_path(out_dir: Path, name: str) -> Path:
    """``<out_dir>/<name>-<UTC timestamp>.h5``, suffixed ``-1``, ``-2``... if it already exists."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{name}-{stamp}.h5"
    counter = 1
    while path.exists():
        path = out_dir / f"{name}-{stamp}-{counter}.h5"
        counter += 1
    return path


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
    return RunInfo(
        name=recipe.name,
        path=path,
        hyperparameters=space.names,
        initial_values=space.values(),
        initial_scales=space.scales(),
        integer=tuple(n for n, k in space.kinds.items() if k.integer),
        epochs=recipe.train.epochs,
        steps_per_epoch=built.dataset.info.steps_per_epoch,
        metrics=built.parts.task.metrics,
        device=str(built.device),
        tunes=built.response.tunes,
        seed=recipe.seed,
        metadata=dict(metadata or {}),
    )


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
    built = prepare(recipe, overrides, plugins)
    recipe_obj = built.recipe
    path: Path | None = None
    run_store: object | None = None
    if store:
        folder = Path(out_dir) if out_dir is not None else recipe_obj.store.dir
        if not folder.is_absolute() and out_dir is None:
            folder = Path.cwd() / folder
        _check_writable(folder)
        path = run_path(folder, recipe_obj.name)
        run_store = plugins.hook.stnkit_make_store(path=path, recipe=recipe_obj, resume=False)
    info = run_info(built, path, metadata)
    return _execute(built, plugins, info, run_store, observers, state=None)


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
    built = build(resolve(recipe, plugins))
    run_store = plugins.hook.stnkit_make_store(path=path, recipe=recipe, resume=True)
    if run_store is None or not hasattr(run_store, "load_checkpoint"):
        raise RunFileError("the installed run store cannot resume runs")
    state = run_store.load_checkpoint()
    info = run_info(built, path, record.metadata)
    if state is None:
        (notice or _log.warning)(
            f"{path} has no checkpoint yet: starting the run again from the beginning, in the same file"
        )
    else:
        info = dataclasses.replace(info, start_step=int(state["step"]), start_epoch=int(state["epoch"]))
    return _execute(built, plugins, info, run_store, observers, state=state)


def _execute(
    built: Built,
    plugins: Plugins,
    info: RunInfo,
    run_store: object | None,
    observers: Iterable[object],
    state: dict[str, Any] | None,
) -> RunResult:
    tune_allocator()  # reuse freed activation memory instead of mapping it anew each step
    store_config = built.recipe.store
    minutes = store_config.checkpoint_minutes
    engine = Engine(
        built,
        plugins.hook,
        info,
        checkpoint_steps=store_config.checkpoint_steps,
        checkpoint_seconds=None if minutes is None else 60.0 * minutes,
    )
    if state is not None:
        engine.restore(state)
    registered: list[object] = []
    try:
        if run_store is not None:
            plugins.pm.register(run_store, name=f"store:{info.path}")
            registered.append(run_store)
        for index, observer in enumerate(observers):
            plugins.pm.register(observer, name=f"observer:{index}:{id(observer)}")
            registered.append(observer)
        with _stop_on_signals(engine):
            end = engine.run()
    finally:
        for plugin in registered:
            close = getattr(plugin, "close", None)
            if callable(close):
                close()
            plugins.pm.unregister(plugin)
    return RunResult(info.path, end)


@contextlib.contextmanager
def _stop_on_signals(engine: Engine) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM asks the engine to stop cleanly after its current step (with a
    checkpoint); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        engine.request_stop()
        signal.signal(signum, previous[signum])

    for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
