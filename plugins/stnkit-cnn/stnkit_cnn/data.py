"""Image classification data sets: ``cifar10`` (both official layouts) and ``fashion-mnist`` (IDX).

Images stay uint8 in memory and become floats in [0, 1] per batch; normalisation by the training
mean and standard deviation happens inside the models, so augmentations (colour jitter, cutout)
work on the natural [0, 1] scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from stnkit.config import ComponentConfig
from stnkit.data import Batch, BuildContext, DataInfo, DataPath, Dataset, check_labels
from stnkit.errors import DataError
from stnkit.task import ClassificationTask
from stnkit_cnn.formats import read_cifar10_bin, read_cifar10_py, read_idx

__all__ = [
    "CIFAR10Data",
    "FashionMNISTData",
    "ImageData",
    "corrupt_labels",
    "read_cifar10",
    "read_fashion_mnist",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def read_cifar10(root: Path) -> tuple[Splits, str]:
    """Find and read CIFAR-10 under ``root``: the ``cifar-10-batches-bin`` or ``-py`` folder itself
    or a folder holding one. Returns the splits and the layout that was read."""
    candidates = [root, root / "cifar-10-batches-bin", root / "cifar-10-batches-py"]
    for folder in candidates:
        if (folder / "data_batch_1.bin").is_file() and (folder / "test_batch.bin").is_file():
            return read_cifar10_bin(folder), "binary"
        if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
            return read_cifar10_py(folder), "python"
    raise DataError(
        f"{root}: no CIFAR-10 found — expected cifar-10-batches-bin/{{data_batch_1..5,test_batch}}.bin "
        "or cifar-10-batches-py/{data_batch_1..5,test_batch}; "
        "../shared/tools/fetch-cifar10 DEST builds the former"
    )


def read_fashion_mnist(root: Path) -> Splits:
    """Fashion-MNIST's four IDX files (``.gz`` or not) from ``root``."""

    def find(stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (root / name).is_file():
                return root / name
        raise DataError(f"{root}: missing {stem}(.gz)")

    splits: Splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"{root}: {prefix} has {len(images)} images but {len(labels)} labels")
        splits[split] = (images[:, None], labels)
    return splits


class ImageConfig(ComponentConfig):
    root: DataPath = Field(description="data folder; relative paths start at the recipe's folder")
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(500, ge=1)
    hyper_batch_size: int | None = Field(
        None, ge=1, description="validation images per hyper step (default batch_size)"
    )
    valid_size: int = Field(
        10_000, ge=1, description="the last N training images, in order, are the validation set"
    )
    train_subset: int | None = Field(None, ge=1, description="use only the first N training images")
    valid_subset: int | None = Field(None, ge=1, description="use only the first N validation images")
    test_subset: int | None = Field(None, ge=1, description="use only the first N test images")
    keep_classes: list[str] | None = Field(
        None,
        min_length=2,
        description="only these classes, by name, relabelled 0..K-1 in this order (a harder task: "
        "e.g. Fashion-MNIST's four upper-body garments); the subsets count kept images",
    )
    train_label_noise: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="this fraction of the training images (after the subsets) gets a wrong label, "
        "drawn uniformly from the other classes; validation and test labels stay clean. The same "
        "images and labels for every run (label_noise_seed), so methods compare on one data set",
    )
    label_noise_seed: int = Field(0, description="which images and wrong labels train_label_noise picks")
    shuffle: bool = True


