"""One STN run against random search and TPE given factor × its wall-clock time, per seed.

For each seed: one STN run of the recipe (``seed`` set); then a random-search study and a TPE
study (``stnkit tune``) with ``--budget`` the largest factor × that run's wall time, each read at
every factor F as the best trial *finished* within F × that time. Both samplers propose from
earlier trials only, so the study's first F × T seconds are a study of budget F × T, read a
little strictly (its last trial would have been allowed to finish) — at a fraction of the cost
(10× instead of 1 + 3 + 10 for three factors).
Printed: the best validation loss and the test metrics of the best trial against the STN run's.
Every run and study is stored (``--out``), so ``stnkit plot STUDY_DIR STN_RUN`` can draw any row.

    python benchmarks/stn_vs_search.py recipes/toy-ridge.yaml
    python benchmarks/stn_vs_search.py recipes/toy-ridge.yaml --seeds 0 1 2 --factors 1 3 10
    python benchmarks/stn_vs_search.py recipes/toy-ridge.yaml --seeds 0 --factors 1 --set train.epochs=20

Wall-clock budgets make the figures depend on the machine: measure on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import stnkit
from stnkit.tune import TuneOptions, create_study, drive
from stnkit.tune.analysis import best_of, open_study
from stnkit.tune.progress import StudyView


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4g}"


def stn_run(recipe: Path, seed: int, overrides: list[str], out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    result = stnkit.run(recipe, overrides=[*overrides, f"seed={seed}"], out_dir=out)
    seconds = time.perf_counter() - start
    assert result.path is not None
    summary = stnkit.open_run(result.path).summary()
    return {
        "method": "stn",
        "seed": seed,
        "factor": None,
        "seconds": seconds,
        "trials": 1,
        "best_val_loss": summary["best_val_loss"],
        "test": summary["test"],
        "path": str(result.path),
    }


def search(
    recipe: Path, method: str, seed: int, budget: float, overrides: list[str], out: Path, jobs: int
) -> Path:
    """Run one study with ``budget`` seconds; its folder."""
    from rich.console import Console

    options = TuneOptions(method=method, budget=budget, seed=seed, jobs=jobs)
    folder = create_study(recipe, options, [*overrides, f"seed={seed}"], out)
    drive(folder, StudyView(Console(), quiet=True))
    return folder


def read_at(folder: Path, method: str, seed: int, factor: float, seconds: float) -> dict[str, Any]:
    """The study's row at ``factor``: its best trial finished within ``seconds``."""
    inside = open_study(folder).finished_within(seconds)
    best = best_of(inside)
    return {
        "method": method,
        "seed": seed,
        "factor": factor,
        "seconds": seconds,
        "trials": len(inside),
        "best_val_loss": None if best is None else best.value,
        "test": {} if best is None else best.test,
        "path": str(folder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 3.0, 10.0])
    parser.add_argument("--methods", nargs="+", default=["random", "tpe"])
    parser.add_argument("--jobs", type=int, default=1, help="parallel trials of each search")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/stn-vs-search"))
    parser.add_argument("--json", type=Path, default=None, help="also write every row as JSON here")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        stn = stn_run(args.recipe, seed, args.overrides, args.out)
        rows.append(stn)
        for method in args.methods:
            budget = max(args.factors) * stn["seconds"]
            folder = search(args.recipe, method, seed, budget, args.overrides, args.out, args.jobs)
            for factor in sorted(args.factors):
                rows.append(read_at(folder, method, seed, factor, factor * stn["seconds"]))

    metrics = sorted({m for r in rows for m in r["test"]})
    print(
        f"\n{args.recipe}: seeds {' '.join(map(str, args.seeds))}; mean over seeds (min–max of best val loss)"
    )
    header = f"{'method':8s} {'budget':>8s} {'trials':>7s} {'wall s':>8s} {'best val loss':>22s}"
    header += "".join(f" {'test ' + m:>12s}" for m in metrics)
    print(header)
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["factor"]), []).append(r)
    for (method, factor), group in groups.items():
        losses = [r["best_val_loss"] for r in group if r["best_val_loss"] is not None]
        mean = statistics.fmean(losses) if losses else None
        spread = f"({_fmt(min(losses))}–{_fmt(max(losses))})" if losses else ""
        budget = "1 run" if factor is None else f"{factor:g}×"
        line = f"{method:8s} {budget:>8s} {statistics.fmean(r['trials'] for r in group):7.1f}"
        line += f" {statistics.fmean(r['seconds'] for r in group):8.0f} {_fmt(mean):>9s} {spread:>12s}"
        for m in metrics:
            values = [r["test"][m] for r in group if m in r["test"]]
            line += f" {_fmt(statistics.fmean(values) if values else None):>12s}"
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
