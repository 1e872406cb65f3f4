"""``convert_module``: any torch module to best-response form, in place, by name patterns."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from stnkit.config import HyperparameterUse
from stnkit.convert.context import HyperContext
from stnkit.convert.converters import (
    COMPOSITES,
    UNSUPPORTED,
    UnsupportedLayerError,
    converter_for,
    dropout_converter,
)
from stnkit.convert.functional import DropoutCallWatch, find_functional_dropout
from stnkit.convert.layers import ConvertedDropout, ConvertedLayer
from stnkit.convert.report import ConversionReport, ReportRow
from stnkit.convert.rules import assign_dropouts, assign_weight_decay, matches
from stnkit.convert.spec import ConvertSpec, is_dropout_name, is_weight_decay_name
from stnkit.errors import ConvertError
from stnkit.hyper.space import HyperBatch
from stnkit.model import ModelOutput, StnModel

__all__ = ["Conversion", "ConvertedModel", "convert_in_place", "convert_module"]

_NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


@dataclass
class Conversion:
    """What :func:`convert_in_place` did and what the converted model needs at run time.

    ``decay``: hyperparameter → ``(module path, attribute)`` of each parameter it decays, in the
    converted module; ``uses``: the hyperparameters the conversion consumes.
    """

    context: HyperContext
    n_hyper: int
    report: ConversionReport
    decay: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    uses: dict[str, HyperparameterUse] = field(default_factory=dict)
    #: a dropout rate is among the hyperparameters: a functional dropout would go untuned
    tunes_dropout: bool = False


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _describe(module: nn.Module) -> str:
    return type(module).__name__


def _set_child(root: nn.Module, path: str, new: nn.Module, undo: list[tuple[str, nn.Module]]) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    undo.append((path, getattr(parent, name)))
    setattr(parent, name, new)


def _check_not_converted(module: nn.Module) -> None:
    if hasattr(module, "_stnkit_context"):
        raise ConvertError("the module is already converted: convert the original module once")
    for path, sub in module.named_modules():
        if isinstance(sub, ConvertedLayer | ConvertedModel):
            where = f" (at {path!r})" if path else ""
            raise ConvertError(f"the module is already converted{where}: convert the original module once")


def _shared_parameters(module: nn.Module) -> dict[int, list[str]]:
    """Parameter id → the names it has, for parameters with several (tied weights)."""
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {key: value for key, value in names.items() if len(value) > 1}


def convert_in_place(
    module: nn.Module,
    spec: ConvertSpec,
    n_hyper: int,
    hyperparameters: Collection[str],
    strict: bool = True,
) -> Conversion:
    """Swap ``module``'s layers for converted ones (see :func:`convert_module`).

    ``strict``: a hyperparameter that nothing consumes is an error; without it such a name is
    left out of :attr:`Conversion.uses` (a recipe reports it, since another component may use it).
    On an error the module is left as it was, so a corrected spec can convert it.
    """
    undo: list[tuple[str, nn.Module]] = []
    nested = {id(m): m.use_nested_tensor for m in module.modules() if isinstance(m, nn.TransformerEncoder)}
    try:
        return _convert(module, spec, n_hyper, hyperparameters, strict, undo)
    except BaseException:
        for path, original in reversed(undo):
            parent_path, _, name = path.rpartition(".")
            setattr(module.get_submodule(parent_path) if parent_path else module, name, original)
        for sub in module.modules():
            if isinstance(sub, nn.TransformerEncoder) and id(sub) in nested:
                sub.use_nested_tensor = nested[id(sub)]
        raise


def _convert(
    module: nn.Module,
    spec: ConvertSpec,
    n_hyper: int,
    hyperparameters: Collection[str],
    strict: bool,
    undo: list[tuple[str, nn.Module]],
) -> Conversion:
    if not isinstance(module, nn.Module):
        raise ConvertError(f"only a torch nn.Module can be converted, not {type(module).__name__}")
    if isinstance(module, ConvertedModel):
        raise ConvertError("the module is already converted: convert the original module once")
    _check_not_converted(module)
    context = HyperContext()
    names = list(dict.fromkeys(hyperparameters))
    originals = dict(module.named_modules())
    shared = _shared_parameters(module)
    original_parameters = [name for name, _ in module.named_parameters()]
    norm_owned = {
        f"{path}.{name}" if path else name
        for path, sub in originals.items()
        if isinstance(sub, _NORMS)
        for name, _ in sub.named_parameters(recurse=False)
    }
    decayable = {
        name
        for name in original_parameters
        if not name.rpartition(".")[2].endswith("bias") and name not in norm_owned
    }

    for pattern in [*spec.targets, *spec.exclude]:
        if pattern == "*":
            continue  # the default: a module with nothing to convert is reported below
        if not any(matches(path, [pattern]) for path in originals if path):
            where = "targets" if pattern in spec.targets else "exclude"
            raise ConvertError(
                f"{where} pattern {pattern!r} matches no module; modules: "
                f"{', '.join(p for p in originals if p)}",
                location=where,
            )

    def excluded(path: str) -> bool:
        return _in_patterns(path, spec.exclude)

    def targeted(path: str) -> bool:
        return _in_patterns(path, spec.targets)

    report = ConversionReport()
    origins: dict[str, tuple[str, str]] = {}
    done: list[str] = []
    sites: dict[str, tuple[nn.Module, bool]] = {}  # dropout path -> (module, already converted)
    for path, sub in originals.items():
        if not path or any(path.startswith(d + ".") for d in done) or excluded(path):
            continue
        drop = dropout_converter(sub)
        if drop is not None:
            sites[path] = (sub, False)
            continue
        converter = converter_for(sub)
        if converter is None:
            if isinstance(sub, UNSUPPORTED) and targeted(path):
                raise ConvertError(
                    f"{path!r} is a {type(sub).__name__}, which conversion cannot turn into "
                    "best-response form: exclude it (convert: exclude) or narrow the targets",
                    location="targets",
                )
            continue
        inside = [p for p in originals if p.startswith(path + ".")]
        if not targeted(path) and not (isinstance(sub, COMPOSITES) and any(targeted(p) for p in inside)):
            continue
        for tied in shared.values():
            mine = [n for n in tied if n.startswith(path + ".")]
            if mine and len(mine) < len(tied):
                raise ConvertError(
                    f"{path!r} shares a parameter with another module ({', '.join(tied)}: tied "
                    "weights); conversion would untie them: exclude both from conversion",
                    location="targets",
                )
        try:
            converted = converter(sub, n_hyper)
        except UnsupportedLayerError as error:
            raise ConvertError(
                f"{path!r} ({type(sub).__name__}) cannot be converted: {error}; exclude it "
                "(convert: exclude) or narrow the targets",
                location="targets",
            ) from None
        new = converted.module
        new.train(sub.training)
        _set_child(module, path, new, undo)
        done.append(path)
        report.rows.append(ReportRow(path, _describe(sub), _describe(new), _count(sub), _count(new)))
        for local, (relative, attribute) in converted.origins.items():
            origins[f"{path}.{local}"] = (f"{path}.{relative}" if relative else path, attribute)
        for inner_path, inner in new.named_modules():
            if isinstance(inner, ConvertedDropout):
                sites[f"{path}.{inner_path}"] = (inner, True)
        for inner_path, inner in new.named_modules():
            if isinstance(inner, ConvertedLayer):
                inner.bind(
                    f"{path}.{inner_path}" if inner_path else path, context, getattr(inner, "batch_dim", 0)
                )

    for sub in module.modules():
        if isinstance(sub, nn.TransformerEncoder):
            # its nested-tensor fast path calls torch's fused kernel on the layers' weights
            sub.use_nested_tensor = False
    for name in original_parameters:
        if name not in origins:
            owner, _, attribute = name.rpartition(".")
            origins[name] = (owner, attribute)

    dropout_names = assign_dropouts(spec, list(sites), names)
    decay_names = assign_weight_decay(spec, original_parameters, decayable, names)

    uses: dict[str, HyperparameterUse] = {}
    for hp, paths in dropout_names.items():
        if not paths:
            continue
        for site in paths:
            sub, is_converted = sites[site]
            if is_converted:
                assert isinstance(sub, ConvertedDropout)
                sub.hyperparameter = hp
                continue
            made = dropout_converter(sub)
            assert made is not None
            new = made(sub, 0).module
            assert isinstance(new, ConvertedDropout)
            new.hyperparameter = hp
            new.train(sub.training)
            new.bind(site, context)
            _set_child(module, site, new, undo)
            report.rows.append(ReportRow(site, _describe(sub), f"ConvertedDropout({hp})", 0, 0))
        uses[hp] = HyperparameterUse(
            f"dropout rate of {', '.join(paths)}", low=0.0, high=1.0, continuous=True
        )
        report.dropout[hp] = list(paths)
    decay: dict[str, list[tuple[str, str]]] = {}
    for hp, params in decay_names.items():
        if not params:
            continue
        decay[hp] = [origins[p] for p in params]
        uses.setdefault(hp, HyperparameterUse(f"weight decay on {', '.join(params)}", low=0.0))
        report.weight_decay[hp] = list(params)

    if not report.rows:
        raise ConvertError(
            "nothing to convert: no nn.Linear, nn.Conv1d/Conv2d, nn.Embedding, nn.LSTM, "
            "nn.MultiheadAttention or nn.TransformerEncoderLayer among the targeted modules "
            f"(targets: {', '.join(spec.targets)}; exclude: {', '.join(spec.exclude) or 'none'})",
            location="targets",
        )
    functional = find_functional_dropout(module)
    if functional is not None and any(is_dropout_name(n) for n in names):
        raise ConvertError(
            f"{functional}: conversion cannot drive a functional dropout by a hyperparameter; make "
            "it a module (self.drop = nn.Dropout(p) ... self.drop(x)) so conversion can swap it"
        )
    unused = [n for n in names if n not in uses]
    if strict and unused:
        name = unused[0]
        rule = (
            "a dropout rule"
            if is_dropout_name(name)
            else "a weight-decay rule"
            if is_weight_decay_name(name)
            else "no rule"
        )
        raise ConvertError(
            f"no module or penalty consumes hyperparameter {name!r} ({rule} by its name; see "
            f"ConvertSpec): dropout modules: {', '.join(sites) or 'none'}; parameters: "
            f"{', '.join(original_parameters)}",
            location=f"hyperparameters.{name}",
        )
    module._stnkit_context = context  # type: ignore[assignment]
    return Conversion(
        context=context,
        n_hyper=n_hyper,
        report=report,
        decay=decay,
        uses=uses,
        tunes_dropout=any(is_dropout_name(n) for n in names) or bool(spec.dropout),
    )


def _in_patterns(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` or a module above it matches one of ``patterns``."""
    parts = path.split(".")
    return any(matches(".".join(parts[: i + 1]), patterns) for i in range(len(parts)))


