"""The gaussian-noise augmentation through stnkit's augmentation conformance suite."""

from __future__ import annotations

import torch
from torch import Tensor

from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.task import ClassificationTask
from stnkit.testing import AugmentationConformance
from stnkit_example import GaussianNoise


class TestGaussianNoiseConformance(AugmentationConformance):
    augmentation_cls = GaussianNoise
    config = {"clip": (0.0, 1.0)}
    identity = {"input_noise": 0.0}
    strong = {"input_noise": 0.5}

    def make_data(self) -> DataInfo:
        return DataInfo(ClassificationTask(10), (3, 8, 8), steps_per_epoch=1, n_train=8, n_valid=8)

    def make_inputs(self, batch_size: int) -> Tensor:
        return torch.rand(batch_size, 3, 8, 8, generator=torch.Generator().manual_seed(batch_size))


def test_noise_has_the_asked_for_spread_per_example() -> None:
    torch.manual_seed(0)
    noise = GaussianNoise(GaussianNoise.Config(), TestGaussianNoiseConformance().make_data())
    x = torch.zeros(3, 20000)
    sigma = torch.tensor([0.0, 0.1, 1.0])
    out = noise(x, HyperBatch(hnet=None, values={"input_noise": sigma}))
    assert torch.equal(out[0], x[0])
    assert torch.allclose(out.std(dim=1)[1:], sigma[1:], rtol=0.03)
