"""One writer per run file: advisory locks that the operating system drops when their process dies,
so a crashed run never blocks its own resume while a live one refuses a second writer.

Two locks are held while a run is written:

- an exclusive ``flock`` on the sidecar ``<run>.h5.lock``, which records the writer's process id
  (and claims the run's file name before the file exists);
- on Linux, an open-file-description (OFD) write lock on the run file itself, taken on each new
  file before it is moved under the run's name. It cannot be bypassed by deleting the sidecar:
  the lock lives on the run file's inode. OFD locks are independent of HDF5's own ``flock`` and,
  unlike POSIX record locks, are not dropped when the same process closes another descriptor of
  the file (a reader in the writer's process).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import sys
from pathlib import Path

from stnkit.errors import RunFileError

__all__ = ["WriterLock", "file_locked", "lock_path", "writer_alive"]

# struct flock on 64-bit Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (int)
_OFD = sys.platform == "linux" and hasattr(fcntl, "F_OFD_SETLK") and struct.calcsize("P") == 8
_FLOCK = "hhqqi4x"


def lock_path(run_file: Path) -> Path:
    """The writer-lock sidecar of ``run_file``: ``<run>.h5.lock``."""
    return run_file.with_name(run_file.name + ".lock")


def _ofd(fd: int, command: int, kind: int) -> int:
    """One OFD lock call on the whole file; returns the lock type the kernel reports back."""
    answer = fcntl.fcntl(fd, command, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
    return int(struct.unpack(_FLOCK, answer)[0])


def file_locked(run_file: Path) -> bool:
    """Whether some open file description (of any process, this one included) holds the OFD
    write lock on ``run_file``."""
    if not _OFD:
        return False
    try:
        fd = os.open(run_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _ofd(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK) != fcntl.F_UNLCK
    except OSError:
        return False
    finally:
        os.close(fd)


class WriterLock:
    def __init__(self, run_file: Path) -> None:
        self.run_file = Path(run_file)
        self.path = lock_path(self.run_file)
        self._fd: int | None = None
        self._held: int | None = None  # descriptor holding the OFD lock on the run file

    def acquire(self) -> None:
        """Take the sidecar lock and, if the run file exists already (a resume), its file lock;
        refuse with :class:`RunFileError` while another writer holds either."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise self._refusal(holder) from None
        self._fd = fd
        if self.run_file.exists():
            try:
                self.hold(self.run_file)
            except BaseException:
                self.release()
                raise
        os.ftruncate(fd, 0)
        os.write(fd, f"stnkit process {os.getpid()}".encode())

    def _refusal(self, holder: str) -> RunFileError:
        return RunFileError(
            f"{self.run_file} is being written by {holder}; wait for it to finish or stop it first"
        )

    def hold(self, target: Path) -> None:
        """Hold the OFD lock on ``target`` — the run file, or the complete new file about to be
        moved under its name — dropping the lock on the file it replaces."""
        if not _OFD:
            return
        try:
            fd = os.open(target, os.O_RDWR)
        except OSError:
            return  # a file this process cannot open for writing it cannot write either
        try:
            _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
        except OSError:
            os.close(fd)
            raise self._refusal("another process") from None
        self._drop_file_lock()
        self._held = fd

    def _drop_file_lock(self) -> None:
        if self._held is not None:
            os.close(self._held)  # closing the description drops its OFD lock
            self._held = None

    def release(self) -> None:
        self._drop_file_lock()
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)  # closing drops the lock
        self._fd = None


def writer_alive(run_file: Path) -> bool:
    """Whether a live process holds ``run_file``'s writer lock (on the sidecar or on the file).
    A run marked "running" whose locks are free was killed: its writer cannot finish it."""
    if file_locked(run_file):
        return True
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
