"""Twelve ridge problems of the test suite's generator in other shapes, from 30× below, at and 30× above
their closed-form optimum, through ``recipes/toy-ridge.yaml`` (only the data path, the start and the
response change; ``K=V`` arguments are passed to every run).

The problems are ``make_ridge_problem`` of ``stnkit_tabular.synthetic`` with rows, features and
noise drawn from numpy seed 123 (problem seeds 100–111); the optimum is found on a log grid
1e-5..1e3 refined ×100. Pass: closed-form validation loss at the final value ≤ 1.05× the best and
the last quarter of the hyper trajectory within a factor 2 of the final value.

    python benchmarks/ridge_sweep.py --problems 12 --jobs 2 [K=V ...]
    python benchmarks/ridge_sweep.py --pairs 110:stn:below,104:delta-stn:above   # chosen pairs
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per run, set before torch loads

import numpy as np
import torch

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy-ridge.yaml"
STARTS = {"below": 1.0 / 30.0, "at": 1.0, "above": 30.0}


def shapes(count: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(123)
    out = []
    for i in range(count):
        out.append(
            {
                "n_train": int(rng.choice([20, 30, 40, 60, 100, 200])),
                "features": int(rng.choice([10, 20, 30, 50])),
                "noise": float(rng.choice([0.3, 0.5, 1.0, 2.0])),
                "seed": 100 + i,
            }
        )
    return out


def best(arrays: dict[str, np.ndarray]) -> tuple[float, float]:
    from stnkit_tabular.synthetic import validation_loss

    grid = np.logspace(-5, 3, 400)
    losses = np.array([validation_loss(arrays, g) for g in grid])
    i = int(losses.argmin())
    fine = np.logspace(np.log10(grid[max(i - 1, 0)]), np.log10(grid[min(i + 1, 399)]), 100)
    fine_losses = np.array([validation_loss(arrays, g) for g in fine])
    j = int(fine_losses.argmin())
    return float(fine[j]), float(fine_losses[j])


Row = tuple[int, str, str, float, float, float, float]


def job(task: tuple[dict[str, Any], str, str, list[str], str]) -> Row:
    shape, response, start, sets, folder = task
    torch.set_num_threads(1)
    import stnkit
    from stnkit_tabular.synthetic import make_ridge_problem, save_problem, validation_loss

    arrays = make_ridge_problem(**shape)
    path = save_problem(arrays, Path(folder) / f"ridge-{os.getpid()}-{shape['seed']}.npz")
    optimum, best_loss = best(arrays)
    init = optimum * STARTS[start]
    values: list[float] = []

    class Trajectory:
        @stnkit.hookimpl
        def stnkit_step_end(self, run: Any, step: Any) -> None:
            if step.phase == "hyper" and step.values is not None:
                values.append(float(step.values["weight_decay"]))

    overrides = [
        f"data.path={path}",
        f"hyperparameters.weight_decay.init={init}",
        f"response.name={response}",
        *sets,
    ]
    result = stnkit.run(RECIPE, overrides=overrides, store=False, observers=[Trajectory()])
    completed = result.status == "completed"
    final = float(result.end.final_values.get("weight_decay", init)) if completed else math.nan
    ratio = validation_loss(arrays, final) / best_loss if math.isfinite(final) else math.inf
    tail = values[int(len(values) * 0.75) :] or [final]
    wander = max(max(tail) / final, final / min(tail)) if math.isfinite(final) else math.inf
    return shape["seed"], response, start, optimum, final, ratio, wander


def line(row: Row) -> str:
    seed, response, start, optimum, final, ratio, wander = row
    ok = ratio <= 1.05 and wander <= 2.0
    return (
        f"{response:9s} p{seed} {start:5s} opt {optimum:8.3g} final {final:8.3g} ratio {ratio:.3f} "
        f"wander {wander:6.2f} {'ok' if ok else 'FAIL'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=12)
    parser.add_argument("--responses", default="stn,delta-stn")
    parser.add_argument("--pairs", default="", help="comma-separated seed:response:start, e.g. 110:stn:below")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--folder", default="/tmp/stnkit-ridge-sweep")
    parser.add_argument("sets", nargs="*", metavar="K=V")
    args = parser.parse_args(argv)
    Path(args.folder).mkdir(parents=True, exist_ok=True)
    tasks = [
        (shape, response, start, list(args.sets), args.folder)
        for shape in shapes(args.problems)
        for response in args.responses.split(",")
        for start in STARTS
    ]
    if args.pairs:
        keep = set(args.pairs.split(","))
        tasks = [t for t in tasks if f"{t[0]['seed']}:{t[1]}:{t[2]}" in keep]
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for future in as_completed([pool.submit(job, t) for t in tasks]):
            rows.append(future.result())
            print("DONE", line(rows[-1]), flush=True)
    for row in sorted(rows, key=lambda r: (r[1], r[0], list(STARTS).index(r[2]))):
        print(line(row))
    for response in args.responses.split(","):
        group = [r for r in rows if r[1] == response]
        passed = sum(r[5] <= 1.05 and r[6] <= 2.0 for r in group)
        print(f"{response} pass {passed} / {len(group)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
