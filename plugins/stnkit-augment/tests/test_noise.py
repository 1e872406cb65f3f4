"""Input noise on real images: input-scaling and input-dropout, as the released code applies them
to the normalised image."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from stnkit.augment import Augmentation
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.task import ClassificationTask
from stnkit.testing import AugmentationConformance
from stnkit_augment import InputDropout, InputScaling
from stnkit_augment.images import read_cifar10_bin, read_idx_images

DATA = Path(__file__).resolve().parents[2] / "stnkit-cnn" / "tests" / "data"
RGB, _ = read_cifar10_bin(DATA / "cifar-10-batches-bin" / "test_batch.bin")
GREY = read_idx_images(DATA / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")


def channel_mean(images: Tensor) -> list[float]:
    return [float(v) for v in images.mean(dim=(0, 2, 3))]


def info(images: Tensor) -> DataInfo:
    """The data set facts an augmentation reads, with the images' own channel mean (as the CNN
    data sets give it)."""
    extras = {"mean": channel_mean(images), "std": [float(v) for v in images.std(dim=(0, 2, 3))]}
    return DataInfo(ClassificationTask(10), tuple(images.shape[1:]), 1, len(images), 0, extras=extras)


def normalized(images: Tensor, reference: Tensor) -> Tensor:
    """What the model feeds its first layer: ``(x − m) / σ`` with ``reference``'s statistics."""
    data = info(reference)
    mean = torch.tensor(data.extras["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data.extras["std"]).view(1, -1, 1, 1)
    return (images - mean) / std


def build(cls: type[Augmentation], images: Tensor) -> Augmentation:
    return cls(cls.Config(), info(images))


def hyper(name: str, values: list[float]) -> HyperBatch:
    return HyperBatch(hnet=None, values={name: torch.tensor(values)})


class _RealImages(AugmentationConformance):
    images: ClassVar[Tensor] = RGB
    # normalised-space operations are not clamped to [0, 1]: at the strengths below the pixel
    # values stay within m ± 2 (m in [0, 1])
    low = -1.0
    high = 2.0

    def make_data(self) -> DataInfo:
        return info(self.images)

    def make_inputs(self, batch_size: int) -> Tensor:
        return self.images[:batch_size].clone()


class TestInputScaling(_RealImages):
    augmentation_cls = InputScaling
    identity = {"input_scaling": 0.0}
    strong = {"input_scaling": 0.3}


class TestInputScalingGrey(TestInputScaling):
    images = GREY


class TestInputDropout(_RealImages):
    augmentation_cls = InputDropout
    identity = {"input_dropout": 0.0}
    strong = {"input_dropout": 0.5}


class TestInputDropoutGrey(TestInputDropout):
    images = GREY


NOISE = [(InputScaling, "input_scaling"), (InputDropout, "input_dropout")]


@pytest.mark.parametrize(("cls", "name"), NOISE, ids=[n[1] for n in NOISE])
@given(
    start=st.integers(0, len(RGB) - 6),
    values=st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.9)), min_size=6, max_size=6),
    seed=st.integers(0, 2**31 - 1),
)
def test_finite_and_untouched_zero_rows(
    cls: type[Augmentation], name: str, start: int, values: list[float], seed: int
) -> None:
    x = RGB[start : start + 6].clone()
    hp = hyper(name, values)
    torch.manual_seed(seed)
    out = build(cls, RGB)(x.clone(), hp)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    zero = hp[name] == 0
    assert torch.equal(out[zero], x[zero])


def test_scaling_is_one_factor_per_normalized_image() -> None:
    """z ↦ f·z with one f per image, f ~ U(1/(1+s), 1+s) (the released input scaling)."""
    s = 0.3
    x = RGB[:4].repeat(500, 1, 1, 1)  # 2,000 images
    torch.manual_seed(0)
    out = build(InputScaling, RGB)(x.clone(), hyper("input_scaling", [s] * len(x)))
    z, z_out = normalized(x, RGB), normalized(out, RGB)
    # the factor is the ratio on the image's largest normalised value (far from 0)
    big = z.flatten(1).abs().argmax(dim=1, keepdim=True)
    factor = z_out.flatten(1).gather(1, big) / z.flatten(1).gather(1, big)
    assert torch.allclose(z_out, factor.view(-1, 1, 1, 1) * z, atol=1e-4)
    low, high = 1 / (1 + s), 1 + s
    assert float(factor.min()) >= low - 1e-5 and float(factor.max()) <= high + 1e-5
    # uniform over [low, high]: mean (low + high)/2 and the extremes nearly reached
    assert float(factor.mean()) == pytest.approx((low + high) / 2, abs=0.01)
    assert float(factor.min()) < low + 0.01 and float(factor.max()) > high - 0.01


def test_scaling_strength_per_example() -> None:
    scales = [0.0, 0.05, 0.3]
    x = RGB[:1].repeat(3, 1, 1, 1)
    torch.manual_seed(1)
    out = build(InputScaling, RGB)(x.clone(), hyper("input_scaling", scales))
    z, z_out = normalized(x, RGB), normalized(out, RGB)
    factor = (z_out * z).sum(dim=(1, 2, 3)) / (z * z).sum(dim=(1, 2, 3))
    for f, s in zip(factor.tolist(), scales, strict=True):
        assert 1 / (1 + s) - 1e-5 <= f <= 1 + s + 1e-5
    assert factor[0] == 1.0


@given(start=st.integers(0, len(RGB) - 4), p=st.floats(0.0, 0.9), seed=st.integers(0, 2**31 - 1))
def test_dropout_zeroes_or_rescales_each_normalized_value(start: int, p: float, seed: int) -> None:
    """Each value of z is either dropped to 0 (the mean colour) or divided by 1 − p."""
    x = RGB[start : start + 4]
    torch.manual_seed(seed)
    out = build(InputDropout, RGB)(x.clone(), hyper("input_dropout", [p] * 4))
    z, z_out = normalized(x, RGB), normalized(out, RGB)
    kept = torch.isclose(z_out, z / (1 - p), atol=1e-4)
    dropped = z_out.abs() < 1e-4
    assert bool((kept | dropped).all())


def test_dropout_is_elementwise_per_channel_and_keeps_the_expectation() -> None:
    rates = [0.0, 0.1, 0.5, 0.9]
    x = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    augmentation = build(InputDropout, RGB)
    out = augmentation(x.clone(), hyper("input_dropout", rates))
    mean = torch.tensor(channel_mean(RGB)).view(1, 3, 1, 1)
    dropped = (out - mean).abs() < 1e-6
    # 196,608 values per image: the standard error of each rate is at most 0.0012
    assert torch.allclose(dropped.float().mean(dim=(1, 2, 3)), torch.tensor(rates), atol=0.006)
    # channels are dropped independently, not whole pixels
    assert not torch.equal(dropped[2, 0], dropped[2, 1])
    both = (dropped[2, 0] & dropped[2, 1]).float().mean()
    assert float(both) == pytest.approx(0.25, abs=0.01)
    # inverted dropout: averaged over draws, the normalised image is unchanged
    draws = torch.stack([augmentation(x[2:3].clone(), hyper("input_dropout", [0.5])) for _ in range(400)])
    assert torch.allclose(draws.mean(dim=0) - mean, x[2:3] - mean, atol=0.12)
    assert float((draws.mean(dim=0) - x[2:3]).abs().mean()) < 0.02
