"""Recipe validation: every problem reported at its dotted location, overrides, cross-checks."""

from __future__ import annotations

from pathlib import Path

import pytest

import stnkit
from stnkit.errors import RecipeError, UsageError
from stnkit.recipe import apply_overrides
from tests.helpers import write_recipe


def problems(path: Path, *overrides: str) -> dict[str, str]:
    with pytest.raises(RecipeError) as info:
        stnkit.validate(path, overrides)
    return dict(info.value.problems)


def test_valid_recipe_validates(ridge_recipe: Path) -> None:
    recipe = stnkit.validate(ridge_recipe)
    assert recipe.name == "ridge" and recipe.base_dir == ridge_recipe.parent


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, train__epoch=3)
    found = problems(path)
    assert found["train.epoch"] == "unknown key; did you mean 'epochs'?"


def test_component_options_are_validated_at_their_location(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, model={"name": "stn-mlp", "hidden_size": [3], "activation": "swish"})
    found = problems(path)
    assert found["model.hidden_size"] == "unknown key; did you mean 'hidden_sizes'?"
    assert "model.activation" in found and "relu" in found["model.activation"]


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path,
        name="bad name!",
        data={"name": "tabular", "path": "missing.npz", "batch_size": 0},
        train__optimizer={"name": "sgd", "lr": -1},
    )
    found = problems(path)
    assert set(found) >= {"name", "train.optimizer.lr"}
    # stage 2 needs stage 1 to pass; fix the structure and the data problems appear
    path = write_recipe(tmp_path, data={"name": "tabular", "path": "missing.npz", "batch_size": 0})
    found = problems(path)
    assert "file not found" in found["data.path"] and "missing.npz" in found["data.path"]
    assert "greater than or equal to 1" in found["data.batch_size"]


def test_unknown_components_name_the_alternatives(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, model={"name": "stn-mpl"}, response={"name": "stm"})
    found = problems(path)
    assert "did you mean 'stn-mlp'" in found["model.name"]
    assert "did you mean 'stn'" in found["response.name"]


@pytest.mark.parametrize(
    ("declaration", "location", "fragment"),
    [
        ({"kind": "unit", "init": 1.5}, "hyperparameters.dropout.init", "less than 1"),
        ({"kind": "interval", "low": 1, "high": 0, "init": 0.5}, "hyperparameters.dropout", "below high"),
        ({"kind": "unti", "init": 0.5}, "hyperparameters.dropout.kind", "did you mean 'unit'"),
        ({"init": 0.5}, "hyperparameters.dropout.kind", "required key is missing"),
        ({"kind": "positive", "init": 0.5}, "hyperparameters.dropout", "accepts only [0, 1]"),
        (
            {"kind": "unit", "init": 0.5, "per_exmple": False},
            "hyperparameters.dropout.per_exmple",
            "per_example",
        ),
    ],
)
def test_hyperparameter_declarations(tmp_path: Path, declaration: dict, location: str, fragment: str) -> None:
    path = write_recipe(tmp_path, model={"name": "stn-mlp", "hidden_sizes": [4]})
    found = problems(path, *[f"hyperparameters.dropout.{k}={v}" for k, v in declaration.items()])
    if "kind" not in declaration:
        found = problems(write_recipe(tmp_path, hyperparameters={"dropout": declaration}))
    assert location in found, found
    assert fragment in found[location]


def test_unconsumed_hyperparameter_is_an_error(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, hyperparameters={"dropuot": {"kind": "unit", "init": 0.1}})
    found = problems(path)
    assert "no component consumes 'dropuot'" in found["hyperparameters.dropuot"]
    assert "dropout, weight_decay" in found["hyperparameters.dropuot"]


def test_stn_needs_a_tuned_hyperparameter(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path, hyperparameters={"weight_decay": {"kind": "positive", "init": 0.1, "tune": False}}
    )
    assert "none is declared" in problems(path)["hyperparameters"]
    stnkit.validate(path, ["response.name=fixed"])  # plain training needs none


def test_overrides_apply_and_are_marked(ridge_recipe: Path) -> None:
    recipe = stnkit.validate(ridge_recipe, ["train.epochs=7", "model.hidden_sizes=[3, 2]"])
    assert recipe.train.epochs == 7 and recipe.model.options()["hidden_sizes"] == [3, 2]
    found = problems(ridge_recipe, "train.epohcs=3")
    assert found["train.epohcs"] == "unknown key; did you mean 'epochs'? (from --set)"


def test_override_syntax_errors() -> None:
    with pytest.raises(RecipeError) as info:
        apply_overrides({"train": {"epochs": 1}}, ["train.epochs", "train.epochs.x=1"])
    found = dict(info.value.problems)
    assert "not of the form" in found["--set"]
    assert "is a value, not a section" in found["train.epochs.x"]


def test_yaml_errors_give_the_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain: {epochs: 3\n")
    with pytest.raises(RecipeError) as info:
        stnkit.load_recipe(path)
    ((location, message),) = info.value.problems
    assert location.startswith(f"{path}:") and "invalid YAML" in message


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(RecipeError):
        stnkit.load_recipe(path)
    assert not Path("pwned").exists()


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="recipe file not found"):
        stnkit.load_recipe(tmp_path / "nope.yaml")


def test_effective_recipe_round_trips(ridge_recipe: Path) -> None:
    recipe = stnkit.load_recipe(ridge_recipe, ["train.epochs=9"])
    again = tmp = ridge_recipe.parent / "again.yaml"
    tmp.write_text(recipe.to_yaml())
    reloaded = stnkit.load_recipe(again)
    assert reloaded.model_dump() == recipe.model_dump()
