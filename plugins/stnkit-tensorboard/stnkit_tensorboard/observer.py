"""Log a run to TensorBoard event files, live (an observer) or from its run file (an export).

Scalars written, all against one x axis — the weight step, TensorBoard's ``global_step`` — so
curves line up and a resumed run can drop what its first attempt logged after the checkpoint:

=============================  ===============================================================
tag                            value
=============================  ===============================================================
``train/loss``, ``train/lr``   training loss and learning rate of each weight step
``hyper/val_loss``             validation loss of each hyper step
``hyperparameter/<name>``      the hyperparameter's value after each hyper step (and at 0, its
                               initial value)
``sigma/<name>``               its perturbation scale σ after each hyper step
``epoch/train_loss``,          at each epoch's last step: its training loss, full validation
``epoch/val_loss``,            pass (loss and every metric) and learning rate
``epoch/val_<metric>``,
``epoch/lr``
``test/<metric>``              at the last step: test metrics of the best state
=============================  ===============================================================

Every run writes to its own folder, ``<dir>/<run file stem>``, so ``tensorboard --logdir DIR``
overlays runs. A live run logs every weight step; a run file keeps one training point per
``run.log_every`` steps (their mean loss), so an export of it has fewer ``train/*`` points; every
other curve of an export is the live one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from stnkit import hookimpl
from stnkit.config import ComponentConfig
from stnkit.errors import UsageError
from stnkit.events import EpochEnd, RunEnd, RunInfo, StepEnd
from stnkit.observer import Observer

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from stnkit.store.reader import RunRecord

__all__ = ["TensorBoardObserver", "missing_package"]

_INSTALL = "pip install tensorboard (or reinstall stnkit-tensorboard, which depends on it)"


def missing_package() -> str | None:
    """Why TensorBoard event files cannot be written here, or ``None`` when they can."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as error:
        return f"the tensorboard observer needs the tensorboard package ({error}): {_INSTALL}"
    return None


def _writer(folder: Path, purge_step: int | None = None, flush_seconds: float = 10.0) -> SummaryWriter:
    problem = missing_package()
    if problem:
        raise UsageError(problem)
    from torch.utils.tensorboard import SummaryWriter

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"cannot create the TensorBoard folder {folder}: {error.strerror or error}"
        ) from None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step, flush_secs=math.ceil(flush_seconds))


class _Scalars:
    """The tag layout shared by live logging and export: one method per kind of record."""

    def __init__(self, writer: SummaryWriter) -> None:
        self.writer = writer

    def _add(self, tag: str, value: float, step: int, walltime: float | None) -> None:
        # TensorBoard stores NaN/Inf faithfully; a diverged run's last point is worth seeing
        self.writer.add_scalar(tag, float(value), global_step=int(step), walltime=walltime)

    def weight(self, step: int, loss: float, lr: float, walltime: float | None = None) -> None:
        self._add("train/loss", loss, step, walltime)
        self._add("train/lr", lr, step, walltime)

    def hyper(
        self,
        step: int,
        val_loss: float | None,
        values: Mapping[str, float],
        scales: Mapping[str, float],
        walltime: float | None = None,
    ) -> None:
        if val_loss is not None:
            self._add("hyper/val_loss", val_loss, step, walltime)
        for name, value in values.items():
            self._add(f"hyperparameter/{name}", value, step, walltime)
        for name, sigma in scales.items():
            self._add(f"sigma/{name}", sigma, step, walltime)

    def epoch(
        self,
        step: int,
        train_loss: float,
        val_loss: float,
        metrics: Mapping[str, float],
        lr: float,
        walltime: float | None = None,
    ) -> None:
        self._add("epoch/train_loss", train_loss, step, walltime)
        self._add("epoch/val_loss", val_loss, step, walltime)
        for metric, value in metrics.items():
            if metric != "loss":  # the same number as epoch/val_loss
                self._add(f"epoch/val_{metric}", value, step, walltime)
        self._add("epoch/lr", lr, step, walltime)

    def test(self, step: int, metrics: Mapping[str, float], walltime: float | None = None) -> None:
        for metric, value in metrics.items():
            self._add(f"test/{metric}", value, step, walltime)


