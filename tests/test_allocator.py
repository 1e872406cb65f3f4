"""The malloc tuning applied to CPU runs: on where it can be, off when asked, once per process."""

from __future__ import annotations

import ctypes.util
import platform
import sys

import pytest

from stnkit import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_done", None)


@pytest.mark.skipif(not GLIBC or ctypes.util.find_library("c") is None, reason="needs glibc's mallopt")
def test_tuned_on_glibc_and_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STNKIT_MALLOC_TUNING", raising=False)
    assert allocator.tune_allocator() is True
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: pytest.fail("tuned twice"))
    assert allocator.tune_allocator() is True


def test_left_alone_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STNKIT_MALLOC_TUNING", "0")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: pytest.fail("malloc was touched"))
    assert allocator.tune_allocator() is False


def test_left_alone_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: pytest.fail("malloc was touched"))
    assert allocator.tune_allocator() is False
