"""The probe benchmark's own machinery (``benchmarks/probes.py``): each outcome class recognised
from a process made to end that way, the damage it does to run files real, a few real probes
run end to end."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import stnkit
from tests.helpers import write_recipe

_spec = importlib.util.spec_from_file_location(
    "probes", Path(__file__).parents[1] / "benchmarks" / "probes.py"
)
assert _spec is not None and _spec.loader is not None
probes: Any = importlib.util.module_from_spec(_spec)
sys.modules["probes"] = probes
_spec.loader.exec_module(probes)


def python(code: str) -> Any:
    return lambda w, fx: [sys.executable, "-c", code]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("fixtures")
    run = stnkit.run(write_recipe(folder, train__epochs=2)).path
    assert run is not None
    return probes.Fixtures(run, folder / "no-study")


@pytest.mark.parametrize(
    ("code", "expect", "outcome", "label"),
    [
        ("pass", ("fine",), "fine", "fine"),
        (
            "import sys; print('error: bad input', file=sys.stderr); sys.exit(2)",
            ("clean:2",),
            "clean",
            "clean:2",
        ),
        ("raise ValueError('boom')", ("clean:2",), "traceback", "traceback"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", ("clean:2",), "crash", "crash"),
        ("import sys; sys.exit(2)", ("clean:2",), "unclear", "unclear"),  # no message
        ("import sys; print('Aborted!', file=sys.stderr); sys.exit(1)", ("clean:2",), "unclear", "unclear"),
        ("import sys; sys.exit(7)", ("clean:2",), "unclear", "unclear"),
        ("pass", ("clean:2",), "silent-wrong", "silent-wrong"),  # an error was due
    ],
)
def test_each_ending_is_classified(
    tmp_path: Path, fixtures: Any, code: str, expect: tuple[str, ...], outcome: str, label: str
) -> None:
    result = probes.run_probe(probes.Probe("t", expect, python(code)), fixtures, tmp_path)
    assert (result.outcome, result.label) == (outcome, label), result.detail
    assert result.matches == (label in expect)


def test_a_hang_is_killed_at_the_timeout_with_what_it_started(tmp_path: Path, fixtures: Any) -> None:
    # the probe sleeps, and so does a process it started: both must be gone when the probe returns
    code = (
        "import subprocess, sys, time\n"
        "sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open('sleeper.pid', 'w').write(str(sleeper.pid))\n"
        "time.sleep(60)"
    )
    result = probes.run_probe(probes.Probe("t", ("fine",), python(code), timeout=5), fixtures, tmp_path)
    assert result.outcome == "hang" and result.seconds < 30
    sleeper = int((tmp_path / "sleeper.pid").read_text())
    deadline = time.monotonic() + 10
    zombie = False
    while time.monotonic() < deadline and Path(f"/proc/{sleeper}").exists():
        with contextlib.suppress(FileNotFoundError):
            zombie = "State:\tZ" in Path(f"/proc/{sleeper}/status").read_text()
        if zombie:
            break  # killed, only not yet reaped by its new parent
        time.sleep(0.1)
    else:
        assert not Path(f"/proc/{sleeper}").exists()


def test_a_signal_before_any_handler_is_unclear_and_a_handled_one_clean(
    tmp_path: Path, fixtures: Any
) -> None:
    sleeper = python("import time; time.sleep(30)")
    term = probes.Probe("t", ("clean:130",), sleeper, timeout=20, signal_at=(signal.SIGTERM, 1.0))
    assert probes.run_probe(term, fixtures, tmp_path / "a").outcome == "unclear"
    handled = python(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('interrupted', file=sys.stderr), sys.exit(130)))\n"
        "time.sleep(30)"
    )
    probe = probes.Probe("t", ("clean:130",), handled, timeout=20, signal_at=(signal.SIGTERM, 1.0))
    result = probes.run_probe(probe, fixtures, tmp_path / "b")
    assert (result.label, result.matches) == ("clean:130", True)


def test_a_refused_run_that_leaves_a_file_is_a_leftover(tmp_path: Path, fixtures: Any) -> None:
    code = (
        "import os, sys; os.makedirs('out'); open('out/x.h5', 'w').close(); "
        "print('error: bad data', file=sys.stderr); sys.exit(2)"
    )
    probe = probes.Probe("t", ("clean:2",), python(code), probes._no_run_file)
    result = probes.run_probe(probe, fixtures, tmp_path)
    assert result.outcome == "leftover" and result.detail == "exit 2; out/x.h5"


def test_the_damage_is_real(tmp_path: Path, fixtures: Any) -> None:
    size = fixtures.run.stat().st_size
    for kind, expected in [
        ("truncated-10b", 10),
        ("truncated-50pct", size // 2),
        ("truncated-90pct", size * 9 // 10),
    ]:
        folder = tmp_path / kind
        folder.mkdir()
        assert probes.damaged_copy(kind, fixtures.run, folder).stat().st_size == expected
    folder = tmp_path / "table"
    folder.mkdir()
    damaged = probes.damaged_copy("flipped-table-data", fixtures.run, folder)
    assert damaged.read_bytes() != fixtures.run.read_bytes()
    with h5py.File(fixtures.run, "r") as good, h5py.File(damaged, "r") as bad:
        for name in ("epochs/val_loss", "hyper/values"):
            np.asarray(good[name])
            # the tables carry fletcher32 checksums: the flipped chunk fails them on a raw read
            with pytest.raises(OSError, match="filter returned failure"):
                np.asarray(bad[name])
    for kind in ("flipped-superblock", "flipped-group-header", "flipped-checkpoint"):
        folder = tmp_path / kind
        folder.mkdir()
        copy = probes.damaged_copy(kind, fixtures.run, folder)
        assert copy.read_bytes() != fixtures.run.read_bytes() and copy.stat().st_size == size


def test_probes_are_selected_by_glob_or_substring() -> None:
    every = probes.all_probes()
    names = [p.name for p in every]
    assert len(names) == len(set(names)) > 100
    assert {p.name for p in probes.select(every, ["damaged-run/*/show"])} == {
        f"damaged-run/{kind}/show"
        for kind in (
            "truncated-10b",
            "truncated-50pct",
            "truncated-90pct",
            "flipped-superblock",
            "flipped-group-header",
            "flipped-table-data",
        )
    }
    assert [p.name for p in probes.select(every, ["bad-option"])] == ["cli/bad-option"]


@pytest.mark.slow
def test_real_probes_through_the_command_line(tmp_path: Path, fixtures: Any) -> None:
    chosen = probes.select(
        probes.all_probes(), ["cli/bad-option", "cli/show-good-run", "cli/show-missing-file"]
    )
    outcomes = probes.run_probes(chosen, tmp_path, jobs=2, fixtures=fixtures)
    assert [(o.probe.name, o.label) for o in outcomes] == [
        ("cli/bad-option", "clean:2"),
        ("cli/show-missing-file", "clean:2"),
        ("cli/show-good-run", "fine"),
    ]
    summary = probes.summarize(outcomes)
    assert summary.mismatches == [] and summary.counts == {"clean": 2, "fine": 1}
    assert summary.line.startswith("3 probes: 1 fine, 2 clean, 0 traceback")
