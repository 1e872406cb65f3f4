"""Built-in hyperparameter kinds: maps between unconstrained and constrained values.

A kind turns an unconstrained real ``u`` (what the hyper optimizer moves and the hypernetwork
sees) into a constrained value, and a discrete kind then turns that into the value a component
receives (:meth:`HyperKind.discretize`). All maps are elementwise; ``constrain`` is differentiable.

What a kind author implements (see :class:`HyperKind`): ``name``, ``Config`` (a subclass of
:class:`HyperConfig`), ``constrain``/``unconstrain`` and, if the range is bounded, ``low``/``high``;
a discrete kind also sets ``integer`` (its values are whole numbers) or ``discrete`` and implements
``discretize``. Everything else has a default that works for any kind.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import ConfigDict, Field, ValidationError, model_validator
from torch import Tensor

from stnkit.config import ComponentConfig
from stnkit.markers import hookimpl

__all__ = [
    "SEARCH_MARGIN",
    "SEARCH_POSITIVE_FLOOR",
    "SEARCH_POSITIVE_UPPER",
    "HyperConfig",
    "HyperKind",
    "IntegerKind",
    "IntervalKind",
    "PositiveKind",
    "SearchConfig",
    "SearchRange",
    "UnitKind",
    "clamp_to",
]

# sigmoid saturates to exactly 1.0 in float32 for u > ~17; a dropout rate of 1 would divide by
# zero, so unit-interval values are kept a hair below their upper end.
_UNIT_MAX = 1.0 - 2.0**-20
# exp overflows float32 above about 88.7: positive values are held below exp(80) ≈ 5.5e34
_EXP_MAX = 80.0


def clamp_to(value: Tensor, low: float, high: float) -> Tensor:
    """``value`` held within the closed range ``[low, high]`` *in its own dtype*.

    A bound such as 0.3 or 1e-5 has no exact float32 form, and the nearest float32 can lie just
    outside it (0.3 → 0.30000001, 1e-5 → 9.9999997e-06): clamping to the rounded bound lets values
    escape the range by one unit in the last place. The bounds are rounded inward instead.
    """
    lo = _inward(low, value.dtype, up=True)
    hi = _inward(high, value.dtype, up=False)
    if lo is None and hi is None:
        return value
    # Python floats that are exact in value's dtype: clamp converts them back without rounding
    return value.clamp(min=lo, max=hi)


@functools.lru_cache(maxsize=256)
def _inward(bound: float, dtype: torch.dtype, up: bool) -> float | None:
    """``bound`` rounded to ``dtype``, one step inward if rounding put it outside; ``None`` if infinite."""
    if math.isinf(bound):
        return None
    rounded = torch.tensor(bound, dtype=dtype)
    outside = float(rounded) < bound if up else float(rounded) > bound
    if outside:
        rounded = torch.nextafter(rounded, torch.tensor(math.inf if up else -math.inf, dtype=dtype))
    return float(rounded)


#: default search ranges (``stnkit tune``) stay this fraction of their width inside open bounds:
#: a dropout rate of exactly 0 or 1, or an interval's end, is not a value the kind can take
SEARCH_MARGIN = 0.01
#: ``positive`` kinds are searched on a log scale, which cannot start at 0: from this floor
SEARCH_POSITIVE_FLOOR = 1e-5
#: ``positive`` kinds have no upper bound; their default search range ends here
SEARCH_POSITIVE_UPPER = 10.0


@dataclass(frozen=True)
class SearchRange:
    """Where a baseline search (``stnkit tune``) samples one hyperparameter: ``[low, high]``,
    uniformly or (``log``) log-uniformly, integers only when ``integer``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


