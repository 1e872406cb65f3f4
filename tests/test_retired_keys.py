"""Removed and moved recipe keys are refused with what replaces them, never silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from stnkit.cli import main
from stnkit.errors import RecipeError
from stnkit.recipe import load_recipe
from stnkit.retired import RETIRED_KEYS, RETIRED_VALUES
from tests.helpers import write_recipe

CASES = [
    ("train.warmup_steps=3", "train.warmup_steps", "was removed: use train.warmup_epochs"),
    ("store.checkpoint_minutes=5", "store.checkpoint_minutes", "was removed: use store.checkpoint_steps"),
    ("train.log_every=3", "train.log_every", "moved to run.log_every"),
    ("store.flush_seconds=1", "store.flush_seconds", "moved to run.flush_seconds"),
    ("train.distributed.timeout=60", "train.distributed.timeout", "moved to run.distributed_timeout"),
    ("response.follow_lr_decay=false", "response.follow_lr_decay", "was removed: the response optimizer"),
    ("response.hyper_init_std=0", "response.hyper_init_std", "was removed: V starts"),
    ("response.linearize_method=jvp", "response.linearize_method", "was removed: delta-stn uses"),
    ("response.hypernet_input=auto", "response.hypernet_input", "'auto' was removed: use 'centered'"),
    ("response.hypernet_input=normalized", "response.hypernet_input", "'normalized' was removed"),
    ("data.keep_classes=[a, b]", "data.keep_classes", "was removed: benchmarks/derived_data.py"),
    ("data.train_label_noise=0.1", "data.train_label_noise", "was removed: benchmarks/derived_data.py"),
    ("data.label_noise_seed=1", "data.label_noise_seed", "was removed: benchmarks/derived_data.py"),
]


def test_every_retired_key_and_value_is_tested() -> None:
    tested = {key for _, key, _ in CASES}
    assert tested == set(RETIRED_KEYS) | {key for key, _ in RETIRED_VALUES}


@pytest.mark.parametrize(("override", "key", "message"), CASES, ids=[case[1] for case in CASES])
def test_a_retired_key_names_its_replacement(tmp_path: Path, override: str, key: str, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(write_recipe(tmp_path), [override])
    assert [location for location, _ in caught.value.problems] == [key]
    text = str(caught.value)
    assert f"{key}: {message}" in text and "(from --set)" in text


def test_a_retired_key_in_the_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_recipe(tmp_path, store__flush_seconds=1.0)
    assert main(["run", str(path), "--quiet", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "store.flush_seconds: moved to run.flush_seconds" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_the_moved_settings_take_effect_in_their_new_place(tmp_path: Path) -> None:
    recipe = load_recipe(
        write_recipe(tmp_path), ["run.log_every=3", "run.flush_seconds=1", "run.distributed_timeout=60"]
    )
    assert (recipe.run.log_every, recipe.run.flush_seconds, recipe.run.distributed_timeout) == (3, 1.0, 60.0)
