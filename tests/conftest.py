"""Fixtures shared by the test modules; plain helpers are in ``tests.helpers``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_recipe


@pytest.fixture
def ridge_recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path)
