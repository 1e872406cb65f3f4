"""Where a run's wall time goes: weight steps, hyper steps, evaluation, data and augmentation.

Runs a CPU recipe under each response model (``stn``, ``delta-stn``, ``fixed``) for a short,
fixed schedule and prints each part's share of the run's wall time. The parts are timed by
wrapping the engine's own methods from here (``Engine._weight_step``, ``Engine._hyper_step``,
``Engine.evaluate``, the dataset's batch iterators and ``TrainingParts.augment``); the training
loop itself is unchanged. Times are exclusive: augmentation inside a weight step counts as
augmentation only, and "other" is building the run, hooks and the final test set-up.

    python benchmarks/profile_run.py recipes/cifar10-small.yaml
    python benchmarks/profile_run.py recipes/ptb-small.yaml --responses stn,fixed
    python benchmarks/profile_run.py recipes/toy-ridge.yaml --set train.epochs=40

Each recipe runs at a reduced schedule (``SCHEDULES`` below; ``--set`` overrides it) that keeps
its ratio of training to validation data, so the shares stand for a full run's. CIFAR-10 is used
from the recipe's folder when present, otherwise synthetic images of the same shape (timings
only). One thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import stnkit
from stnkit.engine import Engine
from stnkit.response.base import TrainingParts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_steps import make_cifar

PARTS = ("weight step", "hyper step", "evaluation", "test", "data", "augmentation", "other")

#: reduced schedules: a few epochs, hyper steps included, training/validation sizes in proportion
SCHEDULES: dict[str, list[str]] = {
    "cifar10-small": ["train.epochs=4", "train.warmup_epochs=1"],
    "ptb-small": [
        "train.epochs=2",
        "train.warmup_epochs=0",
        "data.train_tokens=17500",
        "data.valid_tokens=7000",
    ],
    "toy-ridge": ["train.epochs=60", "train.warmup_epochs=5"],
}


class Clock:
    """Exclusive time per part: a part's time excludes the parts timed inside it."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.stack: list[list[Any]] = []  # [part, start, time spent in nested parts]
        # on a GPU a part's kernels finish after its Python returns: wait for them at each boundary
        self.sync = torch.cuda.synchronize if torch.cuda.is_available() else None

    def enter(self, part: str) -> None:
        if self.sync is not None:
            self.sync()
        self.stack.append([part, time.perf_counter(), 0.0])

    def leave(self) -> None:
        if self.sync is not None:
            self.sync()
        part, start, nested = self.stack.pop()
        spent = time.perf_counter() - start
        self.total[part] += spent - nested
        if self.stack:
            self.stack[-1][2] += spent

    def timed(self, part: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.enter(part(*args, **kwargs) if callable(part) else part)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()

        return wrapper

    def timed_iter(self, part: str, make: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            iterator = make(*args, **kwargs)
            while True:
                self.enter(part)
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.leave()
                yield item

        return wrapper


def instrument(clock: Clock) -> Callable[[], None]:
    """Wrap the engine's methods with ``clock``; returns the function that unwraps them."""
    saved = {
        (Engine, "_weight_step"): Engine._weight_step,
        (Engine, "_hyper_step"): Engine._hyper_step,
        (Engine, "evaluate"): Engine.evaluate,
        (Engine, "__init__"): Engine.__init__,
        (TrainingParts, "augment"): TrainingParts.augment,
    }
    Engine._weight_step = clock.timed("weight step", Engine._weight_step)  # type: ignore[method-assign]
    Engine._hyper_step = clock.timed("hyper step", Engine._hyper_step)  # type: ignore[method-assign]
    Engine.evaluate = clock.timed(  # type: ignore[method-assign]
        lambda _self, split: "evaluation" if split == "valid" else "test", Engine.evaluate
    )
    TrainingParts.augment = clock.timed("augmentation", TrainingParts.augment)  # type: ignore[method-assign]
    init = Engine.__init__

    @functools.wraps(init)
    def engine_init(self: Engine, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        dataset = self.dataset
        # instance attributes: only this run's dataset is wrapped; validation batches stay evaluation
        dataset.train_batches = clock.timed_iter("data", dataset.train_batches)  # type: ignore[method-assign]
        dataset.hyper_batches = clock.timed_iter("data", dataset.hyper_batches)  # type: ignore[method-assign]

    Engine.__init__ = engine_init  # type: ignore[method-assign]

    def restore() -> None:
        for (owner, name), fn in saved.items():
            setattr(owner, name, fn)

    return restore


def profile(recipe: Path, response: str, overrides: list[str]) -> tuple[dict[str, float], int, str]:
    clock = Clock()
    restore = instrument(clock)
    response_set = [] if response == "as shipped" else [f"response={{name: {response}}}"]
    begun = time.perf_counter()
    try:
        result = stnkit.run(recipe, overrides=[*overrides, *response_set], store=False)
    finally:
        restore()
    wall = time.perf_counter() - begun
    shares = {part: clock.total.get(part, 0.0) / wall for part in PARTS if part != "other"}
    shares["other"] = 1.0 - sum(shares.values())
    shares["wall"] = wall
    return shares, result.end.step, result.status


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--responses", default="stn,delta-stn,fixed", help="comma-separated response names")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [*SCHEDULES.get(args.recipe.stem, []), *args.overrides]
    with tempfile.TemporaryDirectory(prefix="stnkit-profile-") as work:
        if args.recipe.stem.startswith("cifar10") and not (args.recipe.parent / "../data/cifar10").exists():
            make_cifar(Path(work) / "cifar10")
            overrides = [f"data.root={Path(work) / 'cifar10'}", "data.valid_size=2000", *overrides]
            print("(no data/cifar10: synthetic CIFAR-10 images; timings only)")
        print(f"{args.recipe.stem}, {' '.join(overrides)}, {args.threads} thread(s)")
        print(f"{'response':10s} {'wall s':>7s} {'steps':>6s} " + " ".join(f"{p:>12s}" for p in PARTS))
        for response in args.responses.split(","):
            # a short untimed run first: first-call costs (imports, torch.func set-up) are not the run's
            profile(args.recipe, response.strip(), [*overrides, "train.max_steps=2"])
            shares, steps, status = profile(args.recipe, response.strip(), overrides)
            cells = " ".join(f"{100 * shares[p]:11.1f}%" for p in PARTS)
            print(f"{response:10s} {shares['wall']:7.1f} {steps:6d} {cells}  {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
