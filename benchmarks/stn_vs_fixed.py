"""Run a recipe with STN and with its fixed-hyperparameter twin, and print the two side by side.

The twin is the same recipe with ``response: {name: fixed}``: the same model, data, epochs and
seed, trained plainly at the recipe's initial hyperparameter values. Both runs are stored.

    python benchmarks/stn_vs_fixed.py recipes/ptb-small.yaml
    python benchmarks/stn_vs_fixed.py recipes/ptb-small.yaml --set train.epochs=2 --out /tmp/runs
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import stnkit


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4g}"


def run_one(recipe: Path, overrides: list[str], out: Path | None) -> dict[str, Any]:
    start = time.perf_counter()
    result = stnkit.run(recipe, overrides=overrides, out_dir=out)
    seconds = time.perf_counter() - start
    assert result.path is not None
    summary = stnkit.open_run(result.path).summary()
    summary["seconds"] = seconds
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="folder for both run files")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args()

    runs = {
        "stn": run_one(args.recipe, args.overrides, args.out),
        "fixed": run_one(args.recipe, [*args.overrides, "response={name: fixed}"], args.out),
    }
    metrics = sorted({m for r in runs.values() for m in [*r["best_valid"], *r["test"]]})
    print(f"\n{args.recipe}  ({runs['stn']['epochs']} epochs each)")
    print(f"{'':28s} {'STN':>12s} {'fixed twin':>12s}")
    for split, key in (("best valid", "best_valid"), ("test", "test")):
        for metric in metrics:
            values = [runs[r][key].get(metric) for r in ("stn", "fixed")]
            print(f"{split + ' ' + metric:28s} {_fmt(values[0]):>12s} {_fmt(values[1]):>12s}")
    print(f"{'best epoch':28s} {runs['stn']['best_epoch']!s:>12s} {runs['fixed']['best_epoch']!s:>12s}")
    print(f"{'wall time (s)':28s} {runs['stn']['seconds']:12.0f} {runs['fixed']['seconds']:12.0f}")
    print("\nhyperparameters found by STN (initial → final; the twin keeps the initial values):")
    for name, info in runs["stn"]["hyperparameters"].items():
        print(f"  {name:28s} {_fmt(info['initial']):>10s} → {_fmt(info['final'])}")
    print(f"\nrun files: {runs['stn']['path']}  {runs['fixed']['path']}")
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
