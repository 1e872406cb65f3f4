"""Model conformance for the CNNs."""

from __future__ import annotations

import torch

from stnkit.data import Batch, DataInfo
from stnkit.task import ClassificationTask
from stnkit.testing import ModelConformance
from stnkit_cnn import STNAlexNet, STNSmallCNN

ALEX = {n: {"kind": "unit", "init": 0.2} for n in STNAlexNet.hyperparameters}


class _Images(ModelConformance):
    shape = (3, 32, 32)
    atol = 1e-4

    def make_data(self) -> DataInfo:
        extras = {"mean": [0.5] * self.shape[0], "std": [0.25] * self.shape[0]}
        return DataInfo(ClassificationTask(10), self.shape, 1, 8, 8, output_size=10, extras=extras)

    def make_batch(self, batch_size: int) -> Batch:
        g = torch.Generator().manual_seed(batch_size)
        return Batch(
            torch.rand(batch_size, *self.shape, generator=g), torch.randint(0, 10, (batch_size,), generator=g)
        )


class TestAlexNetConformance(_Images):
    model_cls = STNAlexNet
    config = {"channels": [8, 12, 16, 12, 12], "fc": [32, 32]}
    hyperparameters = ALEX


class TestSmallCNNConformance(_Images):
    model_cls = STNSmallCNN
    config = {"channels": [6, 8], "hidden": 16}
    hyperparameters = {n: {"kind": "unit", "init": 0.2} for n in STNSmallCNN.hyperparameters}


class TestSmallCNNGreyscale(TestSmallCNNConformance):
    shape = (1, 28, 28)


def test_alexnet_has_the_papers_layout() -> None:
    info = DataInfo(ClassificationTask(10), (3, 32, 32), 1, 1, 1, output_size=10)
    model = STNAlexNet(STNAlexNet.Config(), info, 15)
    widths = [conv.out_channels for conv in model.convs]
    assert widths == [64, 192, 384, 256, 256]
    assert [fc.out_features for fc in model.fcs] == [4096, 4096]
    assert len(STNAlexNet.hyperparameters) == 7
