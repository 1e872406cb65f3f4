"""Readers for the standard on-disk formats: CIFAR-10 (binary and Python pickles) and IDX."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stnkit.errors import DataError

__all__ = ["read_cifar10_bin", "read_cifar10_py", "read_idx"]

_RECORD = 1 + 32 * 32 * 3
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


def read_cifar10_bin(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``cifar-10-batches-bin``: records of 1 label byte then 1024 R, 1024 G, 1024 B bytes.

    Returns ``{"train": (images (N, 3, 32, 32) uint8, labels (N,) int64), "test": ...}``; the
    training batches are concatenated in file order.
    """
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, names in (("train", TRAIN_FILES), ("test", ["test_batch"])):
        images, labels = [], []
        for name in names:
            path = folder / f"{name}.bin"
            raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
            if raw.size % _RECORD:
                raise DataError(f"{path}: size {raw.size} is not a whole number of {_RECORD}-byte records")
            records = raw.reshape(-1, _RECORD)
            labels.append(records[:, 0].astype(np.int64))
            images.append(records[:, 1:].reshape(-1, 3, 32, 32))
        splits[split] = (np.concatenate(images), np.concatenate(labels))
    return splits


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the CIFAR-10 Python batches without running arbitrary code: only numpy's array
    reconstruction is allowed, so a crafted file fails instead of executing."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _load_batch(path: Path) -> dict[Any, Any]:
    try:
        data = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path}: not a CIFAR-10 Python batch ({error})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a CIFAR-10 Python batch")
    return data


def read_cifar10_py(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``cifar-10-batches-py`` (what torchvision downloads): pickled dicts with ``data``
    ``(10000, 3072)`` uint8 and ``labels``."""
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, names in (("train", TRAIN_FILES), ("test", ["test_batch"])):
        images, labels = [], []
        for name in names:
            batch = _load_batch(folder / name)
            data = batch.get(b"data", batch.get("data"))
            label = batch.get(b"labels", batch.get("labels"))
            if data is None or label is None:
                raise DataError(f"{folder / name}: has no data/labels entries")
            images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(label, dtype=np.int64))
        splits[split] = (np.concatenate(images), np.concatenate(labels))
    return splits


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): the format of MNIST and Fashion-MNIST."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = struct.unpack(">" + "I" * dims, raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DataError(f"{path}: header says {shape} ({count} bytes) but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
