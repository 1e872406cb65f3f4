"""Model conformance for the CNNs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from stnkit.data import Batch, DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.nn import count_parameters
from stnkit.task import ClassificationTask
from stnkit.testing import ModelConformance
from stnkit_cnn import STNAlexNet, STNSmallCNN, read_cifar10

_TEST_IMAGES, _ = read_cifar10(Path(__file__).parent / "data")[0]["test"]
#: 64 real CIFAR-10 test images, (64, 3, 32, 32) in [0, 1]
IMAGES = torch.from_numpy(_TEST_IMAGES[:64].copy()).float() / 255.0

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


def test_alexnet_is_the_released_network() -> None:
    """Five 3x3 convolutions, conv1 of stride 2, pools after 1, 2, 5: 1024 features, and
    the released plain network's exact parameter count."""
    info = DataInfo(ClassificationTask(10), (3, 32, 32), 1, 1, 1, output_size=10)
    model = STNAlexNet(STNAlexNet.Config(), info, 0)
    assert [conv.kernel_size for conv in model.convs] == [(3, 3)] * 5
    assert [conv.stride for conv in model.convs] == [(2, 2)] + [(1, 1)] * 4
    assert model.fcs[0].in_features == 256 * 2 * 2
    assert [fc.out_features for fc in model.fcs] == [4096, 4096]
    assert count_parameters(model) == (23_272_266, 0)
    assert sum(p.numel() for p in model.parameters()) == 23_272_266
    # with 15 hyperparameters: the same elementary network, plus response copies and V
    elementary, response = count_parameters(STNAlexNet(STNAlexNet.Config(), info, 15))
    assert elementary == 23_272_266
    assert response == 23_272_266 + 2 * 15 * (64 + 192 + 384 + 256 + 256 + 4096 + 4096 + 10)


# (model class, config, the dropout site, the module whose input is that site's output)
NARROW = {"channels": [16, 24, 32, 24, 24], "fc": [64, 64]}
SITES = [
    *[(STNAlexNet, NARROW, f"dropout_conv{i}", f"convs.{i}") for i in range(1, 5)],
    (STNAlexNet, NARROW, "dropout_conv5", "fcs.0"),
    (STNAlexNet, NARROW, "dropout_fc1", "fcs.0"),
    (STNAlexNet, NARROW, "dropout_fc2", "fcs.1"),
    (STNSmallCNN, {"channels": [16, 16], "hidden": 32}, "dropout_conv1", "convs.1"),
    (STNSmallCNN, {"channels": [16, 16], "hidden": 32}, "dropout_conv2", "fcs.0"),
    (STNSmallCNN, {"channels": [16, 16], "hidden": 32}, "dropout_fc1", "fcs.0"),
]


@pytest.mark.parametrize(("cls", "config", "site", "consumer"), SITES)
def test_training_activations_keep_the_eval_mean(
    cls: Any, config: dict[str, Any], site: str, consumer: str
) -> None:
    """At p = 0.5, what the next layer sees in training has the eval-mode mean (within 5%).

    Inverted dropout placed before a max-pool fails this: the pool keeps the largest of the
    1/(1-p)-inflated survivors (a ratio of about 1.45 at p = 0.5)."""
    torch.manual_seed(0)
    images = IMAGES
    info = DataInfo(ClassificationTask(10), (3, 32, 32), 1, 64, 1, output_size=10)
    model = cls(cls.Config.model_validate(config), info, 0)
    seen: list[Tensor] = []
    model.get_submodule(consumer).register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    values = {name: torch.zeros(64) for name in cls.hyperparameters}
    values[site] = torch.full((64,), 0.5)
    hp = HyperBatch(hnet=None, values=values)
    with torch.no_grad():
        model.eval()
        model(images, hp)
        eval_mean = float(seen.pop().mean())
        model.train()
        for _ in range(20):
            model(images, hp)
    train_mean = float(torch.stack(seen).mean())
    assert train_mean == pytest.approx(eval_mean, rel=0.05)


def test_conv_dropout_drops_whole_channels_per_example() -> None:
    """Each example's channels are kept or zeroed whole, at that example's own rate."""
    torch.manual_seed(0)
    info = DataInfo(ClassificationTask(10), (3, 32, 32), 1, 1, 1, output_size=10)
    model = STNSmallCNN(STNSmallCNN.Config(channels=[64, 64], hidden=8), info, 0).train()
    seen: list[Tensor] = []
    model.convs[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    rates = torch.tensor([0.0, 0.9] * 16)
    values = {name: torch.zeros(32) for name in STNSmallCNN.hyperparameters}
    values["dropout_conv1"] = rates
    with torch.no_grad():
        model(torch.rand(32, 3, 32, 32), HyperBatch(hnet=None, values=values))
    maps = seen[0]
    alive = maps.abs().flatten(2).amax(dim=2) > 0  # (B, C): any nonzero position
    zero = (maps == 0).flatten(2).all(dim=2)
    assert bool((alive | zero).all())
    kept = alive.float().mean(dim=1)
    assert float(kept[0::2].mean()) > 0.9  # rate 0: (almost) every channel alive after ReLU
    assert float(kept[1::2].mean()) < 0.2  # rate 0.9: about one channel in ten kept


def test_the_cnns_are_a_converted_plain_torch_convnet() -> None:
    from stnkit.convert import ConvertedModel
    from stnkit_cnn.nets import ConvNet

    info = DataInfo(ClassificationTask(10), (3, 32, 32), 1, 8, 8, output_size=10)
    config = STNSmallCNN.Config(channels=[8, 8], hidden=16)
    model = STNSmallCNN(config, info, 3)
    assert isinstance(model, ConvertedModel) and type(model.module) is ConvNet
    assert model.report.dropout == {
        "dropout_conv1": ["conv_dropout.0"],
        "dropout_conv2": ["conv_dropout.1"],
        "dropout_fc1": ["fc_dropout.0"],
    }
