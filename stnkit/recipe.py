"""Recipes: a whole experiment in one validated YAML file.

Validation has two stages. Stage 1 checks the recipe's own structure (:class:`Recipe`). Stage 2
(:func:`resolve`) looks each component up in its registry, validates the component's section
against its ``Config`` and cross-checks hyperparameter names against what components consume.
Every problem is collected and reported together as ``dotted.location: message``.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from stnkit.errors import Problem, RecipeError, UsageError

__all__ = [
    "ComponentSection",
    "LrDecayConfig",
    "OptimizerConfig",
    "PerturbationConfig",
    "Recipe",
    "StoreConfig",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "mark_overrides",
    "parse_recipe",
    "pydantic_problems",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentSection(BaseModel):
    """A recipe section naming a component; its other keys are the component's ``Config``."""

    model_config = ConfigDict(extra="allow")

    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    lr: float = Field(gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, description="plain L2 decay applied by the optimizer")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")


class PerturbationConfig(_Strict):
    init_scale: float = Field(0.5, gt=0, description="initial σ, in unconstrained units")
    tune: bool = Field(True, description="learn σ in hyper steps (entropy-regularised)")
    entropy_weight: float = Field(1e-3, ge=0, description="τ in val_loss − τ·entropy(σ)")


class LrDecayConfig(_Strict):
    factor: float = Field(0.25, gt=0, lt=1, description="multiply the lr by this on a plateau")
    patience: int = Field(0, ge=0, description="epochs without improvement before decaying")
    min_lr: float = Field(0.0, ge=0)


