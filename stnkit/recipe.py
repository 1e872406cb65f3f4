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
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stnkit.config import refuse_bool_number
from stnkit.errors import Problem, RecipeError, UsageError
from stnkit.killpoints import signal_point
from stnkit.retired import retired_problems

__all__ = [
    "MAX_NAME",
    "MAX_STEPS",
    "ComponentSection",
    "DistributedConfig",
    "LrDecayConfig",
    "OptimizerConfig",
    "PerturbationConfig",
    "Recipe",
    "RunConfig",
    "StoreConfig",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "mark_overrides",
    "parse_recipe",
    "pydantic_problems",
]


class _Strict(BaseModel):
    # allow_inf_nan=False: YAML's .inf/.nan (or "inf") would otherwise pass `gt=0` and similar
    # bounds — an infinite lr or clip only shows up later as a diverged, half-written run file.
    # validate_assignment: a recipe edited in Python (`recipe.train.epochs = 0`) is checked as
    # a loaded one is, at the assignment.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_number(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_bool_number(cls, value, info)

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise RecipeError(pydantic_problems(error, model=type(self))) from None


class ComponentSection(BaseModel):
    """A recipe section naming a component; its other keys are the component's ``Config``."""

    model_config = ConfigDict(extra="allow")

    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


_Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    lr: float = Field(gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0, description="plain L2 decay applied by the optimizer")
    # bounded like torch's own check, so the recipe, not the optimizer's constructor, reports it
    betas: tuple[_Beta, _Beta] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")

    @model_validator(mode="after")
    def _check_nesterov(self) -> OptimizerConfig:
        # torch.optim.SGD refuses nesterov without momentum only when it is built, and the other
        # optimizers would silently ignore the option
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs name 'sgd' and a momentum above 0")
        return self


class PerturbationConfig(_Strict):
    init_scale: float = Field(0.5, gt=0, description="initial σ, in unconstrained units")
    tune: bool = Field(True, description="learn σ in hyper steps (entropy-regularised)")
    entropy_weight: float = Field(1e-3, ge=0, description="τ in val_loss − τ·entropy(σ)")
    max_scale: float | None = Field(
        None, gt=0, description="upper bound on every σ, applied after each hyper step (none: unbounded)"
    )

    @model_validator(mode="after")
    def _check_bound(self) -> PerturbationConfig:
        if self.max_scale is not None and self.init_scale > self.max_scale:
            raise ValueError(f"init_scale ({self.init_scale}) is above max_scale ({self.max_scale})")
        return self


class LrDecayConfig(_Strict):
    """When the weight optimizer's learning rate is multiplied by ``factor`` (after an epoch).

    ``plateau``: once the validation loss has not improved for more than ``patience`` epochs
    (then the count restarts). ``nonmonotone`` (the released STN code's rule, from AWD-LSTM's
    NT-ASGD trigger): when the epoch's validation loss is above the minimum over all past
    epochs except the last ``window`` ones (so only once more than ``window`` epochs are done).
    ``stop_below`` ends the run (status completed, test at the best epoch) once the lr is below it.
    """

    rule: Literal["plateau", "nonmonotone"] = "plateau"
    factor: float = Field(0.25, gt=0, lt=1, description="multiply the lr by this when the rule fires")
    patience: int | None = Field(
        None, ge=0, description="plateau: epochs without improvement before decaying (default 0)"
    )
    window: int | None = Field(
        None, ge=1, description="nonmonotone: the latest epochs left out of the minimum (default 5)"
    )
    min_lr: float = Field(0.0, ge=0, description="never decay below this")
    stop_below: float | None = Field(None, gt=0, description="end the run once the lr is below this")

    @model_validator(mode="after")
    def _check_rule_options(self) -> LrDecayConfig:
        own, other = ("patience", "window") if self.rule == "plateau" else ("window", "patience")
        if getattr(self, other) is not None:
            raise ValueError(f"{other} is not an option of rule {self.rule!r} (it takes {own})")
        # defaults filled in place, not by assignment: that would validate this model again
        if self.patience is None and self.rule == "plateau":
            self.__dict__["patience"] = 0
        if self.window is None and self.rule == "nonmonotone":
            self.__dict__["window"] = 5
        if self.stop_below is not None and self.stop_below <= self.min_lr:
            raise ValueError(
                f"stop_below ({self.stop_below}) must be above min_lr ({self.min_lr}), "
                "or the run could never stop by it"
            )
        return self


