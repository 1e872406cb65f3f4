"""Observers a recipe switches on (``observers:``) and exports through them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

import stnkit
from stnkit import hookimpl
from stnkit.cli import main
from stnkit.config import ComponentConfig
from stnkit.errors import RecipeError
from stnkit.observer import Observer
from stnkit.plugins import load_plugins
from tests.helpers import write_recipe


class Recorder(Observer):
    """Keeps what it saw in a class-level list, so the test can read it after the run."""

    name = "recorder"
    seen: ClassVar[list[tuple[str, Any]]] = []

    class Config(ComponentConfig):
        label: str = Field("x", description="tag stored with every event")
        every: int = Field(1, ge=1)

    @hookimpl
    def stnkit_run_start(self, run: Any) -> None:
        self.seen.append(("start", (self.config.label, run.path, self.base_dir)))

    @hookimpl
    def stnkit_step_end(self, run: Any, step: Any) -> None:
        if step.phase == "hyper":
            self.seen.append(("hyper", step.values["weight_decay"]))

    def close(self) -> None:
        self.seen.append(("close", None))


class _Plugin:
    @hookimpl
    def stnkit_register_observers(self, register: Any) -> None:
        register(Recorder)


def test_a_recipe_section_switches_an_observer_on_for_that_run(tmp_path: Path) -> None:
    plugins = load_plugins(extra=[("recorder-plugin", _Plugin())])
    Recorder.seen.clear()
    assert stnkit.run(write_recipe(tmp_path), plugins=plugins).status == "completed"
    assert Recorder.seen == [], "off unless the recipe names it"
    recipe = write_recipe(tmp_path, observers={"recorder": {"label": "a"}})
    result = stnkit.run(recipe, plugins=plugins)
    kinds = [kind for kind, _ in Recorder.seen]
    assert kinds[0] == "start" and kinds[-1] == "close" and kinds.count("close") == 1
    assert Recorder.seen[0][1] == ("a", result.path, Path.cwd())
    hyper = [value for kind, value in Recorder.seen if kind == "hyper"]
    assert hyper == pytest.approx(stnkit.open_run(result.path).values("weight_decay").tolist())


def test_observer_options_are_validated_with_the_recipe(tmp_path: Path) -> None:
    plugins = load_plugins(extra=[("recorder-plugin", _Plugin())])
    recipe = write_recipe(tmp_path, observers={"recorder": {"every": 0, "labl": "b"}, "recordr": None})
    with pytest.raises(RecipeError) as caught:
        stnkit.validate(recipe, plugins=plugins)
    message = str(caught.value)
    assert "observers.recorder.every: " in message and "observers.recorder.labl: unknown key" in message
    assert "observers.recordr: unknown observer 'recordr'; did you mean 'recorder'?" in message


def test_export_names_the_formats_it_knows(ridge_recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = stnkit.run(ridge_recipe)
    assert main(["export", str(result.path), "--format", "parquet", "-o", "x"]) == 2
    err = capsys.readouterr().err
    assert "unknown export format 'parquet'" in err and "csv, json, tensorboard" in err
    assert main(["export", str(result.path), "--format", "tensorboard"]) == 2
    assert "writes a folder" in capsys.readouterr().err
    assert main(["export", str(result.path), "a", "-o", "b"]) == 2
    assert "not both" in capsys.readouterr().err
