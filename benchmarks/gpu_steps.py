"""Steps per second and peak memory of a recipe for a few hundred steps (run by gpu_check.sh).

Runs the recipe through ``stnkit.run`` unchanged except for ``train.max_steps``, a short warm-up
(so hyper steps are part of the measured cycle) and ``train.precision``, records nothing on
disk, and times weight steps between step ``--skip`` and the last one (hyper steps included, as
they come in the cycle). Under torchrun, rank 0 prints the figures for the whole world.

    python benchmarks/gpu_steps.py recipes/ptb-lstm.yaml --precision bf16 --steps 300
    python benchmarks/gpu_steps.py --make-cifar DIR   # synthetic CIFAR-10 binaries (timing only)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import stnkit
from stnkit import hookimpl


class StepClock:
    """Observer timing weight steps ``skip+1 .. last``."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0
        self.hyper = 0

    @hookimpl
    def stnkit_step_end(self, run: Any, step: Any) -> None:
        if step.phase == "hyper":
            if self.start is not None:
                self.hyper += 1
            return
        if step.step == self.skip:
            self.start = time.perf_counter()
        elif self.start is not None:
            self.end = time.perf_counter()
            self.steps += 1


def make_cifar(folder: Path, per_file: int = 2000) -> None:
    """CIFAR-10 binary files of random images (same shapes and sizes per record as the real)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        records = rng.integers(0, 256, size=(per_file, 1 + 3072), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, size=per_file)
        (folder / f"{name}.bin").write_bytes(records.tobytes())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", nargs="?", type=Path)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--steps", type=int, default=300, help="weight steps in all")
    parser.add_argument("--skip", type=int, default=30, help="weight steps not timed (warm-up)")
    parser.add_argument("--warmup", type=int, default=0, help="train.warmup_epochs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--make-cifar", type=Path, metavar="DIR", help="write synthetic CIFAR-10 and exit")
    args = parser.parse_args()
    if args.make_cifar is not None:
        make_cifar(args.make_cifar)
        return 0
    if args.recipe is None:
        parser.error("give a recipe")
    overrides = [
        f"train.max_steps={args.steps}",
        f"train.warmup_epochs={args.warmup}",
        f"train.precision={args.precision}",
        *args.overrides,
    ]
    clock = StepClock(args.skip)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    begun = time.perf_counter()
    result = stnkit.run(args.recipe, overrides=overrides, store=False, observers=[clock])
    total = time.perf_counter() - begun
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    world = int(os.environ.get("WORLD_SIZE", "1"))
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else "n/a (cpu)"
    if clock.start is None or clock.end is None or clock.steps == 0:
        print(f"{args.recipe.name}: {result.status}, too few steps to time ({result.end.message})")
        return 1
    rate = clock.steps / (clock.end - clock.start)
    print(
        f"{args.recipe.stem:18s} {args.precision:5s} world {world}: {rate:8.2f} weight steps/s "
        f"({clock.hyper} hyper steps in {clock.steps} timed weight steps), peak memory {peak} per rank, "
        f"{total:.0f} s in all, status {result.status}"
    )
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
