"""Colour jitter on real CIFAR-10 and Fashion-MNIST images: conformance, formulas and properties."""

from __future__ import annotations

import colorsys
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
from stnkit_augment import Brightness, Contrast, Hue, Saturation
from stnkit_augment.images import read_cifar10_bin, read_idx_images

DATA = Path(__file__).resolve().parents[2] / "stnkit-cnn" / "tests" / "data"
RGB, _ = read_cifar10_bin(DATA / "cifar-10-batches-bin" / "test_batch.bin")
GREY = read_idx_images(DATA / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")
# CIFAR-10 holds a few greyscale photos, on which saturation and hue can change nothing
COLOURFUL = RGB[(RGB.amax(dim=1) - RGB.amin(dim=1)).amax(dim=(1, 2)) > 0.1]

JITTER: list[tuple[type[Augmentation], str, float]] = [
    (Brightness, "brightness", 1.0),
    (Contrast, "contrast", 1.0),
    (Saturation, "saturation", 1.0),
    (Hue, "hue", 0.5),
]


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


class TestBrightness(_RealImages):
    augmentation_cls = Brightness
    identity = {"brightness": 0.0}
    strong = {"brightness": 0.8}


class TestBrightnessGrey(TestBrightness):
    images = GREY


class TestContrast(_RealImages):
    augmentation_cls = Contrast
    identity = {"contrast": 0.0}
    strong = {"contrast": 0.8}


class TestContrastGrey(TestContrast):
    images = GREY


class TestSaturation(_RealImages):
    augmentation_cls = Saturation
    identity = {"saturation": 0.0}
    strong = {"saturation": 0.9}


class TestHue(_RealImages):
    augmentation_cls = Hue
    identity = {"hue": 0.0}
    strong = {"hue": 0.5}


# -- the documented formulas, with the same random draws ----------------------------------------


def _factors(seed: int, strength: Tensor) -> Tensor:
    """``f ~ U(1 − s, 1 + s)`` as ``(B, 1, 1, 1)``, drawn as the augmentations draw them."""
    torch.manual_seed(seed)
    return (1 + strength * (2 * torch.rand(len(strength)) - 1)).view(-1, 1, 1, 1)


@pytest.mark.parametrize("images", [RGB, GREY], ids=["rgb", "grey"])
def test_brightness_scales_each_image_by_its_own_factor(images: Tensor) -> None:
    x, strength = images[:16], torch.linspace(0, 1, 16)
    torch.manual_seed(3)
    out = build(Brightness, images)(x.clone(), hyper("brightness", strength.tolist()))
    expected = (x * _factors(3, strength)).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("images", [RGB, GREY], ids=["rgb", "grey"])
def test_contrast_blends_with_the_mean_grey_level(images: Tensor) -> None:
    x, strength = images[:16], torch.linspace(0, 1, 16)
    torch.manual_seed(4)
    out = build(Contrast, images)(x.clone(), hyper("contrast", strength.tolist()))
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2] if x.shape[1] == 3 else x[:, 0]
    mean = luma.mean(dim=(1, 2)).view(-1, 1, 1, 1)
    expected = ((x - mean) * _factors(4, strength) + mean).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_saturation_blends_with_bt601_luma() -> None:
    x, strength = RGB[:16], torch.linspace(0, 1, 16)
    torch.manual_seed(5)
    out = build(Saturation, RGB)(x.clone(), hyper("saturation", strength.tolist()))
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    expected = (luma + (x - luma) * _factors(5, strength)).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    # a factor near 0 leaves (almost) the greyscale image
    f = _factors(6, torch.ones(16)).view(-1)
    torch.manual_seed(6)
    desaturated = build(Saturation, RGB)(x.clone(), hyper("saturation", [1.0] * 16))
    nearest = int(f.abs().argmin())
    spread = desaturated[nearest].amax(dim=0) - desaturated[nearest].amin(dim=0)
    assert float(spread.max()) <= float(f[nearest].abs()) + 1e-6


