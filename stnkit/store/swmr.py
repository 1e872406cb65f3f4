"""Opening run files for reading in HDF5's SWMR mode, with a bounded patience for bad checksums.

A SWMR reader that meets a metadata checksum that does not match assumes a writer is halfway
through updating it and reads again, backing off longer each time; by default it tries 100
times, which on a file whose writer was killed mid-update means waiting for ever. stnkit's
writer never changes a run file's structure while a run goes (see ``docs/store.md``), so a bad
checksum that survives a few dozen tries is damage, not a write in progress: readers give up
after :data:`READ_ATTEMPTS` (well under a second) and report it.

h5py has no binding for ``H5Pset_metadata_read_attempts``; it is called through ctypes on the
HDF5 library h5py itself loaded. Where that library cannot be found, HDF5's default stands.
"""

from __future__ import annotations

import ctypes
import glob
import os
from pathlib import Path

import h5py

__all__ = ["READ_ATTEMPTS", "open_swmr"]

READ_ATTEMPTS = 30

_setter: object | None = None
_looked = False


def _read_attempts_setter() -> object | None:
    """``H5Pset_metadata_read_attempts`` from h5py's own HDF5 library, or ``None``."""
    global _setter, _looked
    if _looked:
        return _setter
    _looked = True
    package = os.path.dirname(h5py.__file__)
    # wheels bundle the library beside the package; other builds link a system libhdf5
    candidates = glob.glob(os.path.join(package, "..", "h5py.libs", "libhdf5-*.so*"))
    candidates += glob.glob(os.path.join(package, ".dylibs", "libhdf5*.dylib"))
    for candidate in candidates:
        try:
            function = ctypes.CDLL(candidate).H5Pset_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
        _setter = function
        break
    return _setter


def open_swmr(path: str | Path) -> h5py.File:
    """``h5py.File(path, "r", swmr=True)``, giving up on a damaged checksum after a few tries."""
    setter = _read_attempts_setter()
    if setter is None:
        return h5py.File(path, "r", swmr=True)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    setter(fapl.id, READ_ATTEMPTS)  # type: ignore[operator]
    fid = h5py.h5f.open(os.fsencode(str(path)), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)
