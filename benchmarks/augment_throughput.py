"""Images per second of the augment plugin's chain: batched against a per-image Python loop.

128 real CIFAR-10 test images (the slice committed for the CNN plugin's tests) go through
hue → saturation → brightness → contrast → cutout → input-dropout → input-scaling (the shipped
CIFAR-10 recipes' order; the last three work relative to the images' channel mean, as after
normalisation), every image with its own strengths drawn uniformly over a typical range.
"batched" applies each augmentation once to the whole ``(128, 3, 32, 32)`` batch, as training
does; "looped" applies the same augmentation objects to one ``(1, 3, 32, 32)`` image at a
time. Repetitions alternate between the two so machine load affects both alike, and the median
of each is reported.

    pip install -e plugins/stnkit-augment
    python benchmarks/augment_throughput.py              # ~10 s on a 2-core CPU
    python benchmarks/augment_throughput.py --reps 5     # quicker
    python benchmarks/augment_throughput.py --threads 1  # on a machine busy with other work
    python benchmarks/augment_throughput.py --device cuda

Only the batched side uses torch's intra-op threads (single images are below its parallel grain
size), and on a CPU that other processes keep busy those threads wait on each other: there
``--threads 1`` shows the cost of the work itself rather than of the contention.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from stnkit.allocator import tune_allocator
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.task import ClassificationTask
from stnkit_augment import (
    Brightness,
    Contrast,
    Cutout,
    Hue,
    ImageAugmentation,
    InputDropout,
    InputScaling,
    Saturation,
)
from stnkit_augment.images import read_cifar10_bin

#: the first 1,000 CIFAR-10 test images, committed for the CNN plugin's tests
SLICES = Path(__file__).resolve().parents[1] / "plugins" / "stnkit-cnn" / "tests" / "data"
CIFAR = SLICES / "cifar-10-batches-bin" / "test_batch.bin"
BATCH = 128

#: hyperparameter → (low, high) of the uniform per-example draw; integers are floored by cutout
RANGES = {
    "hue": (0.0, 0.5),
    "saturation": (0.0, 1.0),
    "brightness": (0.0, 1.0),
    "contrast": (0.0, 1.0),
    "input_scaling": (0.0, 0.3),
    "input_dropout": (0.0, 0.3),
    "cutout_holes": (0.0, 4.0),
    "cutout_length": (0.0, 17.0),
}
CHAIN = (Hue, Saturation, Brightness, Contrast, Cutout, InputDropout, InputScaling)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def apply_chain(chain: Sequence[ImageAugmentation], x: Tensor, hp: HyperBatch) -> Tensor:
    for augmentation in chain:
        x = augmentation(x, hp)
    return x


def looped(chain: Sequence[ImageAugmentation], x: Tensor, hp: HyperBatch) -> Tensor:
    rows = []
    for i in range(x.shape[0]):
        one = HyperBatch(hnet=None, values={name: value[i : i + 1] for name, value in hp.values.items()})
        rows.append(apply_chain(chain, x[i : i + 1], one))
    return torch.cat(rows)


def timed(step: Callable[[], Tensor], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions of each (default 15)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    # as `stnkit run` does; STNKIT_MALLOC_TUNING=0 measures glibc's default behaviour instead
    tuned = tune_allocator()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    images, _ = read_cifar10_bin(CIFAR, count=BATCH)
    x = images.to(device)
    values = {name: low + (high - low) * torch.rand(BATCH) for name, (low, high) in RANGES.items()}
    hp = HyperBatch(hnet=None, values={name: value.to(device) for name, value in values.items()})
    extras = {"mean": images.mean(dim=(0, 2, 3)).tolist()}  # what the CNN data sets pass
    data = DataInfo(ClassificationTask(10), tuple(x.shape[1:]), 1, BATCH, 0, extras=extras)
    chain = [cls(cls.Config(), data) for cls in CHAIN]

    def batched_step() -> Tensor:
        return apply_chain(chain, x, hp)

    def looped_step() -> Tensor:
        return looped(chain, x, hp)

    for _ in range(2):  # warm-up: allocator, kernels, lazy initialisation
        batched_step()
        looped_step()
    times: dict[str, list[float]] = {"batched": [], "looped": []}
    with torch.no_grad():
        for _ in range(args.reps):
            times["batched"].append(timed(batched_step, device))
            times["looped"].append(timed(looped_step, device))

    threads = torch.get_num_threads() if device.type == "cpu" else None
    where = f"{device} ({threads} threads)" if threads else str(device)
    where += ", malloc tuned" if tuned else ", glibc malloc defaults"
    print(f"augment chain on {BATCH} CIFAR-10 images, {where}, median of {args.reps} interleaved runs")
    rate = {name: BATCH / statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"  {name:8s} {rate[name]:12,.0f} images/s   ({1e3 * statistics.median(ts):8.2f} ms per batch)")
    print(f"  batched/looped: {rate['batched'] / rate['looped']:.1f}x")


if __name__ == "__main__":
    main()
