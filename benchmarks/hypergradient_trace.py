"""The hypergradient a tuning run actually follows, against the exact one, on a known-answer problem.

Runs ``recipes/toy-ridge.yaml`` on one generated ridge or input-dropout problem
(``stnkit_tabular.known``) from a start below, at or above its optimum, and after every hyper step
records the value of ``h``'s gradient (the estimate the hyper optimizer used) and the exact
derivative of the closed-form validation loss in the units the optimizer steps in (``log λ``, a
rate's log-odds) at the current value. It prints them in blocks of hyper steps: the mean and spread
of the estimate, the share of steps whose estimate points away from the optimum, and the exact value.

    python benchmarks/hypergradient_trace.py --problem 7 --response delta-stn --start below
    python benchmarks/hypergradient_trace.py --problem 7 --response delta-stn \
        --set 'train.response_optimizer={name: adam, lr: 0.01}'   # the response at the weights' rate
    python benchmarks/hypergradient_trace.py --family dropout --problem 0 --response stn --start at
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

import stnkit
from stnkit.events import StepEnd
from stnkit_tabular.known import constrained, make_known_problem, unconstrained

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy-ridge.yaml"
STARTS = {"below": 1.0 / 30.0, "at": 1.0, "above": 30.0}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", choices=["ridge", "dropout"], default="ridge")
    parser.add_argument("--problem", type=int, default=7, help="seed of the generated problem")
    parser.add_argument("--response", default="delta-stn")
    parser.add_argument("--start", choices=sorted(STARTS), default="below")
    parser.add_argument("--blocks", type=int, default=20, help="rows printed")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="K=V")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/stnkit-known-answers"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    problem = make_known_problem(args.family, args.problem)
    (name,) = problem.names
    label = f"{args.family}-{args.problem}"
    data = problem.save(args.folder / f"{label}.npz")
    start = problem.start(STARTS[args.start])
    records: list[tuple[float, float, float]] = []  # (h before the step, estimate, exact)

    def exact_slope(value: float) -> float:
        # in the unconstrained units the hyper optimizer steps in (log λ, log-odds of a rate)
        u, du = unconstrained(name, value), 1e-3
        up = problem.loss({name: constrained(name, u + du)})
        down = problem.loss({name: constrained(name, u - du)})
        return float(up - down) / (2 * du)

    class Trace:
        """Each hyper step's value before it, its gradient in ``h`` and the exact slope there."""

        def __init__(self) -> None:
            self.before = float(start[name])

        @stnkit.hookimpl
        def stnkit_step_end(self, run: Any, step: StepEnd) -> None:
            if step.phase != "hyper" or step.values is None:
                return
            grad = math.nan if step.gradients is None else step.gradients[name]
            records.append((self.before, grad, exact_slope(self.before)))
            self.before = step.values[name]

    overrides = [*problem.overrides(data, start), f"response.name={args.response}", *args.sets]
    result = stnkit.run(RECIPE, overrides=overrides, store=False, observers=[Trace()])
    final = dict(result.end.final_values)
    print(
        f"{label} {args.response} from {start[name]:.4g} ({args.start}); "
        f"optimum {problem.optimum[name]:.4g}; final {final[name]:.4g}, "
        f"validation loss {problem.ratio(final):.3f}x the best"
    )
    print(f"{'hyper steps':>13} {'h before':>11} {'estimate':>10} {'± spread':>9} {'away':>5} {'exact':>10}")
    size = max(1, len(records) // args.blocks)
    for first in range(0, len(records), size):
        block = records[first : first + size]
        est = np.array([r[1] for r in block])
        exact = np.array([r[2] for r in block])
        # a step "points away" when its estimate's sign differs from the exact slope's
        away = float(np.mean(np.sign(est) != np.sign(exact)))
        print(
            f"{first:>6}-{first + len(block) - 1:<6} {block[0][0]:11.4g} {est.mean():+10.2e} "
            f"{est.std():9.1e} {away:5.0%} {exact.mean():+10.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