class TensorBoardObserver(Observer):
    """Writes a run's losses, metrics, learning rate and hyperparameter trajectories (value and σ
    per hyper step) to TensorBoard event files under ``<dir>/<run file stem>``.

    Switched on per run: ``observers: {tensorboard: {dir: runs/tb}}`` in a recipe, or
    ``stnkit run RECIPE --tensorboard runs/tb``.
    """

    name = "tensorboard"
    exports = True

    class Config(ComponentConfig):
        dir: Path = Field(
            Path("runs/tensorboard"),
            description="root log folder (relative to where stnkit runs); each run writes to "
            "DIR/<run file stem>, so `tensorboard --logdir DIR` overlays runs",
        )
        weight_steps: bool = Field(
            True, description="log train/loss and train/lr at every weight step (false: per epoch only)"
        )
        flush_seconds: float = Field(10.0, gt=0, description="flush event files at least this often")

    config: Config

    def __init__(self, config: Config, base_dir: Path) -> None:
        super().__init__(config, base_dir)
        self._scalars: _Scalars | None = None
        self.folder: Path | None = None

    @classmethod
    def check_environment(cls) -> str | None:
        return missing_package()

    def _root(self) -> Path:
        root = self.config.dir
        return root if root.is_absolute() else self.base_dir / root

    # -- live run ------------------------------------------------------------------------------

    @hookimpl
    def stnkit_run_start(self, run: RunInfo) -> None:
        stem = run.path.stem if run.path is not None else run.name
        self.folder = self._root() / stem
        # a resumed run continues from its checkpoint, taken after every event of its step:
        # purge_step drops what the first attempt logged after it, so each step shows once
        purge = run.start_step + 1 if run.start_step else None
        writer = _writer(self.folder, purge_step=purge, flush_seconds=self.config.flush_seconds)
        self._scalars = _Scalars(writer)
        # hyperparameters start where the recipe put them: point 0 of every curve
        if run.hyperparameters and not run.start_step:
            self._scalars.hyper(0, None, run.initial_values, run.initial_scales)

    @hookimpl
    def stnkit_step_end(self, run: RunInfo, step: StepEnd) -> None:
        if self._scalars is None:
            return
        if step.phase == "weight":
            if self.config.weight_steps:
                self._scalars.weight(step.step, step.loss, step.lr)
        else:
            self._scalars.hyper(step.step, step.loss, step.values or {}, step.scales or {})

    @hookimpl
    def stnkit_epoch_end(self, run: RunInfo, epoch: EpochEnd) -> None:
        if self._scalars is None:
            return
        self._scalars.epoch(epoch.step, epoch.train_loss, epoch.val_loss, epoch.val_metrics, epoch.lr)

    @hookimpl
    def stnkit_run_end(self, run: RunInfo, result: RunEnd) -> None:
        if self._scalars is None:
            return
        if result.test_metrics:
            self._scalars.test(result.step, result.test_metrics)
        self._scalars.writer.flush()

    def close(self) -> None:
        if self._scalars is not None:
            self._scalars.writer.close()
            self._scalars = None

    # -- stored run ----------------------------------------------------------------------------

    @classmethod
    def export(cls, record: RunRecord, output: Path, config: Any) -> list[Path]:
        """Write a stored run's tables as event files under ``output/<run file stem>``."""
        folder = output / record.path.stem
        if folder.exists() and any(folder.iterdir()):
            # TensorBoard merges every event file of a folder: a second export would double the curves
            raise UsageError(f"{folder} already holds event files; remove it or export to another folder")
        writer = _writer(folder)
        scalars = _Scalars(writer)
        start = _created(record)
        names = record.hyperparameters
        try:
            if names:
                scalars.hyper(0, None, record.initial, record.initial_scales, walltime=start)
            hyper = record.hyper
            for row in range(len(hyper.get("step", ()))):
                scalars.hyper(
                    int(hyper["step"][row]),
                    float(hyper["val_loss"][row]),
                    _row(names, hyper.get("values"), row),
                    _row(names, hyper.get("scales"), row),
                    walltime=_when(start, hyper, row),
                )
            if config.weight_steps:
                train = record.train
                for row in range(len(train.get("step", ()))):
                    scalars.weight(
                        int(train["step"][row]),
                        float(train["loss"][row]),
                        float(train["lr"][row]),
                        walltime=_when(start, train, row),
                    )
            epochs = record.epochs
            metrics: dict[str, np.ndarray] = epochs.get("metrics", {})
            last_step = 0
            for row in range(len(epochs.get("epoch", ()))):
                last_step = int(epochs["step"][row])
                scalars.epoch(
                    last_step,
                    float(epochs["train_loss"][row]),
                    float(epochs["val_loss"][row]),
                    {metric: float(series[row]) for metric, series in metrics.items()},
                    float(epochs["lr"][row]),
                    walltime=_when(start, epochs, row),
                )
            if record.test:
                scalars.test(max(last_step, record.steps), record.test, walltime=_when(start, epochs, -1))
        finally:
            writer.close()
        return sorted(folder.iterdir())


def _row(names: tuple[str, ...], matrix: np.ndarray | None, row: int) -> dict[str, float]:
    if matrix is None:
        return {}
    values = np.asarray(matrix[row]).reshape(-1)
    return {name: float(values[i]) for i, name in enumerate(names)}


def _created(record: RunRecord) -> float | None:
    """The run's start as a Unix time, for the event walltimes of an export."""
    import datetime as dt

    created = record.attrs.get("created")
    if not created:
        return None
    try:
        return dt.datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _when(start: float | None, table: Mapping[str, Any], row: int) -> float | None:
    times = table.get("time")
    if start is None or times is None or len(times) == 0:
        return None
    return start + float(times[row])
