"""``stnkit plugins NAME``: a component's options and the hyperparameters it consumes, from its classes.

Everything shown is read from the registered class — its ``Config`` fields (type, default,
constraints, description) and its ``hyperparameters`` declarations — so a recipe author needs no
source and the description cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stnkit.config import HyperparameterUse
from stnkit.errors import UsageError
from stnkit.plugins import REGISTRATION_HOOKS, Plugins
from stnkit.registry import Entry, Registry

__all__ = ["describe", "describe_component", "field_rows", "format_range", "render_components"]

#: registry attribute → where a recipe names such a component
SECTIONS: dict[str, str] = {
    "kinds": "hyperparameters.<name>: {kind: NAME, ...}",
    "responses": "response: {name: NAME, ...}",
    "models": "model: {name: NAME, ...}",
    "objectives": "objective: {name: NAME, ...}",
    "augmentations": "augment: [{name: NAME, ...}]",
    "datasets": "data: {name: NAME, ...}",
    "observers": "observers: {NAME: {...}}",
}


def _type_name(annotation: Any) -> str:
    """A readable type: ``float``, ``int | None``, ``Literal['a', 'b']``, ``list[int]``."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("multiple_of", "multiple of"))


def _constraints(info: FieldInfo) -> list[str]:
    out: list[str] = []
    for item in info.metadata:
        for attribute, word in _BOUNDS:
            value = getattr(item, attribute, None)
            if value is not None:
                out.append(f"{word} {value}")
        for attribute in ("min_length", "max_length"):
            value = getattr(item, attribute, None)
            if value is not None:
                out.append(f"{attribute.replace('_', ' ')} {value}")
    return out


def field_rows(config: type[BaseModel]) -> list[dict[str, Any]]:
    """One entry per ``Config`` field: name, type, required, default, constraints, description."""
    rows: list[dict[str, Any]] = []
    for name, info in config.model_fields.items():
        required = info.is_required()
        default: Any = None
        if not required:
            if info.default_factory is not None:
                default = info.default_factory()  # type: ignore[call-arg]
            elif info.default is not PydanticUndefined:
                default = info.default
        rows.append(
            {
                "name": info.alias or name,
                "type": _type_name(info.annotation),
                "required": required,
                "default": to_jsonable_python(default, fallback=str),
                "constraints": _constraints(info),
                "description": info.description or "",
            }
        )
    return rows


def format_range(low: float, high: float) -> str:
    """``[0, 1]``, ``[0, inf)``, ``(-inf, inf)``: the closed range a consumer accepts."""
    left = "(-inf" if math.isinf(low) else f"[{low:g}"
    right = "inf)" if math.isinf(high) else f"{high:g}]"
    return f"{left}, {right}"


