"""The loop's state: one dataclass whose checkpoint form is derived from its fields."""

from __future__ import annotations

import io
import typing
from dataclasses import fields

import torch

from stnkit.loop import Best, LoopState


def _sample(kind: typing.Any, index: int) -> typing.Any:
    """A value of type ``kind`` unlike the field's default (distinct per field)."""
    if kind is bool:
        return True
    if kind is int:
        return 7 + index
    if kind is float:
        return 0.5 + index
    if kind is str:
        return f"reason {index}"
    if typing.get_origin(kind) is list:
        return [1.5 + index, 2.5]
    if kind == Best | None:
        return Best(3, 0.25, {"loss": 0.25}, {"weight_decay": 0.1}, {"model": {"w": torch.ones(2)}})
    if kind is torch.Tensor:
        return torch.Generator().manual_seed(index).get_state()
    raise AssertionError(f"no sample for a field of type {kind}: extend the test with the new type")


def test_every_field_survives_a_checkpoint_round_trip() -> None:
    hints = typing.get_type_hints(LoopState)
    default = LoopState()
    values = {f.name: _sample(hints[f.name], i) for i, f in enumerate(fields(LoopState))}
    state = LoopState(**values)
    for name, value in values.items():  # every sample differs from the default: a lost field shows
        assert not _equal(getattr(default, name), value), name
    buffer = io.BytesIO()
    torch.save({"version": 0, **state.state_dict(), "model": {}}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # plain values and tensors only
    back = LoopState.from_state(loaded)
    for f in fields(LoopState):
        assert _equal(getattr(back, f.name), getattr(state, f.name)), f.name
    assert set(state.state_dict()) == {f.name for f in fields(LoopState)}


def test_the_checkpoint_form_copies_lists() -> None:
    state = LoopState(epoch_losses=[1.0])
    saved = state.state_dict()
    state.epoch_losses.append(2.0)
    assert saved["epoch_losses"] == [1.0]


def _equal(a: typing.Any, b: typing.Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, Best) and isinstance(b, Best):
        return (a.epoch, a.val_loss, a.metrics, a.values) == (
            b.epoch,
            b.val_loss,
            b.metrics,
            b.values,
        ) and all(torch.equal(a.state["model"][k], b.state["model"][k]) for k in a.state["model"])
    return bool(a == b)
