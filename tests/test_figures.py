"""``benchmarks/figures.py`` draws the results page's figures from the committed sample JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "figures.py"
RESULTS = ROOT / "benchmarks" / "results"
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_committed_results_draw_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(RESULTS), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for name in ("efficacy.png", "search.png", "schedule.png"):
        figure = tmp_path / name
        assert figure.read_bytes()[:8] == PNG and figure.stat().st_size > 10_000, name


def test_the_results_page_shows_the_generated_figures() -> None:
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    for name in ("efficacy.png", "search.png", "schedule.png"):
        assert f"images/{name}" in page
        assert (ROOT / "docs" / "images" / name).is_file()


def test_the_sample_json_is_what_efficacy_py_writes() -> None:
    spec = importlib.util.spec_from_file_location("efficacy", ROOT / "benchmarks" / "efficacy.py")
    assert spec is not None and spec.loader is not None
    efficacy: Any = importlib.util.module_from_spec(spec)
    sys.modules["efficacy"] = efficacy
    spec.loader.exec_module(efficacy)
    files = [*RESULTS.glob("efficacy-*.json"), *RESULTS.glob("search-*.json")]
    assert len(files) >= 4
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert set(data) == {"recipe", "rows"}, path.name
        assert [efficacy.Row(**row).method for row in data["rows"]], path.name


def test_a_file_that_is_not_benchmark_json_is_one_message(tmp_path: Path) -> None:
    (tmp_path / "efficacy-x.json").write_text("[]")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--results", str(tmp_path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "not a benchmark JSON file" in done.stderr
    assert "Traceback" not in done.stderr
