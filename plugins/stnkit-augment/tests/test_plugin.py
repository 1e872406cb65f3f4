"""Registration through the entry point, declarations, configs and shape errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from stnkit.data import DataInfo
from stnkit.errors import UsageError
from stnkit.hyper.space import HyperBatch
from stnkit.plugins import Plugins
from stnkit.task import ClassificationTask
from stnkit_augment import (
    AUGMENTATIONS,
    Cutout,
    Hue,
    ImageAugmentation,
    NormalizedSpaceAugmentation,
    Saturation,
)
from stnkit_augment.images import read_cifar10_bin

DATA = Path(__file__).resolve().parents[2] / "stnkit-cnn" / "tests" / "data"
RGB, LABELS = read_cifar10_bin(DATA / "cifar-10-batches-bin" / "test_batch.bin", count=64)
NAMES = {"brightness", "contrast", "saturation", "hue", "input-scaling", "input-dropout", "cutout"}


def info(shape: tuple[int, ...]) -> DataInfo:
    return DataInfo(ClassificationTask(10), shape, 1, 64, 0)


def test_reader_gives_the_official_layout() -> None:
    assert RGB.shape == (64, 3, 32, 32) and RGB.dtype == torch.float32
    assert float(RGB.min()) >= 0.0 and float(RGB.max()) <= 1.0
    # the first test labels of the official file: cat, ship, ship, airplane, frog
    assert LABELS[:5].tolist() == [3, 8, 8, 0, 6]


def test_entry_point_registers_every_augmentation(stnkit_plugins: Plugins) -> None:
    registry = stnkit_plugins.augmentations
    assert set(registry) >= NAMES
    for cls in AUGMENTATIONS:
        entry = registry.entry(cls.name)
        assert entry.cls is cls and entry.plugin == "augment"


@pytest.mark.parametrize("cls", AUGMENTATIONS, ids=[c.name for c in AUGMENTATIONS])
def test_declarations_default_to_the_identity(cls: type[ImageAugmentation]) -> None:
    assert cls.hyperparameters
    values: dict[str, torch.Tensor] = {}
    for name, use in cls.hyperparameters.items():
        assert name.isidentifier() and use.description
        assert use.default is not None and use.low <= use.default <= use.high
        assert use.integer == (cls is Cutout) and not use.per_batch
        values[name] = torch.full((8,), use.default)
    x = RGB[:8]
    out = cls(cls.Config(), info((3, 32, 32)))(x.clone(), HyperBatch(hnet=None, values=values))
    assert torch.equal(out, x)


@pytest.mark.parametrize("cls", AUGMENTATIONS, ids=[c.name for c in AUGMENTATIONS])
def test_configs_reject_unknown_keys(cls: type[ImageAugmentation]) -> None:
    assert isinstance(cls.Config.model_validate({}), cls.Config)
    with pytest.raises(ValidationError):
        cls.Config.model_validate({"strenght": 0.5})


@pytest.mark.parametrize("cls", AUGMENTATIONS, ids=[c.name for c in AUGMENTATIONS])
def test_non_image_data_is_a_usage_error(cls: type[ImageAugmentation]) -> None:
    with pytest.raises(UsageError, match="needs image inputs"):
        cls(cls.Config(), info((13,)))


@pytest.mark.parametrize("cls", [Saturation, Hue])
def test_colour_ops_need_one_or_three_channels(cls: type[ImageAugmentation]) -> None:
    with pytest.raises(UsageError, match="1 or 3 channels"):
        cls(cls.Config(), info((2, 32, 32)))


def test_unbatched_input_is_refused() -> None:
    hue = Hue(Hue.Config(), info((3, 32, 32)))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        hue(RGB[0], HyperBatch(hnet=None, values={"hue": torch.tensor([0.1])}))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_float_dtypes_are_kept(dtype: torch.dtype) -> None:
    x = RGB[:4].to(dtype)
    for cls in AUGMENTATIONS:
        values = {
            name: torch.full((4,), 0.3 if not use.integer else 3.0)
            for name, use in cls.hyperparameters.items()
        }
        out = cls(cls.Config(), info((3, 32, 32)))(x.clone(), HyperBatch(hnet=None, values=values))
        assert out.dtype == dtype and out.shape == x.shape
        assert torch.isfinite(out).all() and not torch.equal(out, x)
        if not issubclass(cls, NormalizedSpaceAugmentation):  # those stand for unclamped values
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
