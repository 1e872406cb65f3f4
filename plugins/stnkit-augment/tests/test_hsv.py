"""The batched RGB ↔ HSV conversion: round trips, agreement with colorsys, hue rotation."""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from stnkit_augment import adjust_hue, hsv_to_rgb, rgb_to_hsv
from stnkit_augment.images import read_cifar10_bin

DATA = Path(__file__).resolve().parents[2] / "stnkit-cnn" / "tests" / "data"
RGB, _ = read_cifar10_bin(DATA / "cifar-10-batches-bin" / "test_batch.bin")

# edge values (black, white, ties, tiny chroma) alongside arbitrary ones
channel = st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1e-7, 1.0 - 1e-7, 1.0 / 3.0]), st.floats(0.0, 1.0))
pixels = st.lists(st.tuples(channel, channel, channel), min_size=1, max_size=64)


def as_image(triples: list[tuple[float, float, float]]) -> Tensor:
    """Pixels as one image ``(1, 3, 1, N)``."""
    return torch.tensor(triples, dtype=torch.float32).T.reshape(1, 3, 1, -1)


@given(triples=pixels)
def test_round_trip_is_exact_to_1e5(triples: list[tuple[float, float, float]]) -> None:
    rgb = as_image(triples)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, rtol=0.0, atol=1e-5)


def test_round_trip_on_real_images() -> None:
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(RGB)), RGB, rtol=0.0, atol=1e-5)


@given(triples=pixels)
def test_agrees_with_colorsys(triples: list[tuple[float, float, float]]) -> None:
    rgb = as_image(triples)
    hsv = rgb_to_hsv(rgb)[0, :, 0].T
    # colorsys sees the float32 pixels the conversion sees, not the float64 values drawn
    for (r, g, b), (hue, saturation, value) in zip(rgb[0, :, 0].T.tolist(), hsv.tolist(), strict=True):
        want_h, want_s, want_v = colorsys.rgb_to_hsv(r, g, b)
        assert 0.0 <= hue <= 1.0 and 0.0 <= saturation <= 1.0
        assert math.isclose(value, want_v, abs_tol=1e-6) and math.isclose(saturation, want_s, abs_tol=1e-5)
        # hue is ill-conditioned at low chroma (and meaningless at zero): compare only where defined
        if max(r, g, b) - min(r, g, b) > 1e-3:
            gap = abs(hue - want_h) % 1.0
            assert min(gap, 1.0 - gap) < 1e-4


def test_primary_colours() -> None:
    colours = as_image([(1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1), (1, 0, 1), (0.5, 0.5, 0.5)])
    hue, saturation, value = rgb_to_hsv(colours)[0, :, 0]
    assert torch.allclose(hue, torch.tensor([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 0]), atol=1e-6)
    assert torch.equal(saturation, torch.tensor([1.0] * 6 + [0.0]))
    assert torch.equal(value, torch.tensor([1.0] * 6 + [0.5]))


@given(start=st.integers(0, len(RGB) - 4), turns=st.integers(-3, 3))
def test_whole_turns_are_identities(start: int, turns: int) -> None:
    x = RGB[start : start + 4]
    assert torch.allclose(adjust_hue(x, torch.full((4,), float(turns))), x, rtol=0.0, atol=1e-5)


def test_shift_zero_and_one_turn_either_way() -> None:
    x = RGB[:8]
    for shift in (0.0, 1.0, -1.0):
        assert torch.allclose(adjust_hue(x, torch.full((8,), shift)), x, rtol=0.0, atol=1e-5)


def test_a_third_of_a_turn_cycles_the_primaries() -> None:
    red = as_image([(1, 0, 0), (0.8, 0.2, 0.2)]).expand(3, -1, -1, -1)
    out = adjust_hue(red, torch.tensor([1 / 3, 2 / 3, -1 / 3]))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(out[1, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(out[2, :, 0, 1], torch.tensor([0.2, 0.2, 0.8]), atol=1e-6)


@given(a=st.floats(-1.0, 1.0), b=st.floats(-1.0, 1.0), start=st.integers(0, len(RGB) - 2))
def test_shifts_compose(a: float, b: float, start: int) -> None:
    x = RGB[start : start + 2]
    once = adjust_hue(x, torch.full((2,), a + b))
    twice = adjust_hue(adjust_hue(x, torch.full((2,), a)), torch.full((2,), b))
    assert torch.allclose(once, twice, rtol=0.0, atol=1e-5)
