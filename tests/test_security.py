"""A crafted run file cannot run code when it is shown, listed, compared, plotted, exported or resumed.

Run files travel: a colleague's results, a file from a bug report. Two places in one could carry code:
the checkpoint blobs (torch's pickle-based format) and the stored recipe (YAML). Each test first proves
its payload is live, by running it through the unsafe loader, and then that stnkit never triggers it.
"""

from __future__ import annotations

import builtins
import hashlib
import io
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

import stnkit
from stnkit.cli import main
from tests.helpers import write_recipe
from tests.test_resume import RIDGE, SignalAt


class Payload:
    """Unpickling this object runs ``exec``, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture
def interrupted_run(tmp_path: Path) -> Path:
    """A real run stopped at weight step 5, with a checkpoint to resume from."""
    result = stnkit.run(write_recipe(tmp_path / "run", **RIDGE), observers=[SignalAt(5)])
    assert result.status == "interrupted" and result.path is not None
    return result.path


def replace_latest_checkpoint(path: Path, blob: bytes) -> None:
    """Swap the newest checkpoint for ``blob`` with a matching hash, as an attacker would."""
    with h5py.File(path, "r+") as f:
        group = f["checkpoints"]
        slot = int(group["latest"][()])
        group[f"slot{slot}"].resize((len(blob),))
        group[f"slot{slot}"][:] = np.frombuffer(blob, dtype=np.uint8)
        group["length"][slot] = len(blob)
        group["sha256"][slot] = hashlib.sha256(blob).hexdigest().encode()


def every_reading_command(path: Path, out: Path) -> list[list[str]]:
    return [
        ["show", str(path)],
        ["show", str(path), "--json"],
        ["ls", str(path.parent)],
        ["compare", str(path), str(path)],
        ["plot", str(path), "-o", str(out / "plot.png")],
        ["export", str(path), "--format", "csv", "-o", str(out / "csv")],
        ["export", str(path), "--format", "json", "-o", str(out / "run.json")],
        ["run", "--resume", str(path), "--quiet"],
        ["replay", str(path), "--quiet", "--out", str(out / "replays")],
    ]


def test_a_pickled_payload_in_a_checkpoint_never_runs(
    interrupted_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"step": Payload(marker)}, buffer)
    blob = buffer.getvalue()
    torch.load(io.BytesIO(blob), weights_only=False)  # the unsafe loader runs it: the payload is live
    assert marker.exists()
    marker.unlink()

    replace_latest_checkpoint(interrupted_run, blob)
    for command in every_reading_command(interrupted_run, tmp_path):
        code = main(command)
        assert not marker.exists(), f"stnkit {' '.join(command)} ran the payload"
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if command[:2] == ["run", "--resume"]:
            assert code == 2 and "checkpoint" in err and len(err.strip().splitlines()) == 1
    assert stnkit.open_run(interrupted_run).status == "interrupted"  # the refused resume changed nothing


def test_a_yaml_tag_in_the_stored_recipe_never_runs(
    interrupted_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = f"name: !!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w').close()\"]\n"
    yaml.unsafe_load(evil)  # the unsafe loader runs it: the payload is live
    assert marker.exists()
    marker.unlink()

    with h5py.File(interrupted_run, "r+") as f:
        f.attrs["recipe"] = evil
    for command in every_reading_command(interrupted_run, tmp_path):
        code = main(command)
        assert not marker.exists(), f"stnkit {' '.join(command)} ran the payload"
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err
        if command[0] in ("run", "replay"):  # these need the recipe: refused, with the reason
            assert code == 2 and "not plain YAML" in err