def _call(module: nn.Module, inputs: Any) -> Tensor:
    if isinstance(inputs, Tensor):
        return module(inputs)  # type: ignore[no-any-return]
    if isinstance(inputs, Mapping):
        return module(**inputs)  # type: ignore[no-any-return]
    if isinstance(inputs, tuple | list):
        return module(*inputs)  # type: ignore[no-any-return]
    return module(inputs)  # type: ignore[no-any-return]


class ConvertedModel(StnModel):
    """A converted torch module as an :class:`~stnkit.model.StnModel`.

    ``module`` is the user's module, its class and ``forward`` unchanged, with its layers
    swapped. ``forward(inputs, hp)`` sets ``hp.hnet`` and ``hp.values`` in the context the
    converted layers read, calls ``module(inputs)`` (``module(*inputs)`` for a tuple,
    ``module(**inputs)`` for a dict) and, in training mode, adds the weight-decay penalty:
    the batch mean of ``Σ_hp value × Σ‖effective weight‖²`` over each hyperparameter's parameters.
    """

    def __init__(self, module: nn.Module, conversion: Conversion) -> None:
        nn.Module.__init__(self)
        self.config = None
        self.data = None  # type: ignore[assignment]  # a converted module needs no DataInfo
        self.n_hyper = conversion.n_hyper
        self.module = module
        self.context = conversion.context
        self.report = conversion.report
        self.decay = conversion.decay
        self._uses = conversion.uses
        # the first training forward watches for functional dropout calls the source check missed
        self._watch_dropout_calls = conversion.tunes_dropout

    #: a built-in model first written by hand sets this: its run files' checkpoints name the
    #: layers at the top level (``layers.0.weight``), not under ``module.``
    accept_unprefixed_keys: ClassVar[bool] = False

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        if self.accept_unprefixed_keys:
            inner = prefix + "module."
            for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
                state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def consumed(self) -> dict[str, HyperparameterUse]:
        """The hyperparameters this model consumes and how."""
        return dict(self._uses)

    def forward(self, inputs: Any, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        with self.context.use(hp.hnet, hp.values):
            if self._watch_dropout_calls and self.training:
                prediction = self._watched_call(inputs)
            else:
                prediction = _call(self.module, inputs)
        penalty = self.penalty(hp) if self.training and self.decay else None
        return ModelOutput(prediction, penalty)

    def _watched_call(self, inputs: Any) -> Tensor:
        watch = DropoutCallWatch()
        with watch:
            prediction = _call(self.module, inputs)
        self._watch_dropout_calls = False
        if watch.found is not None:
            raise ConvertError(
                f"{watch.found} in the model's forward: conversion cannot drive a functional "
                "dropout by a hyperparameter; make it a module (self.drop = nn.Dropout(p) ... "
                "self.drop(x)) so conversion can swap it"
            )
        return prediction

    def penalty(self, hp: HyperBatch) -> Tensor:
        """``mean_b Σ_hp value_b × Σ‖effective weight‖²`` (a scalar)."""
        total: Tensor | None = None
        for name, places in self.decay.items():
            term = (hp[name] * _sum_norms(self.module, places, hp.hnet)).mean()
            total = term if total is None else total + term
        assert total is not None
        return total


def _sum_norms(module: nn.Module, places: list[tuple[str, str]], hnet: Tensor | None) -> Tensor:
    """``Σ‖effective weight‖²`` over ``places``: ``(B,)``, or a scalar when no norm has a batch."""
    norms = [_sq_norm(module, path, attribute, hnet) for path, attribute in places]
    shape = max((n.shape for n in norms), key=len)  # a scalar or (B,): the longest broadcasts
    return torch.stack([n.expand(shape) for n in norms]).sum(dim=0)


def _sq_norm(root: nn.Module, path: str, attribute: str, hnet: Tensor | None) -> Tensor:
    owner = root.get_submodule(path) if path else root
    if isinstance(owner, ConvertedLayer):
        return owner.sq_norm(attribute, hnet)
    param: Tensor = getattr(owner, attribute)
    return (param * param).sum()


def convert_module(
    module: nn.Module, spec: ConvertSpec, n_hyper: int, hyperparameters: Collection[str]
) -> ConvertedModel:
    """Convert ``module`` in place to best-response form and wrap it as a :class:`ConvertedModel`.

    Supported layers among ``spec.targets`` (less ``spec.exclude``) become best-response layers
    that start from the module's own weights (``n_hyper`` is the hypernetwork input width ``H``;
    0 builds the plain one-stack layers of the ``fixed`` response); dropout modules are driven
    by the hyperparameters ``spec.dropout`` and the default name rules assign them (see
    :class:`ConvertSpec`); ``spec.weight_decay`` and the rules choose the decayed parameters.
    Raises :class:`~stnkit.errors.ConvertError` when there is nothing to convert, a targeted
    layer cannot be converted, a pattern matches nothing, a hyperparameter is consumed by
    nothing, ``forward`` calls a functional dropout, or the module is converted already.
    """
    conversion = convert_in_place(module, spec, n_hyper, hyperparameters, strict=True)
    return ConvertedModel(module, conversion)