def test_hue_matches_colorsys_rotation() -> None:
    x, strength = COLOURFUL[:3, :, :8, :8], torch.tensor([0.5, 0.25, 0.1])
    torch.manual_seed(7)
    out = build(Hue, RGB)(x.clone(), hyper("hue", strength.tolist()))
    torch.manual_seed(7)
    shifts = strength * (2 * torch.rand(3) - 1)
    for i in range(3):
        for row in range(8):
            for col in range(8):
                h, s, v = colorsys.rgb_to_hsv(*x[i, :, row, col].tolist())
                expected = colorsys.hsv_to_rgb((h + float(shifts[i])) % 1.0, s, v)
                assert torch.allclose(out[i, :, row, col], torch.tensor(expected), atol=1e-5)


# -- properties ---------------------------------------------------------------------------------

strengths = st.one_of(st.just(0.0), st.floats(0.0, 1.0))


@pytest.mark.parametrize(("cls", "name", "high"), JITTER, ids=[j[1] for j in JITTER])
@given(
    start=st.integers(0, len(RGB) - 6),
    values=st.lists(strengths, min_size=6, max_size=6),
    seed=st.integers(0, 2**31 - 1),
)
def test_range_and_untouched_zero_rows(
    cls: type[Augmentation], name: str, high: float, start: int, values: list[float], seed: int
) -> None:
    x = RGB[start : start + 6].clone()
    hp = hyper(name, [v * high for v in values])
    torch.manual_seed(seed)
    out = build(cls, RGB)(x.clone(), hp)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    zero = hp[name] == 0
    assert torch.equal(out[zero], x[zero])


@pytest.mark.parametrize(("cls", "name", "high"), JITTER, ids=[j[1] for j in JITTER])
@given(seed=st.integers(0, 2**31 - 1), start=st.integers(0, len(COLOURFUL) - 4))
def test_seeded_runs_repeat_and_rows_draw_independently(
    cls: type[Augmentation], name: str, high: float, seed: int, start: int
) -> None:
    # the same image four times, same strength: each copy must get its own draw
    x = COLOURFUL[start : start + 1].expand(4, -1, -1, -1).contiguous()
    augmentation = build(cls, RGB)
    torch.manual_seed(seed)
    first = augmentation(x.clone(), hyper(name, [high] * 4))
    torch.manual_seed(seed)
    again = augmentation(x.clone(), hyper(name, [high] * 4))
    assert torch.equal(first, again)
    assert len({tuple(row.flatten()[::97].tolist()) for row in first}) > 1


@pytest.mark.parametrize("cls", [Saturation, Hue])
@given(start=st.integers(0, len(GREY) - 5), values=st.lists(st.floats(0.0, 0.5), min_size=5, max_size=5))
def test_colour_ops_leave_greyscale_images_alone(
    cls: type[Augmentation], start: int, values: list[float]
) -> None:
    x = GREY[start : start + 5]
    name = next(iter(cls.hyperparameters))
    out = build(cls, GREY)(x, hyper(name, values))
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


@given(start=st.integers(0, len(RGB) - 4), values=st.lists(st.floats(0.0, 0.5), min_size=4, max_size=4))
def test_hue_keeps_value_and_chroma(start: int, values: list[float]) -> None:
    # a hue rotation moves a pixel around the colour wheel without changing its max or min channel
    x = RGB[start : start + 4]
    out = build(Hue, RGB)(x.clone(), hyper("hue", values))
    assert torch.allclose(out.amax(dim=1), x.amax(dim=1), atol=1e-5)
    assert torch.allclose(out.amin(dim=1), x.amin(dim=1), atol=1e-5)


@given(values=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_contrast_reduction_keeps_the_mean_grey_level(values: list[float], seed: int) -> None:
    # with f ≤ 1 every pixel moves towards the mean, so nothing clips and the mean stays put
    x = RGB[:4]
    torch.manual_seed(seed)
    out = build(Contrast, RGB)(x.clone(), hyper("contrast", values))
    f = _factors(seed, torch.tensor(values)).view(-1)

    def mean_grey(images: Tensor) -> Tensor:
        return (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).mean(dim=(1, 2))

    shrunk = f <= 1
    assert torch.allclose(mean_grey(out)[shrunk], mean_grey(x)[shrunk], atol=1e-5)
