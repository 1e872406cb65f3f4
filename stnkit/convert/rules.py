"""Which hyperparameter drives which dropout module and decays which parameters (name rules)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from fnmatch import fnmatchcase

from stnkit.convert.spec import ConvertSpec, dropout_rule_part, is_dropout_name, is_weight_decay_name
from stnkit.errors import ConvertError

__all__ = ["assign_dropouts", "assign_weight_decay", "matches"]


def matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(path, pattern) for pattern in patterns)


def _explicit(
    rules: Mapping[str, Sequence[str]],
    candidates: Sequence[str],
    section: str,
    hyperparameters: Collection[str],
) -> dict[str, list[str]]:
    claimed: dict[str, list[str]] = {}
    for name, patterns in rules.items():
        if name not in hyperparameters:
            raise ConvertError(
                f"{section} names {name!r}, which is not among the hyperparameters "
                f"({', '.join(sorted(hyperparameters)) or 'none'})",
                location=f"{section}.{name}",
            )
        chosen: list[str] = []
        for pattern in patterns:
            found = [c for c in candidates if fnmatchcase(c, pattern)]
            if not found:
                raise ConvertError(
                    f"{section} pattern {pattern!r} of {name!r} matches nothing; "
                    f"{'dropout modules' if section == 'dropout' else 'parameters'}: "
                    f"{', '.join(candidates) or 'none'}",
                    location=f"{section}.{name}",
                )
            chosen.extend(c for c in found if c not in chosen)
        # in module order, whatever the order of the patterns
        claimed[name] = [c for c in candidates if c in chosen]
    return claimed


def assign_dropouts(
    spec: ConvertSpec, sites: Sequence[str], hyperparameters: Collection[str]
) -> dict[str, list[str]]:
    """Hyperparameter → the dropout module paths it drives: the spec's patterns, then the
    default name rules (``<part>_dropout``, then ``dropout`` for what is left)."""
    claimed = _explicit(spec.dropout, sites, "dropout", hyperparameters)
    owner: dict[str, str] = {}
    for name, paths in claimed.items():
        for path in paths:
            if path in owner:
                raise ConvertError(
                    f"dropout module {path!r} is claimed by both {owner[path]!r} and {name!r}",
                    location=f"dropout.{name}",
                )
            owner[path] = name
    defaults = [
        n
        for n in hyperparameters
        if n not in spec.dropout and n not in spec.weight_decay and is_dropout_name(n)
    ]
    for name in sorted(defaults):
        part = dropout_rule_part(name)
        if part is None:
            continue
        paths = [p for p in sites if part in p and p not in owner]
        for path in paths:
            other = next((n for n, ps in claimed.items() if path in ps and n in defaults), None)
            if other is not None:
                raise ConvertError(
                    f"dropout module {path!r} matches the default rules of both {other!r} and {name!r}: "
                    "say which drives it with explicit dropout patterns",
                    location=f"hyperparameters.{name}",
                )
        claimed[name] = paths
    if "dropout" in defaults:
        taken = {p for n, ps in claimed.items() for p in ps}
        claimed["dropout"] = [p for p in sites if p not in taken]
    return claimed


def assign_weight_decay(
    spec: ConvertSpec,
    parameters: Sequence[str],
    decayable: Collection[str],
    hyperparameters: Collection[str],
) -> dict[str, list[str]]:
    """Hyperparameter → the (original) parameter names it decays: the spec's patterns, then the
    default rules over ``decayable`` (no biases, no normalization parameters)."""
    claimed = _explicit(spec.weight_decay, parameters, "weight_decay", hyperparameters)
    defaults = [
        n
        for n in hyperparameters
        if n not in spec.dropout and n not in spec.weight_decay and is_weight_decay_name(n)
    ]
    taken: set[str] = set()
    for name in sorted(defaults):
        if name == "weight_decay":
            continue
        part = name[: -len("_weight_decay")]
        claimed[name] = [p for p in parameters if p in decayable and part in p]
        taken.update(claimed[name])
    if "weight_decay" in defaults:
        claimed["weight_decay"] = [p for p in parameters if p in decayable and p not in taken]
    return claimed
