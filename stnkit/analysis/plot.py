"""``stnkit plot``: hyperparameter trajectories with their σ bands, and loss curves, of one or more runs.

Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global figure state, no display
needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from stnkit.analysis.common import run_labels
from stnkit.analysis.kinds import Presentation, rebuild_kinds, sigma_band
from stnkit.errors import UsageError
from stnkit.hyper.kinds import HyperKind
from stnkit.plugins import Plugins, load_plugins
from stnkit.store.reader import RunRecord

__all__ = ["Trajectory", "plot_runs", "trajectory"]

_PANEL_SIZE = (5.0, 3.2)  # inches per panel: wide enough for step counts, tall enough for a band


@dataclass(frozen=True)
class Trajectory:
    """One hyperparameter of one run over weight steps; ``low``/``high`` bound the σ band (or are
    ``None`` when the run did not perturb, or the kind could not be rebuilt)."""

    steps: np.ndarray
    values: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def trajectory(record: RunRecord, name: str, kind: HyperKind | None) -> Trajectory:
    """The trajectory of ``name`` as its components received it (a discrete kind's used values),
    starting from its initial value at step 0.

    Tuning runs record every hyper step; a run without hyper steps (fixed, replayed) records its
    values at each epoch end, which is what is drawn for it.
    """
    present = Presentation(record, {name: kind} if kind is not None else {})
    index = record.hyperparameters.index(name)
    table = record.hyper if len(record.hyper.get("step", ())) else record.epochs
    steps = np.concatenate([[0], np.asarray(table.get("step", []), dtype=np.float64)])
    values = np.concatenate([[record.initial[name]], _column(table.get("values"), index)])
    if not (record.attrs.get("tunes") and kind is not None and table is record.hyper):
        return Trajectory(steps, present.values(name, values))
    sigmas = np.concatenate([[record.initial_scales[name]], _column(table.get("scales"), index)])
    low, high = sigma_band(kind, values, sigmas)
    return Trajectory(
        steps, present.values(name, values), present.values(name, low), present.values(name, high)
    )


def _column(matrix: np.ndarray | None, index: int) -> np.ndarray:
    if matrix is None or np.ndim(matrix) != 2 or not len(matrix):
        return np.zeros(0)
    return np.asarray(matrix[:, index], dtype=np.float64)


def _check_output(output: Path, figure: Figure) -> None:
    formats = figure.canvas.get_supported_filetypes()
    suffix = output.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise UsageError(
            f"cannot tell the image format of {output}: end it with one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    if output.is_dir():
        raise UsageError(f"{output} is a folder: give a file name such as {output / 'runs.png'}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the folder {output.parent}: {error.strerror or error}") from None


def _panel_hyper(
    axes: Axes, name: str, records: Sequence[RunRecord], kinds: Sequence[dict[str, HyperKind]]
) -> None:
    kind_names = {r.kinds[r.hyperparameters.index(name)] for r in records if name in r.hyperparameters}
    axes.set_title(f"{name} ({', '.join(sorted(kind_names))})", fontsize=10)
    for i, (record, run_kinds) in enumerate(zip(records, kinds, strict=True)):
        if name not in record.hyperparameters:
            continue
        path = trajectory(record, name, run_kinds.get(name))
        colour = f"C{i % 10}"
        if path.low is not None and path.high is not None:
            axes.fill_between(path.steps, path.low, path.high, step="post", color=colour, alpha=0.15, lw=0)
        axes.plot(path.steps, path.values, drawstyle="steps-post", color=colour, lw=1.8)
        if len(path.steps) == 1:
            axes.plot(path.steps, path.values, "o", color=colour)
    # a kind asks for a log axis (values spanning decades); only if every run's kind asks for it
    asks = [run_kinds[name].log_scale for run_kinds in kinds if name in run_kinds]
    if asks and all(asks) and all(np.nanmin(line.get_ydata()) > 0 for line in axes.get_lines()):
        axes.set_yscale("log")
    axes.set_xlabel("weight step", fontsize=9)
    axes.grid(alpha=0.3)


def _panel_loss(axes: Axes, records: Sequence[RunRecord]) -> None:
    axes.set_title("loss", fontsize=10)
    for i, record in enumerate(records):
        colour = f"C{i % 10}"
        train_steps, train_loss = record.train.get("step", ()), record.train.get("loss", ())
        if len(train_steps):
            axes.plot(train_steps, train_loss, color=colour, lw=1.0, alpha=0.55)
        epoch_steps, val_loss = record.epochs.get("step", ()), record.epochs.get("val_loss", ())
        if len(epoch_steps):
            axes.plot(epoch_steps, val_loss, "o--", color=colour, lw=1.4, ms=3.5)
    styles = [
        Line2D([], [], color="0.35", lw=1.0, alpha=0.55, label="train (per log step)"),
        Line2D([], [], color="0.35", lw=1.4, ls="--", marker="o", ms=3.5, label="valid (per epoch)"),
    ]
    axes.legend(handles=styles, fontsize=8, loc="upper right")
    _robust_ylim(axes, records)
    axes.set_xlabel("weight step", fontsize=9)
    axes.grid(alpha=0.3)


def _robust_ylim(axes: Axes, records: Sequence[RunRecord]) -> None:
    """Keep the first few, much larger training losses from flattening the rest of the curves."""
    losses = [np.asarray(r.train.get("loss", ()), dtype=np.float64) for r in records]
    losses += [np.asarray(r.epochs.get("val_loss", ()), dtype=np.float64) for r in records]
    finite = np.concatenate([x[np.isfinite(x)] for x in losses]) if losses else np.zeros(0)
    if len(finite) < 4:
        return
    low, high = float(finite.min()), float(np.percentile(finite, 97))
    if high > low:
        margin = 0.08 * (high - low)
        axes.set_ylim(low - margin, high + margin)


def plot_runs(
    records: Sequence[RunRecord],
    output: str | Path,
    plugins: Plugins | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Draw ``records`` into ``output`` (format from its extension) and return its path.

    One panel per hyperparameter (any run's) with the constrained trajectory and, for tuning runs,
    the band ``constrain(u ± σ)``; a last panel with the loss curves. Runs share a colour across
    panels and are named in the figure's legend.
    """
    if not records:
        raise UsageError("nothing to plot: give at least one run file")
    for record in records:
        record.require_intact("plot")
    output = Path(output)
    names = list(dict.fromkeys(name for r in records for name in r.hyperparameters))
    panels = len(names) + 1
    columns = 1 if panels == 1 else 2 if panels <= 4 else 3
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself as the figure's canvas
    _check_output(output, figure)
    plugins = plugins or load_plugins()
    kinds = [rebuild_kinds(r, plugins) for r in records]
    grid = figure.subplots(rows, columns, squeeze=False)
    cells = [axes for row in grid for axes in row]
    for axes, name in zip(cells, names, strict=False):
        _panel_hyper(axes, name, records, kinds)
    _panel_loss(cells[len(names)], records)
    for axes in cells[panels:]:
        axes.set_axis_off()
    labels = run_labels(records)
    handles: list[Artist] = [
        Line2D([], [], color=f"C{i % 10}", lw=2, label=label) for i, label in enumerate(labels)
    ]
    if any(r.attrs.get("tunes") for r in records):
        handles.append(Patch(color="0.55", alpha=0.25, lw=0, label="constrain(h ± σ): the perturbation band"))
    if len(cells) > panels:
        # a spare cell of the grid holds the legend, where it has room and covers nothing
        cells[panels].legend(handles=handles, loc="center", frameon=False, fontsize=10)
    else:
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
    if title:
        figure.suptitle(title)
    try:
        figure.savefig(output, dpi=dpi)
    except OSError as error:
        raise UsageError(f"cannot write {output}: {error.strerror or error}") from None
    return output
