"""The hyperparameter space: unconstrained centre ``h``, perturbation scale ``s`` and sampling."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit import distributed
from stnkit.hyper.kinds import HyperKind, _softplus_inverse

__all__ = ["HyperBatch", "HyperSpace"]


@dataclass
class HyperBatch:
    """The hyperparameters one forward pass sees.

    ``hnet``: ``(B, H)`` input of every best-response layer, or ``None`` for the plain network
    (no response branch at all). ``values``: the value a component receives for each
    hyperparameter, shape ``(B,)``, for declared and default (constant) ones alike: the constrained
    value, passed through :meth:`~stnkit.hyper.HyperKind.discretize` for discrete kinds (an
    integer kind gives whole numbers within its range, never the continuous value behind them).
    """

    hnet: Tensor | None
    values: Mapping[str, Tensor]
    kinds: Mapping[str, HyperKind] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Tensor:
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def scalar(self, name: str) -> float:
        """The value of a per-batch hyperparameter (the first example's value)."""
        return float(self.values[name][0].detach())

    def discrete(self, name: str) -> Tensor:
        """An integer hyperparameter floored into its range, shape ``(B,)``, dtype long."""
        value = self.values[name]
        kind = self.kinds.get(name)
        if kind is not None:
            value = kind.discretize(value)
        return torch.floor(value).long()


class HyperSpace(nn.Module):
    """The tuned hyperparameters as one unconstrained vector.

    Parameters ``h`` (centre, shape ``(H,)``) and ``s`` (perturbation scale in softplus space,
    ``σ = softplus(s)``) are what hyper steps optimise. ``constants`` are hyperparameters a component
    consumes that the recipe does not declare: fixed, never perturbed, unseen by the hypernetwork.
    """

    per_example: Tensor
    tuned: Tensor
    h_initial: Tensor

    def __init__(
        self,
        kinds: Mapping[str, HyperKind],
        default_scale: float = 0.5,
        constants: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.names: tuple[str, ...] = tuple(kinds)
        self.kinds: dict[str, HyperKind] = dict(kinds)
        self.constants: dict[str, float] = dict(constants or {})
        init = [kind.initial_unconstrained() for kind in kinds.values()]
        scales = [kind.config.scale or default_scale for kind in kinds.values()]
        self.h = nn.Parameter(torch.tensor(init, dtype=torch.float32))
        self.register_buffer("h_initial", torch.tensor(init, dtype=torch.float32))
        self.s = nn.Parameter(_softplus_inverse(torch.tensor(scales, dtype=torch.float32)))
        per_example = [kind.config.per_example for kind in kinds.values()]
        tuned = [kind.config.tune for kind in kinds.values()]
        self.register_buffer("per_example", torch.tensor(per_example, dtype=torch.bool))
        self.register_buffer("tuned", torch.tensor(tuned, dtype=torch.bool))
        # where sample draws ε from (set_generator); None: torch's global stream
        self._generator: torch.Generator | None = None

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Draw every perturbation from ``generator`` (on ``h``'s device): the engine gives each
        run its own, seeded alike on every rank and saved with its checkpoints, so ε follows
        neither the model's other randomness nor the number of processes. ``None``: torch's
        global stream."""
        self._generator = generator

    @property
    def size(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def sigma(self) -> Tensor:
        """Perturbation scale ``(H,)``; zero for hyperparameters that are not tuned."""
        return F.softplus(self.s) * self.tuned

    def center(self) -> Tensor:
        """``h`` with gradients only for tuned entries, shape ``(H,)``."""
        return torch.where(self.tuned, self.h, self.h.detach())

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Perturbed hyperparameters ``λ̃ = h + σ ⊙ ε``, shape ``(B, H)``.

        Per-example entries draw ε for each row; per-batch entries share one draw across the batch.
        Under torchrun, a ``batch_size`` that is this rank's slice of the step's global batch draws
        the global batch's ε and keeps the slice's rows (as :func:`~stnkit.distributed.batch_randn` does),
        so per-batch entries take one value per global batch, as in one process.
        ``generator``: default :meth:`set_generator`'s. Differentiable in ``h`` and ``s``; detach
        for weight steps.
        """
        h = self.center()
        rows = distributed.global_rows(batch_size)
        eps = torch.randn(rows.total, self.size, generator=generator or self._generator, device=h.device)
        shared = eps[:1].expand_as(eps)
        eps = torch.where(self.per_example, eps, shared)[rows.start : rows.stop]
        return h + self.sigma() * eps

    def expand(self, batch_size: int) -> Tensor:
        """The unperturbed centre repeated for a batch, shape ``(B, H)``."""
        return self.center().unsqueeze(0).expand(batch_size, self.size)

    def constrain(self, u: Tensor) -> Tensor:
        """Constrained values of unconstrained ``u``, same shape ``(..., H)``."""
        columns = [kind.constrain(u[..., i]) for i, kind in enumerate(self.kinds.values())]
        if not columns:
            return u
        return torch.stack(columns, dim=-1)

    def batch(self, u: Tensor, hnet: Tensor | None) -> HyperBatch:
        """Build the :class:`HyperBatch` for unconstrained hyperparameters ``u`` ``(B, H)``."""
        batch_size = u.shape[0]
        constrained = self.constrain(u)
        # a component receives what the kind produces: discrete kinds' values, not the continuous
        # relaxation behind them (which only the hypernetwork sees, through ``hnet``)
        values: dict[str, Tensor] = {
            name: kind.discretize(constrained[:, i]) if kind.discrete else constrained[:, i]
            for i, (name, kind) in enumerate(self.kinds.items())
        }
        for name, value in self.constants.items():
            values[name] = torch.full((batch_size,), value, device=u.device)
        return HyperBatch(hnet=hnet, values=values, kinds=self.kinds)

    def entropy(self) -> Tensor:
        """Entropy of the perturbation distribution up to a constant: ``Σ log σ`` over tuned entries."""
        sigma = F.softplus(self.s)
        return torch.log(sigma[self.tuned]).sum()

    @torch.no_grad()
    def clamp_scales(self, max_scale: float) -> None:
        """Hold every σ at or below ``max_scale``. Under Adam the entropy bonus moves ``s`` up by
        about one learning rate per hyper step whatever τ is, unless the validation gradient
        pushes back; this bound stops that drift (``perturbation.max_scale``)."""
        limit = _softplus_inverse(torch.tensor(float(max_scale), dtype=self.s.dtype, device=self.s.device))
        self.s.clamp_(max=limit)

    @torch.no_grad()
    def values(self) -> dict[str, float]:
        """Current constrained value of each declared hyperparameter (at ``h``)."""
        constrained = self.constrain(self.h.unsqueeze(0))[0]
        return {name: float(constrained[i]) for i, name in enumerate(self.names)}

    @torch.no_grad()
    def scales(self) -> dict[str, float]:
        """Current perturbation scale σ of each declared hyperparameter (unconstrained units)."""
        sigma = self.sigma()
        return {name: float(sigma[i]) for i, name in enumerate(self.names)}

    @torch.no_grad()
    def gradients(self) -> dict[str, float] | None:
        """The gradient ``h`` holds (the latest hyper step's, unconstrained units), or None."""
        grad = self.h.grad
        if grad is None:
            return None
        # one transfer for all entries: a hyper step on a GPU waits once, not once a name
        return dict(zip(self.names, grad.tolist(), strict=True))

    def set_values(self, values: Mapping[str, float]) -> None:
        """Move ``h`` so the constrained values equal ``values`` (used by schedules and replay)."""
        with torch.no_grad():
            for name, value in values.items():
                kind = self.kinds[name]
                target = torch.tensor(value, dtype=torch.float64)
                self.h[self.index(name)] = float(kind.unconstrain(target))
