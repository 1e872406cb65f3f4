"""A model's weights split into general (elementary) and response parts, each its own group.

Best-response layers stack their elementary and response weights in one parameter so that one
matmul computes both branches. A response model that updates the two parts with different
optimizers (Δ-STN) cannot hand such a parameter to either optimizer whole, so the split gives
each optimizer *views* — ``param.detach().select(dim, index)`` — that share the parameter's
storage: an optimizer updating a view in place updates that half of the parameter, and each
optimizer keeps its own state (momentum, Adam moments) for its half only. Views cannot receive
``.grad`` from autograd, so :meth:`ParameterGroup.collect_grads` hands each one its slice of the
parameter's gradient after a backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from stnkit.nn.base import BestResponse

__all__ = [
    "ParameterGroup",
    "ParameterSplit",
    "split_parameters",
    "zero_hyper_weights",
]


@dataclass(frozen=True)
class _Slice:
    """``target`` is what an optimizer steps: ``base`` itself (``dim`` None) or a view of it."""

    base: nn.Parameter
    target: Tensor
    dim: int | None
    index: int


@dataclass
class ParameterGroup:
    """The tensors one optimizer updates and the parameters their gradients come from."""

    slices: list[_Slice] = field(default_factory=list)

    @property
    def tensors(self) -> list[Tensor]:
        """What to pass to the optimizer (parameters or views of them)."""
        return [s.target for s in self.slices]

    @property
    def bases(self) -> list[nn.Parameter]:
        """The distinct parameters behind :attr:`tensors`: the ``inputs`` of a backward pass."""
        seen: dict[int, nn.Parameter] = {}
        for s in self.slices:
            seen.setdefault(id(s.base), s.base)
        return list(seen.values())

    def clear_grads(self) -> None:
        for s in self.slices:
            s.base.grad = None
            if s.dim is not None:
                s.target.grad = None

    def collect_grads(self) -> None:
        """Give every view the slice of its parameter's gradient (after ``backward``)."""
        for s in self.slices:
            if s.dim is None:
                continue
            grad = s.base.grad
            s.target.grad = None if grad is None else grad.select(s.dim, s.index)


@dataclass
class ParameterSplit:
    """``general``: elementary weights and every parameter outside best-response layers;
    ``response``: response weights and the hypernetwork maps ``V``."""

    general: ParameterGroup
    response: ParameterGroup
    hyper_weights: list[nn.Parameter]


def split_parameters(model: nn.Module) -> ParameterSplit:
    """Split ``model``'s parameters (see the module docstring). A parameter shared by several
    modules is counted once, where it is first met."""
    general, response = ParameterGroup(), ParameterGroup()
    hyper: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        layer = module if isinstance(module, BestResponse) and module.has_response else None
        hyper_names = set(layer.hyper_parameter_names()) if layer is not None else set()
        stacked = layer.stacked_parameters if layer is not None else {}
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if name in hyper_names:
                response.slices.append(_Slice(param, param, None, 0))
                hyper.append(param)
            elif name in stacked:
                dim = stacked[name]
                if param.shape[dim] != 2:
                    raise ValueError(
                        f"{type(module).__name__}.{name} should stack 2 parts along dimension {dim}, "
                        f"has shape {tuple(param.shape)}"
                    )
                flat = param.detach()
                general.slices.append(_Slice(param, flat.select(dim, 0), dim, 0))
                response.slices.append(_Slice(param, flat.select(dim, 1), dim, 1))
            else:
                general.slices.append(_Slice(param, param, None, 0))
    return ParameterSplit(general, response, hyper)


def _hyper_weights(model: nn.Module) -> list[Tensor]:
    """Every best-response layer's ``V`` tensors, in module order."""
    return [
        getattr(module, name)
        for module in model.modules()
        if isinstance(module, BestResponse) and module.has_response
        for name in module.hyper_parameter_names()
    ]


@torch.no_grad()
def zero_hyper_weights(model: nn.Module) -> int:
    """Set every best-response layer's ``V`` to exactly zero; returns how many were set."""
    weights = _hyper_weights(model)
    for weight in weights:
        weight.zero_()
    return len(weights)
