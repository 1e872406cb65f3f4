"""Keep glibc from returning every large tensor's memory to the kernel on CPU runs.

glibc's malloc serves blocks above its mmap threshold (128 KiB to start) with a fresh ``mmap`` and
frees them with ``munmap``. A training step allocates many activations of a few MB each, so every
step maps them anew and first touches every page again; with torch's intra-op threads those page
faults serialise on the process's memory map. Raising the mmap and trim thresholds lets freed
blocks be reused from the heap instead (the speed-up is in docs/results.md). The cost is that the
process keeps its peak heap rather than shrinking.

``STNKIT_MALLOC_TUNING=0`` leaves malloc alone. Other platforms and C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
_TRIM_THRESHOLD = 256 * 1024 * 1024

_done: bool | None = None


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; return whether they were raised."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("STNKIT_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
    return _done
