"""Bad data, bad values and edited recipes are refused before a run file exists; exit 2, one line each."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import stnkit
from stnkit.cli import main
from stnkit.errors import DataError, RecipeError
from stnkit.recipe import load_recipe
from tests.helpers import write_recipe


def _arrays(classes: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", 40), ("valid", 20), ("test", 20)):
        arrays[f"x_{split}"] = rng.normal(size=(n, 3)).astype(np.float32)
        arrays[f"y_{split}"] = rng.integers(0, 3, n) if classes else rng.normal(size=n).astype(np.float32)
    return arrays


def _with(key: str, change: Callable[[np.ndarray], np.ndarray], classes: bool = False) -> dict[str, Any]:
    arrays = _arrays(classes)
    arrays[key] = change(arrays[key].copy())
    return arrays


def _set_first(value: Any) -> Callable[[np.ndarray], np.ndarray]:
    def change(array: np.ndarray) -> np.ndarray:
        array.flat[0] = value
        return array

    return change


BAD_DATA: dict[str, tuple[dict[str, Any] | bytes, str]] = {
    "nan-train-target": (_with("y_train", _set_first(np.nan)), "y_train must be finite numbers"),
    "inf-train-target": (_with("y_train", _set_first(np.inf)), "y_train must be finite numbers"),
    # a NaN test target would silently drop the test metrics of a run that exits 0
    "nan-test-target": (_with("y_test", _set_first(np.nan)), "y_test must be finite numbers"),
    "nan-valid-feature": (_with("x_valid", _set_first(np.nan)), "x_valid must be finite numbers"),
    "complex-features": (
        _with("x_train", lambda x: x.astype(np.complex64) + 1j),
        "x_train must hold real numbers, not complex ones",
    ),
    "string-labels": (
        {
            **_arrays(),
            **{f"y_{s}": np.array(["cat"] * n) for s, n in (("train", 40), ("valid", 20), ("test", 20))},
        },
        "y_train must hold numbers, not text",
    ),
    "bool-targets": (
        {
            **_arrays(),
            **{f"y_{s}": np.zeros(n, dtype=bool) for s, n in (("train", 40), ("valid", 20), ("test", 20))},
        },
        "y_train must hold numbers, not booleans",
    ),
    "mismatched-lengths": (_with("y_valid", lambda y: y[:5]), "x_valid has 20 rows but y_valid has 5"),
    "huge-label": (
        _with("y_train", _set_first(10**14), classes=True),
        "y_train: label 1e+14 is out of range",
    ),
    "negative-label": (
        _with("y_valid", _set_first(-1), classes=True),
        "y_valid: class labels must be non-negative",
    ),
    "test-label-beyond-classes": (
        _with("y_test", _set_first(7), classes=True),
        "y_test: label 7 is out of range (the data set has 3 classes)",
    ),
    "empty-file": (b"", "not a readable .npz file (the file is empty)"),
    "text-file": (b"x_train,y_train\n1,2\n", "not a readable .npz file (not a zip archive)"),
}


def _write_data(path: Path, content: dict[str, Any] | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)


@pytest.mark.parametrize("case", sorted(BAD_DATA))
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_data_is_a_data_error_before_any_run_file(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, message = BAD_DATA[case]
    recipe = write_recipe(tmp_path, data__path="bad.npz")
    _write_data(tmp_path / "bad.npz", content)
    args = [command, str(recipe)] + (["--quiet", "--out", str(tmp_path / "runs")] if command == "run" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Aborted" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_truncated_npz_member_is_a_data_error(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **_arrays())
    good = buffer.getvalue()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    recipe = write_recipe(tmp_path, data__path="cut.npz")
    with pytest.raises(DataError, match="not a readable .npz file"):
        stnkit.validate(recipe)


def test_good_classification_data_still_runs(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", **_arrays(classes=True))
    recipe = write_recipe(tmp_path, data__path="c.npz", train__epochs=1)
    assert stnkit.run(recipe, store=False).status == "completed"


# -- values that pass as something else ---------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=true", "train.epochs: must be a number, not true"),
        ("train.epochs=false", "train.epochs: must be a number, not false"),
        ("train.epochs=2.5", "train.epochs: Input should be a valid integer"),
        ("data.batch_size=true", "data.batch_size: must be a number, not true"),
        ("train.optimizer.lr=true", "train.optimizer.lr: must be a number, not true"),
        ("hyperparameters.weight_decay.init=true", "hyperparameters.weight_decay.init: must be a number"),
        ("train.epochs=10000000000000", "train.epochs: Input should be less than or equal to 1000000000"),
        ("train.max_steps=10000000000000", "train.max_steps: Input should be less than or equal to"),
        ("name=" + "a" * 300, "name: is 300 characters long; at most 200 fit in a run file's name"),
    ],
)
def test_values_that_would_pass_as_something_else_are_recipe_errors(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(tmp_path)
    for command in (["validate", str(recipe)], ["run", str(recipe), "-q", "--out", str(tmp_path / "runs")]):
        assert main([*command, "--set", override]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_planned_steps_beyond_the_bound_are_refused_before_anything_is_sized(tmp_path: Path) -> None:
    # 2 steps per epoch: each bound holds alone, their product does not
    recipe = write_recipe(tmp_path, train__epochs=10**9)
    with pytest.raises(RecipeError, match="train.epochs: 1000000000 epochs of 2 steps make 2,000,000,000"):
        stnkit.validate(recipe)


# -- the Python API -----------------------------------------------------------------------------


def test_an_edited_recipe_is_validated_at_the_assignment(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path))
    with pytest.raises(RecipeError, match="epochs: Input should be greater than or equal to 1"):
        recipe.train.epochs = 0
    with pytest.raises(RecipeError, match="name: must start with a letter or digit"):
        recipe.name = "bad name with spaces"
    with pytest.raises(RecipeError, match="must be a number, not true"):
        recipe.train.epochs = True
    assert recipe.train.epochs == 4 and recipe.name == "ridge"
    recipe.train.epochs = 1  # a valid edit is kept
    assert stnkit.run(recipe, store=False).end.step == 2


def test_run_validates_a_recipe_edited_where_no_assignment_sees_it(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path))
    recipe.observers["progress-bar"] = 5  # type: ignore[assignment]
    with pytest.raises(RecipeError, match="observers.progress-bar"):
        stnkit.run(recipe, out_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_data_info_takes_its_output_size_from_the_task() -> None:
    from stnkit.data import DataInfo
    from stnkit.task import ClassificationTask, RegressionTask

    assert DataInfo(ClassificationTask(10), (5,), 1, 8, 8).output_size == 10
    assert DataInfo(RegressionTask(), (5,), 1, 8, 8).output_size == 1
    assert DataInfo(RegressionTask(), (5,), 1, 8, 8, output_size=3).output_size == 3
    with pytest.raises(ValueError, match="output_size 1 does not match the task's 10 classes"):
        DataInfo(ClassificationTask(10), (5,), 1, 8, 8, output_size=1)


def test_a_model_without_best_response_layers_has_nothing_to_tune(tmp_path: Path) -> None:
    from stnkit import hookimpl
    from stnkit.model import StnModel
    from stnkit.plugins import load_plugins
    from stnkit_tabular import STNMLP

    class PlainMLP(STNMLP):
        """The stn-mlp's options and hyperparameters, but plain torch layers only."""

        name = "test-plain-mlp"

        def __init__(self, config: Any, data: Any, n_hyper: int) -> None:
            super().__init__(config, data, 0)

    class _Plugin:
        @hookimpl
        def stnkit_register_models(self, register: Any) -> None:
            register(PlainMLP)

    assert issubclass(PlainMLP, StnModel)
    plugins = load_plugins(extra=[("plain-model", _Plugin())])
    recipe = write_recipe(tmp_path, model__name="test-plain-mlp")
    with pytest.raises(RecipeError, match="model: model 'test-plain-mlp' has no best-response layers"):
        stnkit.run(recipe, plugins=plugins, out_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    # a fixed response trains it as the plain network it is
    fixed = write_recipe(tmp_path, model__name="test-plain-mlp", response={"name": "fixed"}, train__epochs=1)
    assert stnkit.run(fixed, plugins=plugins, store=False).status == "completed"


def test_load_recipe_names_only_functions_that_exist() -> None:
    import re

    doc = stnkit.load_recipe.__doc__ or ""
    named = re.findall(r"stnkit\.(\w+)", doc)
    assert named, doc
    for name in named:
        assert hasattr(stnkit, name), f"load_recipe's docstring names stnkit.{name}"


def test_colour_jitter_refuses_normalised_images() -> None:
    from stnkit.data import DataInfo
    from stnkit.task import ClassificationTask
    from stnkit_augment.color import Brightness, Contrast, Hue, Saturation

    info = DataInfo(ClassificationTask(10), (3, 4, 4), 1, 8, 8)
    generator = torch.Generator().manual_seed(0)
    normalised = torch.randn(4, 3, 4, 4, generator=generator)
    pixels = torch.rand(4, 3, 4, 4, generator=generator)
    for cls in (Brightness, Contrast, Saturation, Hue):
        hp = {cls.name: torch.full((4,), 0.2)}
        augmentation = cls(cls.Config(), info)
        with pytest.raises(DataError, match=rf"augmentation '{cls.name}' needs pixel values in \[0, 1\]"):
            augmentation(normalised, hp)  # type: ignore[arg-type]
        fresh = cls(cls.Config(), info)
        out = fresh(pixels, hp)  # type: ignore[arg-type]
        assert out.shape == pixels.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