class DistributedConfig(_Strict):
    """How ranks talk under ``torchrun`` (ignored in a plain single-process run)."""

    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="auto: nccl on CUDA, gloo on the CPU"
    )


MAX_STEPS = 10**9
"""The most weight steps (and epochs, hyper steps per cycle...) a recipe may ask for: far beyond
any run that can finish, and small enough that sizes and counts derived from it stay exact."""


class TrainConfig(_Strict):
    epochs: int = Field(ge=1, le=MAX_STEPS)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="stop after this many weight steps")
    warmup_epochs: int = Field(
        0, ge=0, le=MAX_STEPS, description="epochs of weight steps alone before hyper steps start"
    )
    train_steps: int = Field(2, ge=1, le=MAX_STEPS, description="weight steps per cycle (T_train)")
    hyper_steps: int = Field(1, ge=0, le=MAX_STEPS, description="hyper steps per cycle (T_val)")
    optimizer: OptimizerConfig
    hyper_optimizer: OptimizerConfig = OptimizerConfig(name="adam", lr=0.003)
    # cosine by default: under a constant rate a weight decay tuned towards a known ridge optimum
    # keeps swinging to the end of the run (Δ-STN across orders of magnitude), since every hyper
    # step stays as large as the first while the hypergradient near the optimum is mostly noise
    hyper_lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "cosine",
        description="hyper_optimizer's lr over the run's planned hyper steps: decaying from lr to 0 "
        "(cosine, the default, or linear), so that the hyperparameters settle by the end of the "
        "run, or constant",
    )
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant",
        description="optimizer's lr over the run's planned weight steps: constant (then lr_decay "
        "may lower it), or decaying from lr to 0 (cosine or linear), set by the step count alone",
    )
    response_optimizer: OptimizerConfig | None = Field(
        None,
        description="delta-stn: optimizer of the response weights and V (none: optimizer's settings "
        "at a tenth of its lr)",
    )
    scale_optimizer: OptimizerConfig | None = Field(
        None,
        description="a separate optimizer for the perturbation scales s (none: delta-stn uses "
        "hyper_optimizer's settings, stn optimizes s jointly with h)",
    )
    perturbation: PerturbationConfig = PerturbationConfig()
    lr_decay: LrDecayConfig | None = None
    patience: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="stop after this many epochs without improvement"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast dtype of forward passes (fp16 adds a gradient scaler; CUDA only)"
    )
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def _one_lr_rule(self) -> TrainConfig:
        # two rules moving one lr would make neither's figures mean what its docs say
        if self.lr_schedule != "constant" and self.lr_decay is not None:
            raise ValueError(
                f"lr_schedule {self.lr_schedule!r} and lr_decay both set the weight lr: keep one "
                "(lr_decay: null, or lr_schedule: constant)"
            )
        return self


class StoreConfig(_Strict):
    dir: Path = Path("runs")
    checkpoints: bool = Field(True, description="save resumable checkpoints in the run file")
    checkpoint_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="also checkpoint mid-epoch every N weight steps"
    )


class RunConfig(_Strict):
    """How a run reports and waits; none of it changes what the run learns."""

    log_every: int = Field(10, ge=1, le=MAX_STEPS, description="weight steps per stored train-loss point")
    flush_seconds: float = Field(5.0, gt=0, description="flush the run file at least this often")
    distributed_timeout: float = Field(
        300.0, gt=0, description="seconds a collective waits for a lost rank before the run fails"
    )


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# a run file is `<name>-<UTC stamp>[-N].h5` with a `.lock` sidecar (replays add `-replay`), and a
# file name holds at most 255 bytes on common file systems: 200 leaves room for the rest
MAX_NAME = 200


