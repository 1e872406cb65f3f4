"""Whole-run wall time of a tuning recipe against its fixed-hyperparameter twin, interleaved.

Runs the recipe as shipped (its own response model) and its twin (``response: {name: fixed}``)
alternately in this one process — recipe, twin, recipe, twin ... — on a short schedule, and
prints the median wall time of each and their ratio. Interleaving puts machine load on both
alike; the ratio is the figure to read, not the seconds.

    python benchmarks/run_ratio.py recipes/cifar10-small.yaml
    python benchmarks/run_ratio.py recipes/ptb-small.yaml --repeats 5 --set train.epochs=3

The schedule is ``profile_run.SCHEDULES`` (a few epochs at the recipe's proportions) unless
``--set`` overrides it. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import stnkit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_steps import make_cifar
from profile_run import SCHEDULES


def timed_run(recipe: Path, overrides: list[str]) -> float:
    begun = time.perf_counter()
    result = stnkit.run(recipe, overrides=overrides, store=False)
    wall = time.perf_counter() - begun
    if result.status != "completed":
        raise SystemExit(f"{recipe.name} ended {result.status}: {result.end.message}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [*SCHEDULES.get(args.recipe.stem, []), *args.overrides]
    with tempfile.TemporaryDirectory(prefix="stnkit-ratio-") as work:
        if args.recipe.stem.startswith("cifar10") and not (args.recipe.parent / "../data/cifar10").exists():
            make_cifar(Path(work) / "cifar10")
            overrides = [f"data.root={Path(work) / 'cifar10'}", "data.valid_size=2000", *overrides]
            print("(no data/cifar10: synthetic CIFAR-10 images; timings only)")
        twin = [*overrides, "response={name: fixed}"]
        # untimed warm-up of both: imports and first-call set-up are not part of either run
        timed_run(args.recipe, [*overrides, "train.max_steps=2"])
        timed_run(args.recipe, [*twin, "train.max_steps=2"])
        tuned: list[float] = []
        fixed: list[float] = []
        for _ in range(args.repeats):
            tuned.append(timed_run(args.recipe, overrides))
            fixed.append(timed_run(args.recipe, twin))
        ratios = [t / f for t, f in zip(tuned, fixed, strict=True)]
    print(f"{args.recipe.stem}, {' '.join(overrides)}, {args.threads} thread(s), {args.repeats} repeats")
    print(f"  tuning run  median {statistics.median(tuned):7.2f} s  ({', '.join(f'{t:.2f}' for t in tuned)})")
    print(f"  fixed twin  median {statistics.median(fixed):7.2f} s  ({', '.join(f'{f:.2f}' for f in fixed)})")
    print(
        f"  tuning / twin: {statistics.median(tuned) / statistics.median(fixed):.2f}x "
        f"(ratio of medians; pairwise {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