class ImageData(Dataset):
    """Train / validation / test image tensors held as uint8, batched as floats in [0, 1]."""

    classes: tuple[str, ...] = ()
    checks_values = True  # checked as loaded
    Config = ImageConfig
    config: ImageConfig

    def __init__(self, config: ImageConfig, context: BuildContext) -> None:
        super().__init__(config, context)
        splits = self.read(Path(config.root))
        for split, (_, split_labels) in splits.items():
            # a label past the class list would fail inside the loss, after the run file exists
            check_labels(
                split_labels, f"{config.root}: {split} labels", num_classes=len(self.classes) or None
            )
        images, labels = splits["train"]
        if config.valid_size >= len(images):
            raise DataError(
                f"valid_size {config.valid_size} leaves no training images (the file has {len(images)})"
            )
        cut = len(images) - config.valid_size
        train = (images[:cut], labels[:cut])
        valid = (images[cut:], labels[cut:])
        test = splits["test"]
        relabel = self._relabelling(config.keep_classes)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        for name, (x, y), subset in (
            ("train", train, config.train_subset),
            ("valid", valid, config.valid_subset),
            ("test", test, config.test_subset),
        ):
            if relabel is not None:
                kept = relabel[y] >= 0
                x, y = x[kept], relabel[y[kept]]
            stop = len(x) if subset is None else min(subset, len(x))
            # copies: the readers return read-only views of the file bytes
            self.splits[name] = (torch.from_numpy(np.array(x[:stop])), torch.from_numpy(np.array(y[:stop])))
        x_train = self.splits["train"][0]
        pixels = x_train.permute(1, 0, 2, 3).reshape(x_train.shape[1], -1).double() / 255.0
        n_train = len(x_train)
        if config.keep_classes is None:
            names = list(self.classes)
            num_classes = max(10, int(max(int(y.max()) for _, y in self.splits.values())) + 1)
        else:
            names = list(config.keep_classes)
            num_classes = len(names)
        if config.train_label_noise > 0:  # wrong labels among the named classes
            x_clean, y_clean = self.splits["train"]
            noisy = corrupt_labels(y_clean, config.train_label_noise, len(names), config.label_noise_seed)
            self.splits["train"] = (x_clean, noisy)
        self._info = DataInfo(
            task=ClassificationTask(num_classes),
            input_shape=tuple(x_train.shape[1:]),
            steps_per_epoch=math.ceil(n_train / config.batch_size),
            n_train=n_train,
            n_valid=len(self.splits["valid"][0]),
            n_test=len(self.splits["test"][0]),
            output_size=num_classes,
            extras={
                "mean": pixels.mean(dim=1).tolist(),
                "std": pixels.std(dim=1).tolist(),
                "classes": names,
            },
        )

    def read(self, root: Path) -> Splits:
        raise NotImplementedError

    def _relabelling(self, keep: list[str] | None) -> np.ndarray | None:
        """A map from file label to kept label (-1: dropped), or None to keep every class."""
        if keep is None:
            return None
        unknown = [name for name in keep if name not in self.classes]
        if unknown or len(set(keep)) != len(keep):
            what = f"unknown class {unknown[0]!r}" if unknown else "a class named twice"
            raise DataError(f"data.keep_classes: {what}; {self.name}'s classes are {list(self.classes)}")
        relabel = np.full(len(self.classes), -1, dtype=np.int64)
        for new_label, name in enumerate(keep):
            relabel[self.classes.index(name)] = new_label
        return relabel

    @property
    def info(self) -> DataInfo:
        return self._info

    def _batches(self, split: str, size: int, order: Tensor | None) -> Iterator[Batch]:
        x, y = self.splits[split]
        index = order if order is not None else torch.arange(len(x))
        for start in range(0, len(x), size):
            chosen = index[start : start + size]
            yield Batch(x[chosen].float().div_(255.0), y[chosen], first=start == 0)

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        n = len(self.splits["train"][0])
        order = torch.randperm(n, generator=generator) if self.config.shuffle else None
        return self._batches("train", self.config.batch_size, order)

    def valid_batches(self) -> Iterator[Batch]:
        return self._batches("valid", self.config.eval_batch_size, None)

    def test_batches(self) -> Iterator[Batch]:
        return self._batches("test", self.config.eval_batch_size, None)

    def hyper_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        # hyper steps see random validation batches (of the training batch size unless
        # hyper_batch_size says otherwise), reshuffled each pass
        n = len(self.splits["valid"][0])
        size = self.config.hyper_batch_size or self.config.batch_size
        while True:
            yield from self._batches("valid", size, torch.randperm(n, generator=generator))


def corrupt_labels(labels: Tensor, fraction: float, classes: int, seed: int) -> Tensor:
    """``labels`` with ``round(fraction · N)`` of them, chosen at random, replaced by a different
    class drawn uniformly (symmetric label noise). Deterministic in ``seed`` alone: the noise is
    part of the data set, not of a run, so every method and run seed sees the same labels."""
    rng = np.random.Generator(np.random.PCG64(seed))
    noisy = labels.clone()
    chosen = rng.permutation(len(labels))[: round(fraction * len(labels))]
    # an offset of 1..K-1 classes: never the true label, every other one equally likely
    offsets = rng.integers(1, classes, size=len(chosen))
    noisy[chosen] = (labels[chosen] + torch.from_numpy(offsets)) % classes
    return noisy


class CIFAR10Data(ImageData):
    """CIFAR-10 from ``cifar-10-batches-bin`` or ``cifar-10-batches-py``. By default the last
    10,000 of the 50,000 training images are the validation set (the STN paper's split)."""

    name = "cifar10"
    classes = CIFAR10_CLASSES

    def read(self, root: Path) -> Splits:
        splits, self.layout = read_cifar10(root)
        return splits


class FashionMNISTData(ImageData):
    """Fashion-MNIST from its IDX files; by default the last 10,000 training images validate."""

    name = "fashion-mnist"
    classes = FASHION_CLASSES

    def read(self, root: Path) -> Splits:
        return read_fashion_mnist(root)