class SearchConfig(ComponentConfig):
    """A recipe's own search range for a hyperparameter (``search: {low, high, log}``)."""

    # an infinite end would pass `low < high` and only fail inside Optuna
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if not self.low < self.high:
            raise ValueError(f"search.low ({self.low}) must be below search.high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"search.log needs search.low above 0 (not {self.low})")
        return self


class HyperConfig(ComponentConfig):
    """Fields every hyperparameter declaration accepts, whatever its kind."""

    init: float = Field(description="initial constrained value")
    per_example: bool = Field(True, description="perturb each example separately (false: one draw per batch)")
    tune: bool = Field(True, description="false holds the value fixed at init")
    scale: float | None = Field(
        None, gt=0, description="initial perturbation scale σ (default: train.perturbation.init_scale)"
    )
    search: SearchConfig | None = Field(
        None, description="range searched by `stnkit tune` (default: the kind's search_range)"
    )


class HyperKind:
    """Base class of hyperparameter kinds. Subclasses set ``name`` and ``Config``.

    A subclass implements:

    - ``name``: the ``kind:`` a recipe declaration uses;
    - ``Config``: a subclass of :class:`HyperConfig` (checked at registration) holding the kind's
      options; its validators must reject an ``init`` outside the range;
    - ``constrain(u)`` / ``unconstrain(value)``: elementwise maps between unconstrained ``u`` and the
      constrained value, any shape, any float dtype; ``constrain`` is monotone, differentiable and
      stays within ``[low, high]`` exactly in the input's dtype (use :func:`clamp_to`);
    - ``low`` / ``high``: the closed bounds of the constrained value (infinite when unbounded).

    A discrete kind implements ``discretize`` (which makes it ``discrete``) and sets ``integer =
    True`` if its values are whole numbers; its ``Config.init`` is a value ``discretize`` returns.
    Components receive the discretized values; only the hypernetwork sees the continuous one.

    Optional, with defaults that work for any kind: :meth:`used_range`, :meth:`used_value`,
    :meth:`initial_unconstrained`, ``log_scale``.
    """

    name: ClassVar[str]
    Config: ClassVar[type[HyperConfig]] = HyperConfig
    #: the values a component receives are whole numbers (``discretize`` floors)
    integer: ClassVar[bool] = False
    #: the values a component receives are a discrete set (``discretize`` maps onto it); a kind
    #: that is ``integer`` or overrides ``discretize`` is discrete unless it says otherwise
    discrete: ClassVar[bool] = False
    #: plots draw this kind's values on a logarithmic axis (for values spanning decades)
    log_scale: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # a kind whose discretize changes values is discrete, whether or not its author said so:
        # components must receive what discretize returns
        overrides = cls.discretize is not HyperKind.discretize
        if "discrete" not in cls.__dict__ and (cls.integer or overrides):
            cls.discrete = True

    def __init__(self, config: HyperConfig) -> None:
        self.config = config

    @property
    def low(self) -> float:
        return -math.inf

    @property
    def high(self) -> float:
        return math.inf

    def constrain(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def unconstrain(self, value: Tensor) -> Tensor:
        raise NotImplementedError

    def initial_unconstrained(self) -> float:
        value = torch.tensor(self.config.init, dtype=torch.float64)
        return float(self.unconstrain(value))

    def discretize(self, value: Tensor) -> Tensor:
        """The value a component receives for constrained ``value`` (same shape and dtype):
        identity for continuous kinds; discrete kinds map onto their values (integer kinds floor).
        Must be idempotent: ``discretize(discretize(x)) == discretize(x)``."""
        return value

    def used_value(self, value: float) -> float:
        """:meth:`discretize` of one constrained value: what a component receives and what
        ``run``'s progress, ``show``, ``compare``, ``export`` and ``plot`` display."""
        if not self.discrete:
            return float(value)
        return float(self.discretize(torch.tensor([value], dtype=torch.float64))[0])

    def used_range(self) -> tuple[float, float]:
        """Closed range of the values a component receives (after :meth:`discretize`): ``(low,
        high)`` for continuous kinds, the discretized bounds for discrete ones (``discretize`` is
        monotone, so they bound every value it returns)."""
        if not self.discrete:
            return (self.low, self.high)
        low, high = self.low, self.high
        return (
            low if math.isinf(low) else self.used_value(low),
            high if math.isinf(high) else self.used_value(high),
        )

    def describe(self) -> str:
        return self.name

    def default_search_range(self) -> SearchRange | None:
        """The range ``stnkit tune`` searches when the recipe gives no ``search:``. The default
        for any kind: its bounds less :data:`SEARCH_MARGIN` when both are finite; ``None`` (the
        recipe must then say ``search: {low, high}``) for an unbounded kind."""
        if math.isfinite(self.low) and math.isfinite(self.high):
            return _inside(self.low, self.high, integer=self.integer)
        return None

    def search_range(self) -> SearchRange:
        """The recipe's ``search:`` if given, else :meth:`default_search_range`. Raises
        ``ValueError`` when there is none or when an end is not a value this kind accepts."""
        override = self.config.search
        if override is None:
            found = self.default_search_range()
            if found is None:
                raise ValueError(f"kind {self.name!r} has no default search range; add search: {{low, high}}")
            return found
        if self.integer and not (override.low.is_integer() and override.high.is_integer()):
            raise ValueError("search.low and search.high must be whole numbers for an integer kind")
        for end, value in (("low", override.low), ("high", override.high)):
            # an end is searched as `init`: the kind's own validation says whether it may take it
            try:
                type(self.config).model_validate({**self.config.model_dump(), "init": value, "search": None})
            except ValidationError as error:
                reason = error.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"search.{end} ({value:g}) is not a valid value: {reason}") from None
        return SearchRange(override.low, override.high, override.log, self.integer)


def _inside(low: float, high: float, integer: bool = False, log: bool = False) -> SearchRange:
    """``[low, high]`` shrunk by :data:`SEARCH_MARGIN` at each end (integers are closed)."""
    if integer:
        return SearchRange(low, high, log=False, integer=True)
    margin = SEARCH_MARGIN * (high - low)
    return SearchRange(low + margin, high - margin, log=log)


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


def _softplus_inverse(y: Tensor) -> Tensor:
    # log(exp(y) - 1), written to stay finite for large y
    return y + torch.log(-torch.expm1(-y))


class UnitKind(HyperKind):
    """Values in the unit interval, by sigmoid: dropout rates, probabilities."""

    name = "unit"

    class Config(HyperConfig):
        init: float = Field(gt=0.0, lt=1.0, description="initial value, strictly inside (0, 1)")

    @property
    def low(self) -> float:
        return 0.0

    @property
    def high(self) -> float:
        return _UNIT_MAX

    def constrain(self, u: Tensor) -> Tensor:
        return clamp_to(torch.sigmoid(u), 0.0, _UNIT_MAX)

    def default_search_range(self) -> SearchRange:
        return _inside(0.0, 1.0)  # [0.01, 0.99]

    def unconstrain(self, value: Tensor) -> Tensor:
        return _logit(value)


class IntervalKind(HyperKind):
    """Values in ``[low, high]`` by ``low + (high - low) · sigmoid(u)``."""

    name = "interval"

    class Config(HyperConfig):
        low: float
        high: float

        @model_validator(mode="after")
        def _check_bounds(self) -> IntervalKind.Config:
            if not self.low < self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if not self.low < self.init < self.high:
                raise ValueError(
                    f"init ({self.init}) must lie strictly between low ({self.low}) and high ({self.high})"
                )
            return self

    config: Config

    @property
    def low(self) -> float:
        return self.config.low

    @property
    def high(self) -> float:
        return self.config.high

    def constrain(self, u: Tensor) -> Tensor:
        width = self.config.high - self.config.low
        return clamp_to(self.config.low + width * torch.sigmoid(u), self.low, self.high)

    def unconstrain(self, value: Tensor) -> Tensor:
        width = self.config.high - self.config.low
        return _logit((value - self.config.low) / width)


class PositiveKind(HyperKind):
    """Values above ``lower`` (default 0) by ``lower + exp(u)``: penalty weights.

    The exponential makes ``u`` the logarithm of the excess over ``lower`` at every scale, so a
    hyper step of a given size multiplies the value by the same factor whether it is 1e-4 or 100:
    a penalty's best value is a matter of orders of magnitude (softplus, linear above 1, moves a
    value of 10 by as little as it moves 0.01 by a tenth of itself).
    """

    name = "positive"

    class Config(HyperConfig):
        lower: float = 0.0

        @model_validator(mode="after")
        def _check_init(self) -> PositiveKind.Config:
            if not self.init > self.lower:
                raise ValueError(f"init ({self.init}) must be above lower ({self.lower})")
            return self

    config: Config

    @property
    def low(self) -> float:
        return self.config.lower

    def constrain(self, u: Tensor) -> Tensor:
        return clamp_to(self.config.lower + torch.exp(u.clamp(max=_EXP_MAX)), self.low, self.high)

    def unconstrain(self, value: Tensor) -> Tensor:
        return torch.log(value - self.config.lower)

    def default_search_range(self) -> SearchRange:
        """Log scale from ``lower`` (or :data:`SEARCH_POSITIVE_FLOOR` when it is 0) to
        :data:`SEARCH_POSITIVE_UPPER` (or 1000 × ``lower`` when that is higher); a negative
        ``lower`` gets a linear range of the same width."""
        lower = self.config.lower
        if lower < 0:
            return _inside(lower, lower + SEARCH_POSITIVE_UPPER)
        # a value at exactly `lower` is not one the kind takes: start a hair above it
        low = SEARCH_POSITIVE_FLOOR if lower == 0 else lower * (1 + SEARCH_MARGIN)
        return SearchRange(low, max(SEARCH_POSITIVE_UPPER, 1000 * low), log=True)


class IntegerKind(HyperKind):
    """Integers ``low..high``: a continuous value in ``[low, high + 1)`` floored where it is used.

    The hypernetwork sees the continuous value, which is how an integer hyperparameter (cutout
    holes, cutout length) gets a gradient through the best response.
    """

    name = "integer"
    integer = True

    class Config(HyperConfig):
        low: int
        high: int
        init: float

        @model_validator(mode="after")
        def _check_bounds(self) -> IntegerKind.Config:
            if not self.low <= self.high:
                raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
            if self.init != int(self.init):
                raise ValueError(f"init ({self.init}) must be a whole number")
            if not self.low <= self.init <= self.high:
                raise ValueError(
                    f"init ({int(self.init)}) must lie within low ({self.low}) and high ({self.high})"
                )
            return self

    config: Config

    @property
    def low(self) -> float:
        return float(self.config.low)

    @property
    def high(self) -> float:
        # the continuous value stays below high + 1; its floor stays within [low, high]
        return float(self.config.high + 1)

    def constrain(self, u: Tensor) -> Tensor:
        width = self.config.high + 1 - self.config.low
        return clamp_to(self.config.low + width * torch.sigmoid(u), self.low, self.high)

    def unconstrain(self, value: Tensor) -> Tensor:
        width = self.config.high + 1 - self.config.low
        return _logit((value - self.config.low) / width)

    def initial_unconstrained(self) -> float:
        # start in the middle of the initial integer's bucket, not on its edge
        value = torch.tensor(self.config.init + 0.5, dtype=torch.float64)
        return float(self.unconstrain(value))

    def discretize(self, value: Tensor) -> Tensor:
        return torch.floor(value).clamp(self.config.low, self.config.high)

    def used_range(self) -> tuple[float, float]:
        return (float(self.config.low), float(self.config.high))

    def default_search_range(self) -> SearchRange:
        return SearchRange(float(self.config.low), float(self.config.high), integer=True)


BUILTIN_KINDS: tuple[type[HyperKind], ...] = (UnitKind, IntervalKind, PositiveKind, IntegerKind)


@hookimpl
def stnkit_register_hyperparameter_kinds(register: Callable[[type[HyperKind]], object]) -> None:
    for kind in BUILTIN_KINDS:
        register(kind)