class Recipe(_Strict):
    """A whole experiment. ``hyperparameters`` entries are validated per kind in stage 2."""

    name: str = Field(description="run name; used in the run file's name")
    description: str = ""
    # torch's generators take a 64-bit seed (and the engine also seeds with seed + 1); beyond that
    # torch raises an overflow ValueError, a traceback at build time
    seed: int = Field(0, ge=-(2**63), lt=2**63 - 1)
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto")
    data: ComponentSection
    model: ComponentSection
    response: ComponentSection = ComponentSection(name="stn")
    objective: ComponentSection = ComponentSection(name="loss")
    augment: list[ComponentSection] = Field(default_factory=list)
    hyperparameters: dict[str, dict[str, Any]] = Field(default_factory=dict)
    train: TrainConfig
    store: StoreConfig = StoreConfig()
    run: RunConfig = RunConfig()
    #: observers switched on for this run: ``{name: options}`` (see :mod:`stnkit.observer`)
    observers: dict[str, dict[str, Any] | None] = Field(default_factory=dict)

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
        if len(name) > MAX_NAME:
            raise ValueError(f"is {len(name)} characters long; at most {MAX_NAME} fit in a run file's name")
        return name

    def checked(self) -> Recipe:
        """This recipe validated again as a whole (a copy): catches edits made in Python that
        no assignment saw, such as a changed list or dict. Raises :class:`RecipeError`."""
        try:
            fresh = Recipe.model_validate(self.model_dump(warnings=False))
        except ValidationError as error:
            raise RecipeError(pydantic_problems(error, model=Recipe)) from None
        fresh._base_dir = self._base_dir
        fresh._source = self._source
        fresh._overridden = self._overridden
        return fresh

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


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated in one mapping.

    PyYAML silently keeps the last of two equal keys, so a second ``lr:`` or ``train:`` section
    would hide the first without a word; in a recipe that is always a mistake.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges may be overridden by explicit keys
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base constructor reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as error:
            # PyYAML builds dates and ints with datetime() and int(): a date with month 13 or an
            # int of 5,000 digits raises a bare ValueError, which is not a YAMLError
            raise yaml.constructor.ConstructorError(None, None, str(error), node.start_mark) from None


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a recipe file safely; YAML errors become a one-line problem with the position."""
    try:
        text = path.read_text(encoding="utf-8")
    # the file is the location, as for YAML errors: `location: message` like every other problem
    except FileNotFoundError:
        raise UsageError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise UsageError(f"{path}: cannot read the recipe ({reason})") from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise RecipeError([(where, f"invalid YAML: {problem}")]) from None
    except RecursionError:
        # PyYAML composes nested collections recursively: thousands of '[' exhaust the stack
        raise RecipeError([(str(path), "invalid YAML: nested too deeply")]) from None
    if data is None:
        raise RecipeError([(str(path), "the recipe is empty")])
    if not isinstance(data, dict):
        raise RecipeError([(str(path), f"a recipe must be a mapping, not {type(data).__name__}")])
    return data


def _list_index(part: str, length: int) -> int | None:
    """``part`` as an index into a list of ``length`` items, or ``None``.

    ``isdecimal``, not ``isdigit``: ``int('²')`` raises a ValueError; the length cap keeps ``int``
    clear of its 4,300-digit limit, another ValueError.
    """
    if part.isdecimal() and len(part) < 10 and int(part) < length:
        return int(part)
    return None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """Apply ``dotted.key=value`` overrides in place (values parsed as YAML); return the keys."""
    keys: list[str] = []
    problems: list[Problem] = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        # every dotted part must be non-empty: ".a" or "a..b" would reach the recipe as an empty
        # key, reported with an empty location
        parts = [part.strip() for part in key.split(".")]
        key = ".".join(parts)
        if not sep or not all(parts):
            problems.append(("--set", f"{override!r} is not of the form dotted.key=value"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, RecursionError, ValueError):
            # not YAML: the raw text. RecursionError: thousands of '['; ValueError: a date with
            # month 13 or an int of 5,000 digits, which PyYAML does not wrap in a YAMLError
            value = raw
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                index = _list_index(part, len(node))
                if index is None:
                    problems.append((key, f"--set: {where} is not an index of a list of {len(node)}"))
                    break
                node = node[index]
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
                index = _list_index(last, len(node))
                if index is None:
                    problems.append((key, f"--set: {last} is not an index of a list of {len(node)}"))
                    continue
                node[index] = value
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
    retired = retired_problems(data)
    if retired:
        raise RecipeError(mark_overrides(retired, overridden))
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

    Component sections and the data are checked by :func:`stnkit.validate` (as ``stnkit validate``
    does), and again by :func:`stnkit.run` before any run file exists.
    """
    path = Path(path)
    data = load_yaml(path)
    signal_point("recipe")
    keys = apply_overrides(data, overrides)
    return parse_recipe(data, base_dir=path.resolve().parent, source=str(path), overridden=keys)
