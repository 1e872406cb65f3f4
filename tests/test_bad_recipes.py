"""Every malformed recipe in ``tests/bad_recipes/`` is refused cleanly, and so is anything a fuzzer makes.

Each file states what the user must read, one ``# expect:`` line per problem (``<file>`` and ``<dir>``
stand for the recipe's path and folder). The promise checked for every file, under both ``stnkit run``
and ``stnkit validate`` (which opens the data as a run does): exit code 2, exactly the expected lines on
standard error and nothing else, no traceback, no run file.
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stnkit.cli import main
from tests.helpers import write_recipe

CORPUS = Path(__file__).parent / "bad_recipes"
BAD_RECIPES = sorted(CORPUS.glob("*.yaml"))


def expectations(recipe: Path) -> list[str]:
    """The ``# expect:`` lines of a corpus file, with placeholders filled in."""
    header = recipe.read_bytes().decode("utf-8", errors="replace").splitlines()
    return [
        line.removeprefix("# expect: ").replace("<file>", str(recipe)).replace("<dir>", str(recipe.parent))
        for line in header
        if line.startswith("# expect: ")
    ]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_the_corpus_is_large_and_every_file_says_what_to_expect() -> None:
    assert len(BAD_RECIPES) >= 40
    for recipe in BAD_RECIPES:
        assert expectations(recipe), f"{recipe.name} has no '# expect:' line"


@pytest.mark.parametrize("recipe", BAD_RECIPES, ids=[path.stem for path in BAD_RECIPES])
def test_a_bad_recipe_exits_2_with_one_line_per_problem_and_no_run_file(
    recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = expectations(recipe)
    commands = [["run", str(recipe), "--quiet", "--out", str(tmp_path / "runs")], ["validate", str(recipe)]]
    for command in commands:
        assert main(command) == 2, f"stnkit {command[0]} {recipe.name}"
        captured = capsys.readouterr()
        lines = error_lines(captured.err)
        assert "Traceback" not in captured.err + captured.out
        assert len(lines) == len(expected), f"stnkit {command[0]}: {lines}"
        for want in expected:
            assert any(want in line for line in lines), f"{want!r} not in {lines}"
        assert not captured.out.strip()
    assert not list(tmp_path.rglob("*")), "a refused recipe left files behind"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.epoch=3"], "train.epoch: unknown key; did you mean 'epochs'? (from --set)"),
        (["optimiser.lr=0.1"], "optimiser: unknown key"),
        (["data.batch_size=[1, 2"], "data.batch_size: Input should be a valid integer"),
        (["train.epochs"], "--set: 'train.epochs' is not of the form dotted.key=value"),
        (["hyperparameters.weight_decay.init=-1"], "init (-1.0) must be above lower (0.0) (from --set)"),
    ],
)
def test_bad_set_overrides_exit_2(
    tmp_path: Path, overrides: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(tmp_path)
    args = ["run", str(recipe), "--quiet"]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert expected in captured.err and "Traceback" not in captured.err
    assert len(error_lines(captured.err)) == 1
    assert not (tmp_path / "runs").exists()


def test_a_missing_recipe_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nowhere.yaml")]) == 2
    err = capsys.readouterr().err
    assert "nowhere.yaml" in err and len(error_lines(err)) == 1


def test_an_unwritable_output_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.name != "posix":
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the permissions test needs POSIX permission bits, and CI must run it")
        pytest.skip("needs POSIX permission bits")
    if os.geteuid() == 0:  # root writes anywhere: the same command as an unprivileged user
        _unwritable_output_folder_as_nobody(tmp_path)
        return
    recipe = write_recipe(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(["run", str(recipe), "--out", str(locked / "runs")]) == 2
    finally:
        locked.chmod(stat.S_IRWXU)
    err = capsys.readouterr().err
    assert f"cannot create the run folder {locked / 'runs'}: Permission denied" in err
    assert len(error_lines(err)) == 1
    assert not list(locked.rglob("*"))


def _unwritable_output_folder_as_nobody(tmp_path: Path) -> None:
    """``stnkit run --out`` into a folder user ``nobody`` may read but not write, in a forked
    child that has dropped root for ``nobody``. Forked rather than started afresh, because the
    interpreter itself may lie where ``nobody`` cannot read (under /root); the same run made
    first as root loads every module the child needs."""
    import io
    import multiprocessing
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    # a folder every user can reach (pytest's own temporary folders are root's alone)
    shared = Path(tempfile.mkdtemp(prefix="stnkit-nobody-"))
    try:
        shared.chmod(0o755)
        recipe = write_recipe(shared)
        assert main(["run", str(recipe), "--out", str(shared / "as-root"), "--quiet"]) == 0
        for path in shared.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        locked = shared / "locked"
        locked.mkdir(mode=0o755)
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)

        def as_nobody() -> None:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            assert os.geteuid() == nobody.pw_uid
            os.chdir(shared)
            err = io.StringIO()
            import sys

            sys.stderr = err
            code = main(["run", str(recipe), "--out", str(locked / "runs")])
            send.send((code, err.getvalue()))

        child = context.Process(target=as_nobody)
        child.start()
        child.join(300)
        assert child.exitcode == 0 and receive.poll(), "the unprivileged child failed"
        code, err = receive.recv()
        assert code == 2, err
        assert f"cannot create the run folder {locked / 'runs'}: Permission denied" in err, err
        assert len(error_lines(err)) == 1, err
        assert not list(locked.rglob("*"))
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_an_output_path_that_is_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Works as root too, unlike permission bits: a folder cannot be made where a file stands.
    recipe = write_recipe(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    assert main(["run", str(recipe), "--out", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert "blocker" in err and len(error_lines(err)) == 1
    assert blocker.read_text() == "not a folder"


# --- fuzz: whatever a recipe dictionary holds, validation answers with exit 0 or 2, never a traceback ---

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a nested recipe dictionary (lists indexed by position)."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


@st.composite
def mutated_recipes(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """The valid base recipe with a few of its values replaced, keys deleted or keys added."""
    recipe = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(recipe)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = recipe
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(ODD_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(ODD_VALUES)
    return recipe


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("fuzz")
    recipe = write_recipe(folder)
    return folder, yaml.safe_load(recipe.read_text())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_recipes_validate_or_exit_2_without_a_traceback(
    data: st.DataObject, fuzz_base: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, base = fuzz_base
    recipe = data.draw(mutated_recipes(base))
    path = folder / "fuzzed.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    assert "Traceback" not in captured.err
    if code == 2:
        lines = error_lines(captured.err)
        assert lines and not captured.out.strip()
    else:
        assert "valid" in captured.out
    assert not (folder / "runs").exists()
