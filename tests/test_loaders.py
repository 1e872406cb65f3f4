"""The ``loaders`` data component: a user's DataLoaders, named by a recipe, as a data set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import stnkit
from stnkit.data import BuildContext
from stnkit.errors import DataError, RecipeError, UsageError
from stnkit.loaders import LoaderData
from stnkit.task import ClassificationTask, RegressionTask


def make(**options: Any) -> LoaderData:
    return LoaderData(LoaderData.Config.model_validate(options), BuildContext())


def recipe(tmp_path: Path, **data: Any) -> stnkit.Recipe:
    return stnkit.Recipe.model_validate(
        {
            "name": "own",
            "data": {"name": "loaders", "target": "tests.own_data:blobs", **data},
            "model": {"name": "stn-mlp", "hidden_sizes": [8]},
            "hyperparameters": {"dropout": {"kind": "unit", "init": 0.1}},
            "train": {"epochs": 2, "warmup_epochs": 1, "optimizer": {"name": "adam", "lr": 0.01}},
            "store": {"dir": str(tmp_path)},
        }
    )


def orders(data: LoaderData, seed: int) -> list[list[float]]:
    g = torch.Generator().manual_seed(seed)
    return [[float(b.inputs[0, 0]) for b in data.train_batches(epoch, g)] for epoch in (1, 2)]


def test_a_recipe_trains_on_the_users_loaders(tmp_path: Path) -> None:
    result = stnkit.run(recipe(tmp_path))
    assert result.status == "completed"
    record = stnkit.open_run(result.path)
    assert set(record.test) >= {"loss", "accuracy"}


def test_the_training_order_follows_the_runs_generator_not_torchs_global_stream() -> None:
    data = make(target="tests.own_data:blobs")
    torch.manual_seed(1)
    first = orders(data, seed=5)
    torch.manual_seed(2)  # another global state: a shuffling DataLoader would change its order
    assert orders(data, seed=5) == first
    assert first[0] != first[1]  # each epoch is shuffled anew
    assert orders(data, seed=6) != first
    # iterating the data set leaves the global stream (which dropout draws from) alone
    state = torch.get_rng_state()
    list(data.train_batches(1, torch.Generator().manual_seed(0)))
    list(data.valid_batches())
    assert torch.equal(torch.get_rng_state(), state)


def test_shuffle_false_keeps_the_data_sets_order() -> None:
    data = make(target="tests.own_data:blobs", args={"shuffle": False})
    expected = data.loaders.train.dataset.tensors[0][::16, 0].tolist()  # type: ignore[attr-defined]
    assert orders(data, seed=1) == [expected, expected]


def test_the_task_and_shapes_are_inferred() -> None:
    data = make(target="tests.own_data:blobs")
    assert isinstance(data.info.task, ClassificationTask) and data.info.task.num_classes == 3
    assert data.info.input_shape == (8,) and data.info.steps_per_epoch == 4 and data.info.n_test == 32
    regression = make(target="tests.own_data:regression")
    assert isinstance(regression.info.task, RegressionTask)


def test_dict_batches_with_a_key_mapping() -> None:
    data = make(target="tests.own_data:blob_dicts", inputs="pixels", targets="label")
    batch = next(data.valid_batches())
    assert batch.inputs.shape == (16, 8) and batch.targets.dtype == torch.long
    with pytest.raises(DataError, match="dict with keys 'pixels', 'label'.*set inputs: and targets:"):
        make(target="tests.own_data:blob_dicts")


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("tests.own_data:triples", r"yielded a list of 3 \(a float32 tensor of shape \(5, 4\);"),
        ("tests.own_data:empty", "training DataLoader yields no batch: its data set is empty"),
        ("tests.own_data:one_loader", "returned a DataLoader; expected"),
    ],
)
def test_unexpected_loaders_are_described(target: str, fragment: str) -> None:
    with pytest.raises(DataError, match=fragment):
        make(target=target)


def test_a_target_type_that_does_not_fit_the_task() -> None:
    with pytest.raises(DataError, match="float32 tensor.*task classification needs integer class indices"):
        make(target="tests.own_data:float_labels", task="classification")
    with pytest.raises(DataError, match="int64 tensor.*task regression needs float targets"):
        make(target="tests.own_data:blobs", task="regression")
    with pytest.raises(DataError, match="out of range"):
        make(target="tests.own_data:blobs", num_classes=2)


def test_triples_work_with_positions() -> None:
    data = make(target="tests.own_data:triples", inputs=0, targets=1)
    assert next(data.valid_batches()).targets.shape == (5,)


def test_a_bad_target_is_a_recipe_problem_at_its_location(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"data\.target: cannot import 'tests\.nowhere'"):
        stnkit.validate(recipe(tmp_path, target="tests.nowhere:blobs"))
    with pytest.raises(RecipeError, match=r"data\.target: 'tests\.own_data:nothing'"):
        stnkit.validate(recipe(tmp_path, target="tests.own_data:nothing"))


def test_a_recipe_names_its_own_loss(tmp_path: Path) -> None:
    result = stnkit.run(recipe(tmp_path, loss="tests.own_data:smoothed_cross_entropy"))
    assert result.status == "completed"
    record = stnkit.open_run(result.path)
    assert set(record.test) >= {"loss", "accuracy"}


def test_a_recipe_loss_that_is_not_a_scalar_says_so(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match=r"per_example_cross_entropy returned a float32 tensor of shape \(16,\)"
    ):
        stnkit.run(recipe(tmp_path, loss="tests.own_data:per_example_cross_entropy"))
    assert not list(tmp_path.glob("*.h5"))  # found before the run file exists


def test_a_target_in_the_working_directory_is_found_by_the_stnkit_script(tmp_path: Path) -> None:
    # the console script's sys.path holds its bin folder, not the working directory; a project's
    # own module must be found from the project's root all the same, as with python -m
    (tmp_path / "myproj_factories.py").write_text("def make():\n    return 42\n")
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
        "from stnkit.imports import import_target\n"
        "print(import_target('myproj_factories:make')())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
