"""Known answers from any start: does each response find the exact optimum of problems it never saw?

For each generated problem (``stnkit_tabular.known``: ridge weight decay, input dropout, or both
at once) and each response, ``recipes/toy-ridge.yaml`` runs as shipped — only the data path, the
declared hyperparameters and their start change — from 30× below the optimum, 30× above it and at
it (a rate moves 30× in its odds). Each run is scored in closed form:

- ``ratio``: validation loss of the closed-form fit at the final values over the best loss;
- ``wander``: max/min of each hyperparameter over the last quarter of the hyper steps (the worst);
- pass: ``ratio ≤ 1.05`` and ``wander ≤ 2``.

    python benchmarks/known_answers.py --family both --problems 24 --jobs 2 --json /tmp/known.json

Runs are real stnkit runs (one thread each, no run file). ``--set K=V`` is passed to every run.

On the ``both`` family a best-response layer's limit shows: the linear model has one output unit,
gated by one scalar ``V·λ̂``, so its response moves the weights along one direction whatever the
hyperparameter, and two hyperparameters whose best responses move the weights differently cannot
both get their exact derivative (the tests check each one alone, the other held).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per run, set before torch loads

import torch

import stnkit
from stnkit_tabular.known import Family, KnownProblem, make_known_problem

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy-ridge.yaml"
STARTS = {"below": 1.0 / 30.0, "at": 1.0, "above": 30.0}
MAX_RATIO = 1.05
MAX_WANDER = 2.0


@dataclass
class Row:
    problem: str
    family: str
    response: str
    start: str
    start_values: dict[str, float]
    final: dict[str, float]
    optimum: dict[str, float]
    start_ratio: float
    ratio: float
    wander: float
    status: str
    passed: bool


class Trajectory:
    """Collects the hyperparameter values after every hyper step."""

    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []

    @stnkit.hookimpl
    def stnkit_step_end(self, run: Any, step: Any) -> None:
        if step.phase == "hyper" and step.values is not None:
            self.values.append(dict(step.values))


def wander(trajectory: Sequence[dict[str, float]]) -> float:
    """Largest max/min ratio of any hyperparameter over the last quarter of the hyper steps."""
    if not trajectory:
        return math.nan
    tail = trajectory[len(trajectory) - max(1, len(trajectory) // 4) :]
    worst = 1.0
    for name in tail[0]:
        values = [row[name] for row in tail]
        low, high = min(values), max(values)
        worst = max(worst, high / low if low > 0 else math.inf)
    return worst


def run_one(task: dict[str, Any]) -> Row:
    """One stnkit run of one problem, response and start; scored in closed form."""
    torch.set_num_threads(1)
    problem: KnownProblem = task["problem"]
    data = Path(task["data"])
    start = problem.start(STARTS[task["start"]])
    overrides = [
        *problem.overrides(data, start),
        f"response.name={task['response']}",
        f"train.epochs={task['epochs']}",
        *task["sets"],
    ]
    trajectory = Trajectory()
    result = stnkit.run(RECIPE, overrides=overrides, store=False, observers=[trajectory])
    final = dict(result.end.final_values) or dict(start)
    ratio = problem.ratio(final) if result.status == "completed" else math.inf
    spread = wander(trajectory.values)
    return Row(
        problem=f"{problem.family}-{problem.seed}",
        family=problem.family,
        response=task["response"],
        start=task["start"],
        start_values=start,
        final=final,
        optimum=problem.optimum,
        start_ratio=problem.ratio(start),
        ratio=ratio,
        wander=spread,
        status=result.status,
        passed=result.status == "completed" and ratio <= MAX_RATIO and spread <= MAX_WANDER,
    )


def _fmt(values: dict[str, float]) -> str:
    return ",".join(f"{v:.4g}" for v in values.values())


def table(rows: Sequence[Row]) -> str:
    head = f"{'problem':<11} {'response':<9} {'start':<5} {'from':>17} {'final':>17} {'optimum':>17}"
    head += f" {'start×':>7} {'ratio':>7} {'wander':>8}  pass"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.problem:<11} {r.response:<9} {r.start:<5} {_fmt(r.start_values):>17} {_fmt(r.final):>17} "
            f"{_fmt(r.optimum):>17} {r.start_ratio:7.3f} {r.ratio:7.3f} {r.wander:8.2f}  "
            f"{'yes' if r.passed else 'NO'}{'' if r.status == 'completed' else ' (' + r.status + ')'}"
        )
    return "\n".join(lines)


def pass_rates(rows: Sequence[Row]) -> str:
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.response, r.family)].append(r)
        groups[(r.response, "all")].append(r)
    lines = ["", f"{'response':<9} {'family':<8} {'pass':>9} {'rate':>6}   by start (below / at / above)"]
    for (response, family), group in sorted(groups.items()):
        passed = sum(r.passed for r in group)
        by_start = " / ".join(
            f"{sum(r.passed for r in group if r.start == s)}/{sum(r.start == s for r in group)}"
            for s in STARTS
        )
        lines.append(
            f"{response:<9} {family:<8} {passed:>4}/{len(group):<4} {passed / len(group):6.0%}   {by_start}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", choices=["ridge", "dropout", "both", "all"], default="all")
    parser.add_argument("--problems", type=int, default=24, help="problems per family (seeds 0..N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--responses", default="stn,delta-stn", help="comma-separated")
    parser.add_argument("--starts", default="below,at,above", help="comma-separated subset of below,at,above")
    parser.add_argument("--epochs", type=int, default=250, help="the recipe's 250 by default")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="K=V")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/stnkit-known-answers"))
    args = parser.parse_args(argv)

    families: list[Family] = ["ridge", "dropout", "both"] if args.family == "all" else [args.family]
    starts = [s.strip() for s in args.starts.split(",") if s.strip()]
    if unknown := set(starts) - set(STARTS):
        parser.error(f"unknown starts: {', '.join(sorted(unknown))}")
    problems = [
        make_known_problem(family, seed)
        for family in families
        for seed in range(args.first_seed, args.first_seed + args.problems)
    ]
    tasks = [
        {
            "problem": problem,
            "data": str(problem.save(args.folder / f"{problem.family}-{problem.seed}.npz")),
            "response": response.strip(),
            "start": start,
            "epochs": args.epochs,
            "sets": list(args.sets),
        }
        for problem in problems
        for response in args.responses.split(",")
        for start in starts
    ]
    rows: list[Row] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(run_one, tasks):
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    print(pass_rates(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
