"""The figures of docs/results.md, drawn from the JSON the benchmarks write.

    python benchmarks/figures.py                      # benchmarks/results/*.json → docs/images/
    python benchmarks/figures.py --results DIR --out DIR
    python benchmarks/figures.py schedule RUN.h5 benchmarks/results/schedule-toy-ridge.json

Inputs, in ``--results``: ``efficacy-RECIPE.json`` and ``search-RECIPE.json`` as written by
``benchmarks/efficacy.py --json`` (the second with ``--methods TUNER random tpe --search-factor
1 3 10``), and ``schedule-RECIPE.json`` as written by the ``schedule`` command from a run file.
Outputs: ``efficacy.png`` (test metric per method and recipe, mean ± std over seeds, each seed a
dot), ``schedule.png`` (a tuned hyperparameter over hyper steps with its ±σ band) and
``search.png`` (the tuning run's best validation loss against random search's and TPE's
best-so-far over wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt

__all__ = ["draw_all", "main", "write_schedule"]

ROOT = Path(__file__).resolve().parents[1]
TUNERS = ("stn", "delta-stn")
BASELINES = ("fixed", "hand", "final", "replay")
SEARCH = re.compile(r"^(random|tpe) ([\d.]+)x$")


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise SystemExit(f"{path}: not a benchmark JSON file (no 'rows' list)")
    return data


def _recipe(path: Path, prefix: str) -> str:
    return path.stem.removeprefix(prefix)


def _primary(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """The test metric shown and whether higher is better (as ``efficacy.py`` prints it)."""
    keys = {key for row in rows for key in row.get("test", {})}
    if "perplexity" in keys:
        return "perplexity", False
    if "accuracy" in keys:
        return "accuracy", True
    others = sorted(keys - {"loss"})
    return (others[0] if others else "loss"), False


def _by_method(rows: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for row in rows:
        value = row.get("test", {}).get(key)
        if value is not None and math.isfinite(value):
            found.setdefault(row["method"], []).append(float(value))
    return found


def draw_efficacy(files: list[Path], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(files), figsize=(4.2 * len(files), 3.6), squeeze=False)
    for ax, path in zip(axes[0], files, strict=True):
        rows = _load(path)["rows"]
        metric, higher = _primary(rows)
        values = _by_method(rows, metric)
        if metric == "accuracy":  # efficacy.py stores a fraction and prints a percentage, as here
            values = {method: [100.0 * v for v in found] for method, found in values.items()}
        methods = [m for m in (*TUNERS, *BASELINES) if m in values]
        means = [statistics.fmean(values[m]) for m in methods]
        stds = [statistics.stdev(values[m]) if len(values[m]) > 1 else 0.0 for m in methods]
        colours = ["tab:blue" if m in TUNERS else "tab:gray" for m in methods]
        ax.bar(methods, means, yerr=stds, capsize=4, color=colours, alpha=0.6)
        for i, method in enumerate(methods):
            ax.plot([i] * len(values[method]), values[method], "k.", markersize=5)
        low = min(min(v) for v in values.values())
        high = max(max(v) for v in values.values())
        pad = 0.15 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(_recipe(path, "efficacy-"))
        unit = " (%)" if metric == "accuracy" else ""
        ax.set_ylabel(f"test {metric}{unit} ({'higher' if higher else 'lower'} is better)")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    target = out / "efficacy.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def draw_search(files: list[Path], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(files), figsize=(4.2 * len(files), 3.6), squeeze=False)
    for ax, path in zip(axes[0], files, strict=True):
        rows = _load(path)["rows"]
        tuned = [r for r in rows if r["method"] in TUNERS and r.get("best_val_loss") is not None]
        searches: dict[str, dict[float, list[tuple[float, float]]]] = {}
        for row in rows:
            match = SEARCH.match(row["method"])
            if match and row.get("best_val_loss") is not None:
                points = searches.setdefault(match.group(1), {}).setdefault(float(match.group(2)), [])
                points.append((float(row["seconds"]), float(row["best_val_loss"])))
        for name, by_factor in sorted(searches.items()):
            factors = sorted(by_factor)
            xs = [statistics.fmean(s for s, _ in by_factor[f]) for f in factors]
            ys = [statistics.fmean(v for _, v in by_factor[f]) for f in factors]
            ax.step(xs, ys, where="post", marker="o", label=f"{name} search, best so far")
        if tuned:
            method = tuned[0]["method"]
            seconds = statistics.fmean(float(r["seconds"]) for r in tuned)
            loss = statistics.fmean(float(r["best_val_loss"]) for r in tuned)
            right = max([seconds, *(s for f in searches.values() for p in f.values() for s, _ in p)])
            ax.plot([seconds], [loss], "r*", markersize=12, label=f"one {method} run")
            ax.hlines(loss, seconds, right, colors="r", linestyles="dashed")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("best validation loss (mean over seeds)")
        ax.set_title(_recipe(path, "search-"))
        ax.legend(fontsize=7)
    fig.tight_layout()
    target = out / "search.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def draw_schedule(path: Path, out: Path) -> Path:
    data = json.loads(path.read_text(encoding="utf-8"))
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    ax.fill_between(data["step"], data["low"], data["high"], alpha=0.25, label="±σ band (perturbed values)")
    ax.plot(data["step"], data["value"], label=f"{data['name']} (h)")
    if data.get("optimum") is not None:
        ax.axhline(data["optimum"], color="k", linestyle=":", label="closed-form optimum")
    ax.set_yscale("log")
    ax.set_xlabel("weight step")
    ax.set_ylabel(data["name"])
    ax.set_title(f"{data['recipe']}: the hyperparameter schedule one run learns")
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = out / "schedule.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def draw_all(results: Path, out: Path) -> list[Path]:
    """Every figure whose inputs are in ``results``, written to ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    drawn: list[Path] = []
    efficacy = sorted(results.glob("efficacy-*.json"))
    search = sorted(results.glob("search-*.json"))
    schedules = sorted(results.glob("schedule-*.json"))
    if efficacy:
        drawn.append(draw_efficacy(efficacy, out))
    if search:
        drawn.append(draw_search(search, out))
    if schedules:
        drawn.append(draw_schedule(schedules[0], out))
    return drawn


