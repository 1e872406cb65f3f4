"""``benchmarks/derived_data.py``: the probes' harder Fashion-MNIST (kept classes, noisy labels)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stnkit.data import BuildContext
from stnkit_cnn import FashionMNISTData, read_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "plugins" / "stnkit-cnn" / "tests" / "data" / "fashion-mnist"

_spec = importlib.util.spec_from_file_location("derived_data", ROOT / "benchmarks" / "derived_data.py")
assert _spec is not None and _spec.loader is not None
derived_data: Any = importlib.util.module_from_spec(_spec)
sys.modules["derived_data"] = derived_data
_spec.loader.exec_module(derived_data)


def _load(root: Path, valid_size: int, **options: Any) -> FashionMNISTData:
    config = FashionMNISTData.Config.model_validate({"root": root, "valid_size": valid_size, **options})
    return FashionMNISTData(config, BuildContext())


def test_kept_classes_keep_their_images_labels_and_validation_split(tmp_path: Path) -> None:
    keep = ["Shirt", "T-shirt/top", "Pullover", "Coat"]
    valid = derived_data.derive(SRC, tmp_path, keep=keep, valid_size=100)
    data = _load(tmp_path, valid, train_subset=40)
    x_file, y_file = read_fashion_mnist(SRC)["train"]
    cut = len(y_file) - 100
    wanted = [6, 0, 2, 4]
    rows = np.flatnonzero(np.isin(y_file[:cut], wanted))[:40]  # the first 40 kept training images
    x, y = data.splits["train"]
    assert torch.equal(x, torch.from_numpy(x_file[rows]))
    assert y.tolist() == y_file[rows].tolist()
    assert valid == int(np.isin(y_file[cut:], wanted).sum())
    assert set(data.splits["valid"][1].tolist()) <= set(wanted)
    assert set(data.splits["test"][1].tolist()) == set(wanted)


def test_label_noise_flips_that_fraction_of_the_training_subset_to_other_kept_classes(tmp_path: Path) -> None:
    clean_valid = derived_data.derive(SRC, tmp_path / "clean", valid_size=100)
    clean = _load(tmp_path / "clean", clean_valid, train_subset=200)
    noisy_valid = derived_data.derive(
        SRC, tmp_path / "noisy", label_noise=0.3, valid_size=100, train_subset=200
    )
    noisy = _load(tmp_path / "noisy", noisy_valid, train_subset=200)
    y_clean, y_noisy = clean.splits["train"][1], noisy.splits["train"][1]
    changed = y_clean != y_noisy
    assert int(changed.sum()) == 60  # exactly 30% of 200, each to a different class
    assert torch.equal(clean.splits["train"][0], noisy.splits["train"][0])
    assert len(set(y_noisy[changed].tolist())) > 5
    for split in ("valid", "test"):  # the labels the tuner and the test read stay clean
        assert torch.equal(clean.splits[split][1], noisy.splits[split][1])
    # the noise belongs to the data set: the same flips every time, others for another seed
    derived_data.derive(SRC, tmp_path / "again", label_noise=0.3, valid_size=100, train_subset=200)
    assert torch.equal(_load(tmp_path / "again", noisy_valid, train_subset=200).splits["train"][1], y_noisy)
    derived_data.derive(
        SRC, tmp_path / "other", label_noise=0.3, noise_seed=1, valid_size=100, train_subset=200
    )
    assert not torch.equal(
        _load(tmp_path / "other", noisy_valid, train_subset=200).splits["train"][1], y_noisy
    )


def test_label_noise_stays_within_the_kept_classes(tmp_path: Path) -> None:
    labels = np.array([6, 4, 6, 6, 4, 4, 6, 4], dtype=np.uint8)
    noisy = derived_data.corrupt_labels(labels, 0.5, [6, 4], seed=0)
    changed = noisy != labels
    assert int(changed.sum()) == 4
    # with two classes the only wrong label is the other one
    assert (noisy[changed] == 10 - labels[changed]).all()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--keep", "Shirt", "Shirts"], "--keep needs"),
        (["--keep", "Coat", "Coat"], "--keep needs"),
        (["--label-noise", "1.0"], "--label-noise must be in"),
    ],
)
def test_bad_options_are_one_message(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert derived_data.main([str(SRC), str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
