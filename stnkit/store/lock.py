"""One writer per run file: an advisory lock on a sidecar ``<run>.h5.lock`` file.

The operating system drops the lock when its process dies, so a crashed run never blocks its
own resume; a live one refuses a second writer with a clear message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from stnkit.errors import RunFileError

__all__ = ["WriterLock", "lock_path", "writer_alive"]


def lock_path(run_file: Path) -> Path:
    """The writer-lock sidecar of ``run_file``: ``<run>.h5.lock``."""
    return run_file.with_name(run_file.name + ".lock")


class WriterLock:
    def __init__(self, run_file: Path) -> None:
        self.path = lock_path(run_file)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFileError(
                f"{self.path.with_suffix('')} is being written by {holder}; "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"stnkit process {os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)  # closing drops the lock
        self._fd = None


def writer_alive(run_file: Path) -> bool:
    """Whether a live process holds ``run_file``'s writer lock. A run marked "running" whose lock
    is free was killed: its writer can no longer finish it."""
    path = lock_path(run_file)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        # a shared, non-blocking probe, released at once: it fails only while a writer holds it
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
