"""Run files and checkpoints carry the version of their layout; another version is refused with
one message naming both, exit 2, and the file is left as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import stnkit
from stnkit.cli import main
from stnkit.errors import RunFileError
from stnkit.store.checkpoint import CHECKPOINT_VERSION, deserialize, serialize, write_checkpoint
from stnkit.store.schema import SCHEMA_VERSION
from tests.helpers import write_recipe


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interrupted ridge run with checkpoints (a completed one cannot be resumed)."""
    folder = tmp_path_factory.mktemp("versions")
    result = stnkit.run(write_recipe(folder, train__epochs=3))
    assert result.path is not None
    with h5py.File(result.path, "r+") as f:
        f.attrs["status"] = "interrupted"
    return result.path


def _copy(source: Path, folder: Path) -> Path:
    target = folder / "case" / "run.h5"
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    return target


@pytest.mark.parametrize("version", [SCHEMA_VERSION - 1, 1])
def test_a_run_file_of_an_older_layout_is_refused_naming_both_versions(
    version: int, stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(stopped, tmp_path)
    with h5py.File(run, "r+") as f:
        f.attrs["schema_version"] = version
    before = run.read_bytes()
    for args in (["show", str(run)], ["run", "-q", "--resume", str(run)]):
        assert main(args) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"layout version {version};" in line and f"writes version {SCHEMA_VERSION}" in line
    with pytest.raises(RunFileError, match=f"layout version {version};"):
        stnkit.open_run(run)
    assert run.read_bytes() == before


def test_a_checkpoint_of_another_layout_is_refused_on_resume_naming_both_versions(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(stopped, tmp_path)
    with h5py.File(run, "r+") as f:
        group = f["checkpoints"]
        slot = int(group["latest"][()])
        length = int(group["length"][slot])
        state = deserialize(group[f"slot{slot}"][:length].tobytes(), str(run))
        assert state["version"] == CHECKPOINT_VERSION
        state["version"] = CHECKPOINT_VERSION - 1
        blob = serialize(state)
        write_checkpoint(f, blob, int(group["step"][slot]))
        assert (
            group["sha256"][int(group["latest"][()])] == hashlib.sha256(blob.tobytes()).hexdigest().encode()
        )
    before = run.read_bytes()
    assert main(["run", "-q", "--resume", str(run)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"layout version {CHECKPOINT_VERSION - 1}" in line and f"version {CHECKPOINT_VERSION} only" in line
    assert run.read_bytes() == before
    assert stnkit.open_run(run).status == "interrupted"


def test_the_current_versions_resume(stopped: Path, tmp_path: Path) -> None:
    run = _copy(stopped, tmp_path)
    assert main(["run", "-q", "--resume", str(run)]) == 0
    assert stnkit.open_run(run).status == "completed"
    assert np.isfinite(stnkit.open_run(run).epochs["val_loss"]).all()


@pytest.mark.parametrize("offset", [-1, 1])
def test_a_study_manifest_of_another_version_is_refused_naming_both(tmp_path: Path, offset: int) -> None:
    from stnkit.tune.study import FORMAT, MANIFEST, VERSION, StudyFolderError, read_manifest

    folder = tmp_path / "study"
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"format": FORMAT, "version": VERSION + offset}))
    with pytest.raises(StudyFolderError) as caught:
        read_manifest(folder)
    assert f"study manifest version {VERSION + offset}" in str(caught.value)
    assert f"reads version {VERSION} only" in str(caught.value)
