"""Write a harder Fashion-MNIST for probes: only some classes, and noisy training labels.

    python benchmarks/derived_data.py SRC DEST --keep T-shirt/top Pullover Coat Shirt \\
        --label-noise 0.3 --train-subset 1000

SRC holds Fashion-MNIST's four IDX files; DEST gets four IDX files a recipe reads with
``--set data.root=DEST data.valid_size=N`` (the script prints N: the kept images of the original
validation split). Kept images keep their labels. ``--label-noise F`` gives ``round(F·n)`` of the
first ``--train-subset`` training images (all of them without it) a wrong label drawn uniformly
from the other kept classes; validation and test labels stay clean. The noisy images and labels
depend on ``--noise-seed`` alone, so every method and run seed compares on one data set.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np

from stnkit_cnn.data import FASHION_CLASSES, read_fashion_mnist

__all__ = ["corrupt_labels", "derive", "main"]


def corrupt_labels(labels: np.ndarray, fraction: float, classes: list[int], seed: int) -> np.ndarray:
    """``labels`` (each one of ``classes``) with ``round(fraction · N)`` of them, chosen at random,
    replaced by another of ``classes`` drawn uniformly (symmetric label noise)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    noisy = labels.copy()
    chosen = rng.permutation(len(labels))[: round(fraction * len(labels))]
    index = {label: i for i, label in enumerate(classes)}
    positions = np.array([index[int(label)] for label in labels[chosen]], dtype=np.int64)
    # an offset of 1..K-1 classes: never the true label, every other one equally likely
    offsets = rng.integers(1, len(classes), size=len(chosen))
    noisy[chosen] = np.asarray(classes, dtype=labels.dtype)[(positions + offsets) % len(classes)]
    return noisy


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def derive(
    src: Path,
    dest: Path,
    keep: list[str] | None = None,
    label_noise: float = 0.0,
    noise_seed: int = 0,
    valid_size: int = 10_000,
    train_subset: int | None = None,
) -> int:
    """Write the derived data set to ``dest``; returns its ``data.valid_size``."""
    if not 0.0 <= label_noise < 1.0:
        raise ValueError("--label-noise must be in [0, 1)")
    names = keep if keep is not None else list(FASHION_CLASSES)
    unknown = [name for name in names if name not in FASHION_CLASSES]
    if unknown or len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"--keep needs two or more distinct names of {list(FASHION_CLASSES)}")
    classes = [FASHION_CLASSES.index(name) for name in names]
    splits = read_fashion_mnist(src)
    images, labels = splits["train"]
    cut = len(images) - valid_size
    parts = []
    for x, y in ((images[:cut], labels[:cut]), (images[cut:], labels[cut:])):
        kept = np.isin(y, classes)
        parts.append((x[kept], y[kept]))
    (x_train, y_train), (x_valid, y_valid) = parts
    if label_noise > 0:
        stop = len(y_train) if train_subset is None else min(train_subset, len(y_train))
        y_train = y_train.copy()
        y_train[:stop] = corrupt_labels(y_train[:stop], label_noise, classes, noise_seed)
    x_test, y_test = splits["test"]
    kept = np.isin(y_test, classes)
    dest.mkdir(parents=True, exist_ok=True)
    for prefix, x, y in (
        ("train", np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid])),
        ("t10k", x_test[kept], y_test[kept]),
    ):
        _write_idx(dest / f"{prefix}-images-idx3-ubyte", x[:, 0])
        _write_idx(dest / f"{prefix}-labels-idx1-ubyte", y)
    return len(y_valid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", type=Path, help="folder of Fashion-MNIST's IDX files")
    parser.add_argument("dest", type=Path, help="folder to write the derived IDX files to")
    parser.add_argument("--keep", nargs="+", help="class names to keep (default: all)")
    parser.add_argument("--label-noise", type=float, default=0.0, help="fraction of wrong training labels")
    parser.add_argument("--noise-seed", type=int, default=0, help="which images and wrong labels")
    parser.add_argument("--valid-size", type=int, default=10_000, help="the source's validation split")
    parser.add_argument("--train-subset", type=int, help="the recipe's data.train_subset")
    args = parser.parse_args(argv)
    try:
        valid = derive(
            args.src,
            args.dest,
            args.keep,
            args.label_noise,
            args.noise_seed,
            args.valid_size,
            args.train_subset,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"--set data.root={args.dest} data.valid_size={valid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
