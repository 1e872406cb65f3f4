"""Reading a study folder: ``stnkit show``, ``ls``, ``compare``, ``export`` and ``plot`` on studies.

The Optuna storage is the truth about trials (state, value, hyperparameters, timing); each
trial's run file holds the rest (curves, test metrics, checkpoints).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stnkit.errors import UsageError
from stnkit.tune.study import (
    Manifest,
    load_optuna_study,
    read_manifest,
    read_trials,
    retried,
    trial_state,
)

if TYPE_CHECKING:
    from stnkit.store.reader import RunRecord

__all__ = ["StudyRecord", "TrialInfo", "best_of", "open_study", "plot_study"]


@dataclass(frozen=True)
class TrialInfo:
    """One trial. ``value``: its best validation loss (complete) or last reported one (pruned);
    ``elapsed``: seconds from the study's first trial start to this trial's end."""

    number: int
    state: str
    value: float | None
    params: dict[str, float]
    run: Path | None
    test: dict[str, float]
    best_epoch: int | None
    started: str | None
    completed: str | None
    duration: float | None
    elapsed: float | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "value": self.value,
            "hyperparameters": self.params,
            "run": None if self.run is None else str(self.run),
            "test": self.test,
            "best_epoch": self.best_epoch,
            "started": self.started,
            "completed": self.completed,
            "duration": self.duration,
            "elapsed": self.elapsed,
            "message": self.message,
        }


def best_of(trials: list[TrialInfo]) -> TrialInfo | None:
    """The trial with the lowest value (the earliest of equals); None for no trial."""
    return min(trials, key=lambda t: (t.value, t.number)) if trials else None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


@dataclass(frozen=True)
class StudyRecord:
    """A snapshot of a study folder."""

    folder: Path
    manifest: Manifest
    trials: list[TrialInfo]

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("complete", "pruned", "failed", "running", "waiting"), 0)
        for t in self.trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        counts["total"] = len(self.trials)
        return counts

    @property
    def best(self) -> TrialInfo | None:
        done = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return best_of(done)

    def finished_within(self, seconds: float) -> list[TrialInfo]:
        """The complete trials that ended within ``seconds`` of the study's first trial start:
        what the study had found by then. (A study *given* that budget can find a little more,
        since its last trial may finish after the deadline.)"""
        return [
            t
            for t in self.trials
            if t.state == "complete"
            and t.value is not None
            and t.elapsed is not None
            and t.elapsed <= seconds
        ]

    def best_run(self) -> Path:
        """The run file of the best complete trial; a :class:`UsageError` if there is none."""
        best = self.best
        if best is None or best.run is None:
            raise UsageError(f"{self.folder}: no trial of this study has completed yet")
        if not best.run.is_file():
            raise UsageError(
                f"{self.folder}: the run file of its best trial ({best.number}) is missing: {best.run}"
            )
        return best.run

    def best_so_far(self) -> tuple[list[float], list[float]]:
        """``(elapsed seconds, best value so far)`` at each complete trial's end, in time order."""
        done = sorted(
            (
                t
                for t in self.trials
                if t.state == "complete" and t.value is not None and t.elapsed is not None
            ),
            key=lambda t: t.elapsed or 0.0,
        )
        times: list[float] = []
        values: list[float] = []
        best = math.inf
        for t in done:
            best = min(best, t.value or math.inf)
            times.append(float(t.elapsed or 0.0))
            values.append(best)
        return times, values

    def summary(self) -> dict[str, Any]:
        """What ``stnkit show DIR --json`` prints."""
        best = self.best
        best_json: dict[str, Any] | None = None
        if best is not None:
            best_json = {
                "trial": best.number,
                "run": None if best.run is None else str(best.run),
                "run_missing": best.run is not None and not best.run.is_file(),
                "best_val_loss": best.value,
                "test": best.test,
                "hyperparameters": best.params,
                "best_epoch": best.best_epoch,
            }
        m = self.manifest
        return {
            "study": str(self.folder),
            "study_name": m.study_name,
            "recipe": m.recipe_source,
            "method": m.method,
            "prune": m.prune,
            "jobs": m.jobs,
            "seed": m.seed,
            "budget_seconds": m.budget_seconds,
            "storage": m.storage_url(self.folder),
            "trials": {**self.counts, "target": m.trials},
            "best": best_json,
            "search_space": m.space,
            "created": m.created,
            "spent_seconds": m.spent_seconds,
            "table": [t.to_json() for t in self.trials],
        }

    def write_csv(self, path: Path) -> Path:
        """The trials table, a row per trial: number, state, value, each hyperparameter, each test
        metric, timing and run file."""
        names = list(self.manifest.space)
        metrics = sorted({k for t in self.trials for k in t.test})
        header = ["number", "state", "value", *names, *(f"test_{k}" for k in metrics)]
        header += ["best_epoch", "started", "completed", "duration", "elapsed", "run", "message"]
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for t in self.trials:
                row: list[Any] = [t.number, t.state, _cell(t.value)]
                row += [_cell(t.params.get(n)) for n in names]
                row += [_cell(t.test.get(k)) for k in metrics]
                row += [_cell(t.best_epoch), t.started or "", t.completed or "", _cell(t.duration)]
                row += [_cell(t.elapsed), "" if t.run is None else str(t.run), t.message]
                writer.writerow(row)
        return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def open_study(folder: str | Path) -> StudyRecord:
    """Read a study folder. Raises :class:`StudyFolderError` for a folder that is not one."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    study = load_optuna_study(manifest, folder)
    frozen = read_trials(study, folder)
    again = retried(frozen)
    starts = [t.datetime_start for t in frozen if t.datetime_start is not None]
    origin = min(starts) if starts else None
    trials: list[TrialInfo] = []
    for t in frozen:
        state = trial_state(t)
        if state == "complete":
            value = _finite(t.value)
        else:
            value = None if t.last_step is None else _finite(t.intermediate_values.get(t.last_step))
        run = t.user_attrs.get("run")
        end = t.datetime_complete
        duration = (end - t.datetime_start).total_seconds() if end and t.datetime_start else None
        elapsed = (end - origin).total_seconds() if end and origin else None
        test = {k: float(v) for k, v in (t.user_attrs.get("test") or {}).items()}
        trials.append(
            TrialInfo(
                number=t.number,
                state=state,
                value=value,
                params={k: float(v) for k, v in t.params.items()},
                run=None if not run else folder / str(run),
                test=test,
                best_epoch=t.user_attrs.get("best_epoch"),
                started=None if t.datetime_start is None else t.datetime_start.isoformat(timespec="seconds"),
                completed=None if end is None else end.isoformat(timespec="seconds"),
                duration=duration,
                elapsed=elapsed,
                message=str(t.user_attrs.get("failed_because") or again.get(t.number, ""))
                if state == "failed"
                else "",
            )
        )
    return StudyRecord(folder, manifest, trials)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def render_study(record: StudyRecord) -> RenderableType:
    """The rich view ``stnkit show DIR`` prints."""
    s = record.summary()
    c = s["trials"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("study", str(record.folder))
    head.add_row("recipe", s["recipe"])
    head.add_row("method", f"{s['method']} (prune: {s['prune']}, jobs: {s['jobs']}, seed: {s['seed']})")
    target = "" if c["target"] is None else f" of {c['target']}"
    head.add_row(
        "trials",
        f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed, {c['running']} running"
        f" ({c['total']} in all{target})",
    )
    head.add_row("storage", s["storage"])
    parts: list[RenderableType] = [head]
    best = s["best"]
    if best is not None:
        hp = ", ".join(f"{k}={v:.4g}" for k, v in best["hyperparameters"].items())
        test = ", ".join(f"{k} {v:.4f}" for k, v in best["test"].items()) or "–"
        parts.append(Text(f"best: trial {best['trial']}, val loss {best['best_val_loss']:.4f}, test {test}"))
        parts.append(Text(f"      {hp}"))
        if best["run_missing"]:
            parts.append(Text(f"      run file missing (deleted or moved): {best['run']}", style="red"))
        else:
            parts.append(Text(f"      run file: {best['run']}", style="dim"))
    table = Table(header_style="bold", title="trials", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column("val loss", justify="right")
    for name in record.manifest.space:
        table.add_column(name, justify="right")
    table.add_column("time", justify="right")
    styles = {"complete": "green", "running": "yellow", "pruned": "dim"}
    for t in record.trials:
        table.add_row(
            str(t.number),
            Text(t.state, style=styles.get(t.state, "red")),
            _fmt(t.value),
            *(_fmt(t.params.get(n)) for n in record.manifest.space),
            "–" if t.duration is None else f"{t.duration:.1f}s",
        )
    parts.append(table)
    return Group(*parts)


def plot_study(
    record: StudyRecord, output: Path, stn: RunRecord | None = None, title: str | None = None
) -> Path:
    """Best validation loss so far against wall time (seconds from the study's first trial), with
    an STN run's wall time and best validation loss marked when ``stn`` is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, values = record.best_so_far()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    if times:
        axes.step(times, values, where="post", label=f"{record.manifest.method} search: best so far")
        axes.plot(times, values, "o", markersize=3, color=axes.lines[-1].get_color())
    if stn is not None:
        stn_time = float(stn.epochs["time"][-1]) if len(stn.epochs.get("time", [])) else math.nan
        stn_loss = stn.best_val_loss
        if stn_loss is not None and math.isfinite(stn_loss) and math.isfinite(stn_time):
            axes.axvline(stn_time, color="tab:red", linestyle="--", linewidth=1)
            axes.plot(
                [stn_time], [stn_loss], "*", color="tab:red", markersize=12, label=f"STN run ({stn.name})"
            )
    axes.set_xlabel("wall time (s)")
    axes.set_ylabel("best validation loss")
    axes.set_title(title or f"{record.folder.name}")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(output)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot write {output}: {error}") from None
    finally:
        plt.close(figure)
    return output
