"""The hyperparameters of the current forward pass, shared by every converted layer of a model.

A converted model's ``forward`` sets it around the user's unchanged ``forward`` call, so the
per-example hypernetwork input reaches the layers without new arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor

__all__ = ["HyperContext"]


class HyperContext:
    """``hnet``: ``(B, H)`` or ``None`` (the plain network); ``values``: hyperparameter name →
    ``(B,)`` values. ``active`` is False outside a converted model's forward: the layers then run
    as the original module did (elementary weights, the dropouts' own rates)."""

    def __init__(self) -> None:
        self.active = False
        self.hnet: Tensor | None = None
        self.values: Mapping[str, Tensor] = {}

    @contextmanager
    def use(self, hnet: Tensor | None, values: Mapping[str, Tensor]) -> Iterator[None]:
        """Set the pass's hyperparameters; always cleared on leaving, an exception included."""
        previous = (self.active, self.hnet, self.values)
        self.active, self.hnet, self.values = True, hnet, values
        try:
            yield
        finally:
            self.active, self.hnet, self.values = previous

    def __deepcopy__(self, memo: dict[int, object]) -> HyperContext:
        # a copied model gets its own context, never one still set by the original's forward
        return HyperContext()
