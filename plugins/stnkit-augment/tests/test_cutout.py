"""Cutout on real images: conformance, hole geometry, integer handling, per-example counts."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.task import ClassificationTask
from stnkit.testing import AugmentationConformance, make_space
from stnkit_augment import Cutout, cutout_mask
from stnkit_augment.images import read_cifar10_bin, read_idx_images

DATA = Path(__file__).resolve().parents[2] / "stnkit-cnn" / "tests" / "data"
RGB, _ = read_cifar10_bin(DATA / "cifar-10-batches-bin" / "test_batch.bin")
GREY = read_idx_images(DATA / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")


def info(images: Tensor) -> DataInfo:
    return DataInfo(ClassificationTask(10), tuple(images.shape[1:]), 1, len(images), 0)


def cutout(images: Tensor) -> Cutout:
    return Cutout(Cutout.Config(), info(images))


def hyper(holes: list[float], length: list[float]) -> HyperBatch:
    return HyperBatch(
        hnet=None, values={"cutout_holes": torch.tensor(holes), "cutout_length": torch.tensor(length)}
    )


class _RealImages(AugmentationConformance):
    images: ClassVar[Tensor] = RGB

    def make_data(self) -> DataInfo:
        return info(self.images)

    def make_inputs(self, batch_size: int) -> Tensor:
        return self.images[:batch_size].clone()


class TestCutoutNoHoles(_RealImages):
    augmentation_cls = Cutout
    identity = {"cutout_holes": 0.0, "cutout_length": 16.0}
    strong = {"cutout_holes": 3.0, "cutout_length": 16.0}


class TestCutoutZeroLength(_RealImages):
    augmentation_cls = Cutout
    identity = {"cutout_holes": 3.0, "cutout_length": 0.0}
    strong = {"cutout_holes": 3.0, "cutout_length": 8.0}


class TestCutoutGrey(TestCutoutNoHoles):
    images = GREY


def bounding_box(mask: Tensor) -> tuple[int, int]:
    """Height and width of the smallest rectangle holding every true pixel of ``mask`` ``(H, W)``."""
    rows = mask.any(dim=1).nonzero()
    cols = mask.any(dim=0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@given(
    length=st.integers(0, 40),
    height=st.integers(1, 33),
    width=st.integers(1, 33),
    seed=st.integers(0, 2**31 - 1),
)
def test_one_hole_is_a_clipped_square(length: int, height: int, width: int, seed: int) -> None:
    x = torch.ones(16, 3, height, width)
    torch.manual_seed(seed)
    out = cutout(x)(x, hyper([1.0] * 16, [float(length)] * 16))
    zeroed = out == 0
    assert torch.equal(zeroed, zeroed[:, :1].expand_as(zeroed)), "channels of a pixel differ"
    area = zeroed[:, 0].sum(dim=(1, 2))
    assert int(area.max()) <= min(length * length, height * width)
    if length == 0:
        assert int(area.max()) == 0
        return
    assert int(area.min()) >= 1
    for mask in zeroed[:, 0]:
        box_h, box_w = bounding_box(mask)
        assert int(mask.sum()) == box_h * box_w, "a single hole is a rectangle"
        assert box_h <= length and box_w <= length
        # a square that fits touches no border only if it kept its full side
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        if int(rows.min()) > 0 and int(rows.max()) < height - 1:
            assert box_h == length
        if int(cols.min()) > 0 and int(cols.max()) < width - 1:
            assert box_w == length


@given(
    holes=st.lists(st.integers(0, 5), min_size=6, max_size=6),
    length=st.lists(st.integers(0, 12), min_size=6, max_size=6),
    start=st.integers(0, len(RGB) - 6),
    seed=st.integers(0, 2**31 - 1),
)
def test_per_example_holes_and_lengths(holes: list[int], length: list[int], start: int, seed: int) -> None:
    x = RGB[start : start + 6]
    torch.manual_seed(seed)
    out = cutout(RGB)(x.clone(), hyper([float(h) for h in holes], [float(n) for n in length]))
    torch.manual_seed(seed)
    area = cutout_mask(torch.tensor(holes), torch.tensor(length), 32, 32).sum(dim=(1, 2))
    for i, (n, side) in enumerate(zip(holes, length, strict=True)):
        if n == 0 or side == 0:
            assert torch.equal(out[i], x[i]) and int(area[i]) == 0
        else:
            assert 1 <= int(area[i]) <= min(n * side * side, 32 * 32)
    # every value is either the input's or a cutout zero, and within [0, 1]
    assert torch.equal(out, torch.where(out == 0, out, x))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_mask_matches_the_applied_zeros() -> None:
    x = torch.ones(8, 3, 32, 32)
    torch.manual_seed(11)
    out = cutout(x)(x, hyper([2.0] * 8, [9.0] * 8))
    torch.manual_seed(11)
    mask = cutout_mask(torch.full((8,), 2), torch.full((8,), 9), 32, 32)
    assert torch.equal(out == 0, mask.unsqueeze(1).expand_as(out))


@given(holes=st.floats(0.0, 5.99), length=st.floats(0.0, 20.99), seed=st.integers(0, 2**31 - 1))
def test_values_are_floored(holes: float, length: float, seed: int) -> None:
    x = RGB[:4]
    torch.manual_seed(seed)
    fractional = cutout(RGB)(x.clone(), hyper([holes] * 4, [length] * 4))
    torch.manual_seed(seed)
    whole = cutout(RGB)(x.clone(), hyper([float(int(holes))] * 4, [float(int(length))] * 4))
    assert torch.equal(fractional, whole)


@given(u=st.lists(st.floats(-8.0, 8.0), min_size=2, max_size=2), seed=st.integers(0, 2**31 - 1))
def test_integer_kinds_stay_in_range(u: list[float], seed: int) -> None:
    space = make_space(
        {
            "cutout_holes": {"kind": "integer", "low": 0, "high": 3, "init": 1},
            "cutout_length": {"kind": "integer", "low": 0, "high": 16, "init": 8},
        }
    )
    torch.manual_seed(seed)
    raw = space.sample(8) + torch.tensor(u)
    hp = space.batch(raw, None)
    holes, length = hp.discrete("cutout_holes"), hp.discrete("cutout_length")
    assert int(holes.min()) >= 0 and int(holes.max()) <= 3
    assert int(length.min()) >= 0 and int(length.max()) <= 16
    x = torch.ones(8, 3, 32, 32)
    out = cutout(x)(x, hp)
    area = (out[:, 0] == 0).sum(dim=(1, 2))
    assert torch.all(area <= holes * length * length)
    assert torch.all((area >= 1) == ((holes >= 1) & (length >= 1)))


def test_a_square_twice_the_image_covers_it() -> None:
    x = RGB[:5]
    out = cutout(RGB)(x.clone(), hyper([1.0, 2.0, 1.0, 0.0, 1.0], [64.0, 64.0, 63.0, 64.0, 0.0]))
    assert torch.equal(out[:2], torch.zeros_like(out[:2]))
    assert torch.equal(out[3:], x[3:])


def test_centres_reach_every_pixel() -> None:
    # uniform centres: 1x1 holes over many draws cover the whole image, corners included
    torch.manual_seed(0)
    mask = cutout_mask(torch.ones(30000, dtype=torch.long), torch.ones(30000, dtype=torch.long), 32, 32)
    assert torch.equal(mask.sum(dim=(1, 2)), torch.ones(30000, dtype=torch.long))
    counts = mask.sum(dim=0).float()
    assert bool(counts.min() > 0)
    # 30000 / 1024 ≈ 29 per pixel; a Poisson count that far off would be a > 6-sigma event
    assert float(counts.mean()) == 30000 / 1024 and float(counts.max()) < 29.3 + 6 * 29.3**0.5


def test_holes_are_zero_in_the_normalized_image() -> None:
    """As in the released code, cutout acts after normalisation: a hole takes the mean colour."""
    mean = [float(v) for v in RGB.mean(dim=(0, 2, 3))]
    std = [float(v) for v in RGB.std(dim=(0, 2, 3))]
    data = DataInfo(ClassificationTask(10), (3, 32, 32), 1, len(RGB), 0, extras={"mean": mean, "std": std})
    x = RGB[:8].clone()
    torch.manual_seed(3)
    out = Cutout(Cutout.Config(), data)(x.clone(), hyper([2.0] * 8, [9.0] * 8))
    torch.manual_seed(3)
    mask = cutout_mask(torch.full((8,), 2), torch.full((8,), 9), 32, 32).unsqueeze(1).expand_as(x)
    z = (out - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert float(z[mask].abs().max()) < 1e-6
    assert torch.equal(out[~mask], x[~mask])
