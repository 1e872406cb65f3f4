"""Checkpoints inside a run file: two slots written alternately, so a crash while one is being
written always leaves the other — the previous complete checkpoint — intact.

A checkpoint is ``torch.save`` of a dict of tensors and plain values, stored as bytes with its
SHA-256. It is read back with ``torch.load(weights_only=True)``: a crafted file cannot make
loading run code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from typing import Any

import h5py
import numpy as np
import torch

from stnkit.errors import RunFileError
from stnkit.killpoints import kill_point

__all__ = [
    "CHECKPOINT_VERSION",
    "SLOTS",
    "check_version",
    "create_slots",
    "inspect_slots",
    "latest_blob",
    "no_intact_checkpoint",
    "read_latest",
    "serialize",
    "slot_capacity",
    "write_checkpoint",
]

SLOTS = 2
_CHUNK = 1 << 20

#: the layout of a checkpoint's dict (its keys and what they hold); it changes whenever a key is
#: added, removed or changes meaning, and a checkpoint of another version is refused
CHECKPOINT_VERSION = 3


def check_version(state: dict[str, Any], where: str) -> None:
    """Refuse a checkpoint whose layout version is not :data:`CHECKPOINT_VERSION`."""
    version = state.get("version")
    if version != CHECKPOINT_VERSION:
        raise RunFileError(
            f"{where}: its checkpoint has layout version {version}, and this stnkit reads version "
            f"{CHECKPOINT_VERSION} only; start the run again from its recipe"
        )


def serialize(state: dict[str, Any]) -> np.ndarray:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def _reason(error: Exception) -> str:
    """One line out of torch's multi-line refusal: what it refused, without the advice to allow it."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = (lines or [type(error).__name__])[0].split(". Please", 1)[0]
    return reason if len(reason) <= 160 else reason[:157] + "..."


def deserialize(blob: bytes, where: str) -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise RunFileError(
            f"{where}: the checkpoint cannot be loaded safely, so it was not loaded ({_reason(error)})"
        ) from None
    if not isinstance(state, dict):
        raise RunFileError(f"{where}: the checkpoint is not a stnkit checkpoint")
    return state


def create_slots(file: h5py.File, capacity: int = 0) -> h5py.Group:
    """The ``checkpoints`` group: ``slot0``/``slot1`` bytes, per-slot ``length``, ``step`` and
    ``sha256``, and ``latest`` (the slot holding the newest complete checkpoint, −1 for none).

    Each slot holds ``capacity`` bytes, every chunk written now (zero-filled): a checkpoint then
    only overwrites bytes already on disk, never the file's structure. One that would not fit is
    the store's business: it rebuilds the file with larger slots (``HDF5Store``).
    """
    group = file.create_group("checkpoints")
    capacity = max(int(capacity), 0)
    chunk = max(min(_CHUNK, capacity), 1) if capacity else _CHUNK
    for slot in range(SLOTS):
        group.create_dataset(
            f"slot{slot}",
            data=np.zeros(capacity, dtype=np.uint8),
            maxshape=(None,),  # resizable only for tools that rewrite a finished file
            chunks=(chunk,),
        )
    group.create_dataset("length", data=np.zeros(SLOTS, dtype=np.int64))
    group.create_dataset("step", data=np.full(SLOTS, -1, dtype=np.int64))
    group.create_dataset("sha256", data=np.array([b""] * SLOTS, dtype="S64"))
    group.create_dataset("latest", data=np.int64(-1))
    return group


def slot_capacity(file: h5py.File) -> int:
    """Bytes the smaller slot can hold: the largest checkpoint that can be written in place."""
    group = file["checkpoints"]
    return min(int(group[f"slot{slot}"].shape[0]) for slot in range(SLOTS))


def write_checkpoint(file: h5py.File, blob: np.ndarray, step: int) -> int:
    """Write ``blob`` into the slot not holding the latest checkpoint; only then point ``latest``
    at it. Returns the slot used. ``blob`` must fit (:func:`slot_capacity`): growing a slot in a
    live file would change its structure, which a kill could leave half-written."""
    group = file["checkpoints"]
    latest = int(group["latest"][()])
    slot = 0 if latest != 0 else 1
    data = group[f"slot{slot}"]
    if data.shape[0] < len(blob):
        raise ValueError(f"a checkpoint of {len(blob)} bytes does not fit a slot of {data.shape[0]}")
    data[: len(blob)] = blob
    data.flush()
    group["length"][slot] = len(blob)
    group["length"].flush()
    digest = hashlib.sha256(blob.tobytes()).hexdigest().encode()
    group["sha256"][slot] = digest
    group["step"][slot] = step
    group["sha256"].flush()
    group["step"].flush()
    file.flush()  # the slot is complete on disk before it becomes the latest
    kill_point("checkpoint-bytes")
    group["latest"][()] = slot
    group["latest"].flush()
    file.flush()
    kill_point("checkpoint-done")
    return slot


def inspect_slots(file: h5py.File) -> tuple[tuple[np.ndarray, int, int] | None, list[str]]:
    """The newest intact checkpoint's raw bytes, step and slot (nothing is unpickled), or
    ``None``; and, one line each, the written slots found damaged on the way to it.

    The latest slot is tried first, then the other. The other slot failing its hash is what a
    kill during the next checkpoint's write leaves; it is only looked at (and reported) when
    the latest slot is damaged too.
    """
    if "checkpoints" not in file:
        return None, []
    group = file["checkpoints"]
    latest = int(group["latest"][()])
    if latest == -1:
        return None, []
    damaged: list[str] = []
    steps = [int(group["step"][slot]) for slot in range(SLOTS)]
    if latest in (0, 1):
        order = [latest, 1 - latest]
    else:
        damaged.append(f"the pointer to the latest checkpoint is damaged (slot {latest})")
        order = sorted(range(SLOTS), key=lambda slot: -steps[slot])
    for slot in order:
        data = group[f"slot{slot}"]
        length = int(group["length"][slot]) if "length" in group else data.shape[0]
        if steps[slot] < 0 or not 0 < length <= data.shape[0]:
            if slot == latest:
                damaged.append(f"checkpoint slot {slot} records no checkpoint although it is the latest")
            continue
        blob = np.asarray(data[:length], dtype=np.uint8)
        recorded = bytes(group["sha256"][slot]).decode(errors="replace")
        if hashlib.sha256(blob.tobytes()).hexdigest() != recorded:
            damaged.append(f"checkpoint slot {slot} (step {steps[slot]}) failed its hash check")
            continue
        return (blob, steps[slot], slot), damaged
    return None, damaged


def latest_blob(file: h5py.File) -> tuple[np.ndarray, int] | None:
    """The newest intact checkpoint's raw bytes and step, or ``None`` (damaged slots passed over)."""
    found, _damaged = inspect_slots(file)
    return None if found is None else (found[0], found[1])


def no_intact_checkpoint(where: str, damaged: list[str]) -> RunFileError:
    return RunFileError(
        f"{where}: {'; '.join(damaged)}; no intact checkpoint is left, so the run cannot continue "
        "where it stopped (start it again from its recipe)"
    )


def read_latest(file: h5py.File, where: str) -> tuple[dict[str, Any], int] | None:
    """The newest intact checkpoint and its step, or ``None`` when the run has none. A run whose
    every written checkpoint is damaged is a :class:`RunFileError`, not a run without one."""
    found, damaged = inspect_slots(file)
    if found is None:
        if damaged:
            raise no_intact_checkpoint(where, damaged)
        return None
    blob, step, _slot = found
    return deserialize(blob.tobytes(), where), step