class TrainConfig(_Strict):
    epochs: int = Field(ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many weight steps")
    warmup_epochs: int = Field(0, ge=0)
    warmup_steps: int | None = Field(None, ge=0, description="overrides warmup_epochs")
    train_steps: int = Field(2, ge=1, description="weight steps per cycle (T_train)")
    hyper_steps: int = Field(1, ge=0, description="hyper steps per cycle (T_val)")
    optimizer: OptimizerConfig
    hyper_optimizer: OptimizerConfig = OptimizerConfig(name="adam", lr=0.003)
    perturbation: PerturbationConfig = PerturbationConfig()
    lr_decay: LrDecayConfig | None = None
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without improvement")
    log_every: int = Field(10, ge=1, description="weight steps per stored train-loss point")


class StoreConfig(_Strict):
    dir: Path = Path("runs")
    flush_seconds: float = Field(5.0, gt=0, description="flush the run file at least this often")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Recipe(_Strict):
    """A whole experiment. ``hyperparameters`` entries are validated per kind in stage 2."""

    name: str = Field(description="run name; used in the run file's name")
    description: str = ""
    seed: int = 0
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto")
    data: ComponentSection
    model: ComponentSection
    response: ComponentSection = ComponentSection(name="stn")
    objective: ComponentSection = ComponentSection(name="loss")
    augment: list[ComponentSection] = Field(default_factory=list)
    hyperparameters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    train: TrainConfig
    store: StoreConfig = StoreConfig()

    _base_dir: Path = PrivateAttr(default=Path("."))
    _source: str | None = PrivateAttr(default=None)
    _overridden: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                "must start with a letter or digit and use only letters, digits, '.', '_' and '-'"
            )
        return name

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the recipe resolve against (the recipe file's folder)."""
        return self._base_dir

    @property
    def overridden(self) -> tuple[str, ...]:
        """Dotted keys that ``--set`` overrides changed."""
        return self._overridden

    @property
    def source(self) -> str | None:
        """Path of the YAML file the recipe came from, if any."""
        return self._source

    def to_yaml(self) -> str:
        """The effective recipe (overrides applied) as YAML; stored in every run file."""
        data = self.model_dump(mode="json", exclude_defaults=False)
        return yaml.safe_dump(data, sort_keys=False)


# -- loading ------------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a recipe file safely; YAML errors become a one-line problem with the position."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"recipe file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read recipe {path}: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise RecipeError([(where, f"invalid YAML: {problem}")]) from None
    if data is None:
        raise RecipeError([(str(path), "the recipe is empty")])
    if not isinstance(data, dict):
        raise RecipeError([(str(path), f"a recipe must be a mapping, not {type(data).__name__}")])
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """Apply ``dotted.key=value`` overrides in place (values parsed as YAML); return the keys."""
    keys: list[str] = []
    problems: list[Problem] = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(("--set", f"{override!r} is not of the form dotted.key=value"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    problems.append((key, f"--set: {where} is not an index of a list of {len(node)}"))
                    break
                node = node[int(part)]
            elif isinstance(node, dict):
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                node = child
            else:
                problems.append((key, f"--set: {where} is a value, not a section"))
                break
        else:
            last = parts[-1]
            if isinstance(node, list):
                if not last.isdigit() or int(last) >= len(node):
                    problems.append((key, f"--set: {last} is not an index of a list of {len(node)}"))
                    continue
                node[int(last)] = value
            elif isinstance(node, dict):
                node[last] = value
            else:
                problems.append((key, "--set: the parent is a value, not a section"))
                continue
            keys.append(key)
    if problems:
        raise RecipeError(problems)
    return keys


def _clean_message(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def pydantic_problems(
    error: ValidationError,
    prefix: Iterable[str | int] = (),
    model: type[BaseModel] | None = None,
) -> list[Problem]:
    """One ``(dotted.location, message)`` per pydantic error, locations prefixed by ``prefix``.

    With ``model`` (the class that was validated), an unknown key gets a "did you mean" hint.
    """
    problems: list[Problem] = []
    prefix = tuple(prefix)
    for item in error.errors(include_url=False):
        loc = [str(p) for p in (*prefix, *item["loc"])]
        message = _clean_message(item["msg"])
        if item["type"] == "extra_forbidden":
            message = "unknown key"
            known = _known_keys(model, item["loc"][:-1]) if model is not None else []
            close = difflib.get_close_matches(str(item["loc"][-1]), known, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            elif known:
                message += f" (allowed: {', '.join(sorted(known))})"
        elif item["type"] == "missing":
            message = "required key is missing"
        problems.append((".".join(loc), message))
    return problems


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside an annotation such as ``X``, ``X | None`` or ``Optional[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _known_keys(model: type[BaseModel], path: Sequence[int | str]) -> list[str]:
    """Field names of the (nested) model reached by following ``path`` from ``model``."""
    current: type[BaseModel] | None = model
    for part in path:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return []
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def mark_overrides(problems: list[Problem], overridden: Sequence[str]) -> list[Problem]:
    marked: list[Problem] = []
    for loc, msg in problems:
        hit = any(loc == key or loc.startswith(key + ".") or key.startswith(loc + ".") for key in overridden)
        marked.append((loc, msg + " (from --set)" if hit else msg))
    return marked


def parse_recipe(
    data: Mapping[str, Any],
    base_dir: Path = Path("."),
    source: str | None = None,
    overridden: Sequence[str] = (),
) -> Recipe:
    """Stage 1: validate a recipe's structure. Raises :class:`RecipeError` listing every problem."""
    try:
        recipe = Recipe.model_validate(dict(data))
    except ValidationError as error:
        problems = pydantic_problems(error, model=Recipe)
        raise RecipeError(mark_overrides(problems, overridden)) from None
    recipe._base_dir = base_dir
    recipe._source = source
    recipe._overridden = tuple(overridden)
    return recipe


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read and validate a recipe's structure (stage 1) with ``--set`` style overrides applied.

    Component sections are checked by :func:`stnkit.build.resolve`, which :func:`stnkit.run` and
    ``stnkit validate`` call; use ``stnkit.validate_recipe`` for both stages at once.
    """
    path = Path(path)
    data = load_yaml(path)
    keys = apply_overrides(data, overrides)
    return parse_recipe(data, base_dir=path.resolve().parent, source=str(path), overridden=keys)