def _json_number(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


def _hyperparameter_rows(cls: type[Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    uses: dict[str, HyperparameterUse] = getattr(cls, "hyperparameters", None) or {}
    for name, use in uses.items():
        # every field of the declaration, so a field added to HyperparameterUse shows up by itself
        entry: dict[str, Any] = {"name": name}
        fields = dataclasses.asdict(use)
        for key, value in fields.items():
            entry[key] = _json_number(value) if isinstance(value, float) else value
        entry["accepts"] = format_range(use.low, use.high)
        rows.append(entry)
    return rows


def _summary(cls: type[Any]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def describe_component(plugins: Plugins, attribute: str, entry: Entry[Any]) -> dict[str, Any]:
    """What ``stnkit plugins NAME --json`` prints for one component."""
    word = REGISTRATION_HOOKS_WORDS[attribute]
    record = plugins.loaded.get(entry.plugin)
    cls = entry.cls
    described: dict[str, Any] = {
        "name": entry.name,
        "type": word,
        "plugin": entry.plugin,
        "distribution": record.distribution if record else None,
        "version": record.version if record else None,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "summary": _summary(cls),
        "recipe": SECTIONS[attribute].replace("NAME", entry.name),
        "options": field_rows(cls.Config),
    }
    if attribute == "kinds":
        described["integer"] = bool(getattr(cls, "integer", False))
    else:
        described["hyperparameters"] = _hyperparameter_rows(cls)
    return described


REGISTRATION_HOOKS_WORDS: dict[str, str] = {
    attribute: word for attribute, word in REGISTRATION_HOOKS.values()
}


def _registries(plugins: Plugins) -> list[tuple[str, Registry[Any]]]:
    return [(attribute, getattr(plugins, attribute)) for attribute in REGISTRATION_HOOKS_WORDS]


def describe(plugins: Plugins, name: str) -> list[dict[str, Any]]:
    """Every component called ``name`` (a model and a data set may share one), or, when ``name``
    is a plugin's, every component that plugin registers. Unknown: a "did you mean" error."""
    found = [
        describe_component(plugins, attribute, registry.entry(name))
        for attribute, registry in _registries(plugins)
        if name in registry
    ]
    if found:
        return found
    if name in plugins.loaded:
        return [
            describe_component(plugins, attribute, entry)
            for attribute, registry in _registries(plugins)
            for entry in registry.entries()
            if entry.plugin == name
        ]
    components = sorted({n for _, registry in _registries(plugins) for n in registry})
    message = f"no component or plugin is named {name!r}"
    close = difflib.get_close_matches(name, components + sorted(plugins.loaded), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {close[0]!r}?"
    message += f" (components: {', '.join(components)}; `stnkit plugins` lists the plugins)"
    raise UsageError(message)


def _default_text(row: dict[str, Any]) -> str:
    if row["required"]:
        return "required"
    default = row["default"]
    return "none" if default is None else str(default)


def _render_one(component: dict[str, Any]) -> list[RenderableType]:
    dist = component["distribution"]
    source = f"plugin {component['plugin']}" + (f", {dist} {component['version']}" if dist else "")
    parts: list[RenderableType] = [
        Text.assemble((f"{component['type']} {component['name']}", "bold"), f"  ({source})"),
    ]
    if component["summary"]:
        parts.append(Text(component["summary"]))
    parts.append(Text(f"in a recipe: {component['recipe']}", style="dim"))
    if component["options"]:
        options = Table(title="options", title_justify="left", header_style="bold")
        for column in ("option", "type", "default", "constraints", "description"):
            options.add_column(column, overflow="fold")
        for row in component["options"]:
            options.add_row(
                row["name"],
                row["type"],
                _default_text(row),
                ", ".join(row["constraints"]),
                row["description"],
            )
        parts.append(options)
    else:
        parts.append(Text("options: none"))
    if component["type"] == "hyperparameter kind":
        discrete = "a discrete kind: components receive whole numbers" if component["integer"] else ""
        if discrete:
            parts.append(Text(discrete))
        return parts
    uses = component["hyperparameters"]
    if uses:
        table = Table(title="hyperparameters consumed", title_justify="left", header_style="bold")
        for column in ("hyperparameter", "accepts", "if undeclared", "needs", "description"):
            table.add_column(column, overflow="fold")
        for use in uses:
            needs = []
            if use.get("integer"):
                needs.append("an integer kind")
            if use.get("per_batch"):
                needs.append("per_example: false")
            default = use["default"]
            table.add_row(
                use["name"],
                use["accepts"],
                "must be declared" if default is None else f"fixed at {default:g}",
                ", ".join(needs),
                use["description"],
            )
        parts.append(table)
    else:
        parts.append(Text("hyperparameters consumed: none"))
    return parts


def render_components(components: list[dict[str, Any]]) -> RenderableType:
    """The plain ``stnkit plugins NAME`` view: per component, its options and hyperparameters."""
    parts: list[RenderableType] = []
    for i, component in enumerate(components):
        if i:
            parts.append(Text(""))
        parts.extend(_render_one(component))
    return Group(*parts)