def write_schedule(run: Path, target: Path, name: str | None = None, optimum: float | None = None) -> None:
    """The schedule JSON of one hyperparameter of a stored run: hyper steps, values and the
    constrained ends of ``u ∓ σ``."""
    import stnkit
    from stnkit.analysis.kinds import rebuild_kinds, sigma_band
    from stnkit.plugins import load_plugins

    record = stnkit.open_run(run)
    names = list(record.hyperparameters)
    chosen = name or names[0]
    column = names.index(chosen)
    kind = rebuild_kinds(record, load_plugins())[chosen]
    values = record.hyper["values"][:, column]
    low, high = sigma_band(kind, values, record.hyper["scales"][:, column])
    data = {
        "recipe": record.name,
        "name": chosen,
        "step": [int(s) for s in record.hyper["step"]],
        "value": [float(v) for v in values],
        "low": [float(v) for v in low],
        "high": [float(v) for v in high],
        "optimum": optimum,
    }
    target.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", choices=["draw", "schedule"], default="draw")
    parser.add_argument("paths", nargs="*", type=Path, help="schedule: RUN.h5 OUT.json")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--name", help="schedule: the hyperparameter (default: the first)")
    parser.add_argument("--optimum", type=float, help="schedule: a known best value to draw")
    args = parser.parse_args(argv)
    if args.command == "schedule":
        if len(args.paths) != 2:
            parser.error("schedule takes RUN.h5 OUT.json")
        write_schedule(args.paths[0], args.paths[1], args.name, args.optimum)
        print(f"wrote {args.paths[1]}")
        return 0
    for path in draw_all(args.results, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
