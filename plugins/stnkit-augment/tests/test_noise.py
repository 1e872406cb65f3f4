"""Pixel noise on real images: input-scaling and input-dropout."""

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


def info(images: Tensor) -> DataInfo:
    return DataInfo(ClassificationTask(10), tuple(images.shape[1:]), 1, len(images), 0)


def build(cls: type[Augmentation], images: Tensor) -> Augmentation:
    return cls(cls.Config(), info(images))


def hyper(name: str, values: list[float]) -> HyperBatch:
    return HyperBatch(hnet=None, values={name: torch.tensor(values)})


class _RealImages(AugmentationConformance):
    images: ClassVar[Tensor] = RGB

    def make_data(self) -> DataInfo:
        return info(self.images)

    def make_inputs(self, batch_size: int) -> Tensor:
        return self.images[:batch_size].clone()


class TestInputScaling(_RealImages):
    augmentation_cls = InputScaling
    identity = {"input_scaling": 0.0}
    strong = {"input_scaling": 0.5}


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
    values=st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.999)), min_size=6, max_size=6),
    seed=st.integers(0, 2**31 - 1),
)
def test_range_and_untouched_zero_rows(
    cls: type[Augmentation], name: str, start: int, values: list[float], seed: int
) -> None:
    x = RGB[start : start + 6].clone()
    hp = hyper(name, values)
    torch.manual_seed(seed)
    out = build(cls, RGB)(x.clone(), hp)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    zero = hp[name] == 0
    assert torch.equal(out[zero], x[zero])


@given(start=st.integers(0, len(RGB) - 4), p=st.floats(0.0, 0.999), seed=st.integers(0, 2**31 - 1))
def test_dropout_zeroes_whole_pixels_and_nothing_else(start: int, p: float, seed: int) -> None:
    x = RGB[start : start + 4]
    torch.manual_seed(seed)
    out = build(InputDropout, RGB)(x.clone(), hyper("input_dropout", [p] * 4))
    changed = (out != x).any(dim=1, keepdim=True)
    # a changed pixel is black in every channel; the rest are the input exactly, not rescaled
    assert torch.equal(out, torch.where(changed, torch.zeros_like(x), x))


def test_dropout_rate_per_example() -> None:
    rates = [0.0, 0.1, 0.5, 0.9]
    x = torch.ones(4, 3, 256, 256)
    torch.manual_seed(0)
    out = build(InputDropout, RGB)(x, hyper("input_dropout", rates))
    dropped = (out[:, 0] == 0).float().mean(dim=(1, 2))
    # 65,536 pixels per image: the standard error of each rate is at most 0.002
    assert torch.allclose(dropped, torch.tensor(rates), atol=0.01)
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)


def test_scaling_noise_has_the_requested_spread_per_value() -> None:
    scales = [0.02, 0.05, 0.1]
    x = torch.full((3, 3, 128, 128), 0.5)
    torch.manual_seed(1)
    out = build(InputScaling, RGB)(x, hyper("input_scaling", scales))
    relative = out / x - 1.0
    assert torch.allclose(relative.std(dim=(1, 2, 3)), torch.tensor(scales), rtol=0.03)
    assert float(relative.mean(dim=(1, 2, 3)).abs().max()) < 0.002
    # independent per channel, not one scale per pixel
    assert not torch.equal(relative[:, 0], relative[:, 1])
    assert abs(float(torch.corrcoef(relative[2, :2].reshape(2, -1))[0, 1])) < 0.02


def test_scaling_of_black_pixels_stays_black() -> None:
    x = RGB[:8].clone()
    x[:, :, :4] = 0.0
    out = build(InputScaling, RGB)(x, hyper("input_scaling", [1.0] * 8))
    assert torch.equal(out[:, :, :4], x[:, :, :4]) and not torch.equal(out, x)
