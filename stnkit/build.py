"""From a recipe to live objects: stage-2 validation (:func:`resolve`) and construction (:func:`build`)."""

from __future__ import annotations

import keyword
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ValidationError

from stnkit import distributed
from stnkit.augment import Augmentation
from stnkit.config import HyperparameterUse
from stnkit.data import BuildContext, Dataset, check_batches
from stnkit.errors import Problem, RecipeError, RegistryError, UsageError
from stnkit.hyper.kinds import HyperKind
from stnkit.hyper.space import HyperSpace
from stnkit.killpoints import signal_point
from stnkit.model import StnModel
from stnkit.nn import count_parameters
from stnkit.objective import Objective
from stnkit.optim import make_optimizer
from stnkit.plugins import Plugins
from stnkit.precision import Precision
from stnkit.recipe import (
    MAX_STEPS,
    ComponentSection,
    OptimizerConfig,
    PerturbationConfig,
    Recipe,
    TrainConfig,
    mark_overrides,
    pydantic_problems,
)
from stnkit.registry import Registry
from stnkit.response.base import ResponseModel, TrainingParts
from stnkit.settings import OptimizerSettings, PerturbationSettings, StoreSettings, TrainSettings

__all__ = [
    "Built",
    "Resolved",
    "build",
    "make_optimizer",
    "optimizer_settings",
    "resolve",
    "resolve_device",
    "train_settings",
]


@dataclass
class Chosen:
    """A component class with its validated config; ``where`` is its recipe location."""

    cls: type[Any]
    config: Any
    where: str


@dataclass
class Resolved:
    """A fully validated recipe: component classes, their configs, the hyperparameter kinds."""

    recipe: Recipe
    data: Chosen
    model: Chosen
    response: Chosen
    objective: Chosen
    augment: list[Chosen]
    kinds: dict[str, HyperKind]
    constants: dict[str, float]
    device: torch.device
    #: the observers the recipe's ``observers:`` section switches on
    observers: list[Chosen] = field(default_factory=list)


@dataclass
class Built:
    """Live objects of a run, ready for the engine."""

    resolved: Resolved
    dataset: Dataset
    parts: TrainingParts
    response: ResponseModel
    device: torch.device
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def recipe(self) -> Recipe:
        return self.resolved.recipe


def resolve_device(spec: str) -> torch.device:
    """Turn ``cpu``/``cuda``/``cuda:N``/``mps``/``auto`` into a device, or raise a clear error."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    unknown = f"unknown device {spec!r} (use cpu, cuda, cuda:N, mps or auto)"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise RecipeError.single("device", unknown) from None
    # torch also knows 'meta', 'xla', 'ipu'...: 'meta' tensors hold no data, and training on it
    # failed with a RuntimeError traceback after the run file was made
    if device.type not in ("cpu", "cuda", "mps"):
        raise RecipeError.single("device", unknown)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RecipeError.single("device", f"{spec!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RecipeError.single("device", f"{spec!r} does not exist: {torch.cuda.device_count()} GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise RecipeError.single("device", "'mps' asked for, but it is not available here")
    return device


def _validate_section(
    registry: Registry[Any],
    section: ComponentSection,
    where: str,
    problems: list[Problem],
    context: dict[str, Any],
) -> Chosen | None:
    try:
        cls = registry.get(section.name)
    except RegistryError as error:
        problems.append((f"{where}.name", str(error)))
        return None
    config_cls: type[BaseModel] = cls.Config
    try:
        config = config_cls.model_validate(section.options(), context=context)
    except ValidationError as error:
        problems.extend(pydantic_problems(error, prefix=where.split("."), model=config_cls))
        return None
    # component Configs accept YAML's .inf/.nan in float fields (an infinite init_range, a NaN in
    # a fixed schedule): the run would only diverge, after its run file exists
    bad = _non_finite(config.model_dump(), where)
    if bad:
        problems.extend((loc, "must be a finite number") for loc in bad)
        return None
    return Chosen(cls, config, where)


def _validate_kinds(recipe: Recipe, plugins: Plugins, problems: list[Problem]) -> dict[str, HyperKind]:
    kinds: dict[str, HyperKind] = {}
    for name, entry in recipe.hyperparameters.items():
        where = f"hyperparameters.{name}"
        if not name.isidentifier() or keyword.iskeyword(name):
            problems.append((where, "a hyperparameter name must be a Python identifier"))
            continue
        options = dict(entry)
        kind_name = options.pop("kind", None)
        if kind_name is None:
            problems.append(
                (f"{where}.kind", f"required key is missing (one of: {', '.join(plugins.kinds)})")
            )
            continue
        if not isinstance(kind_name, str):
            problems.append((f"{where}.kind", "must be a string"))
            continue
        try:
            kind_cls = plugins.kinds.get(kind_name)
        except RegistryError as error:
            problems.append((f"{where}.kind", str(error)))
            continue
        # checked before the kind's own validation, which cannot report it clearly: an infinite
        # integer `init` overflows IntegerKind's validator, a NaN slips past range checks, and an
        # int beyond float range overflows later
        bad = [key for key, value in options.items() if not _finite(value)]
        if bad:
            problems.extend((f"{where}.{key}", "must be a finite number") for key in bad)
            continue
        try:
            config = kind_cls.Config.model_validate(options)
        except ValidationError as error:
            problems.extend(pydantic_problems(error, prefix=where.split("."), model=kind_cls.Config))
            continue
        kinds[name] = kind_cls(config)
    return kinds


def _finite(value: Any) -> bool:
    """False for a number, or a string pydantic would read as one, that is NaN, infinite or an int
    too large for a float; True for anything else (its own validation judges it)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return True
    try:
        return math.isfinite(float(value))
    except ValueError:
        return True  # not a number
    except OverflowError:
        return False  # an int beyond float range


def _non_finite(value: Any, where: str) -> list[str]:
    """Locations of the non-finite floats in a validated config's dump."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where]
    if isinstance(value, dict):
        return [loc for key, item in value.items() for loc in _non_finite(item, f"{where}.{key}")]
    if isinstance(value, list | tuple):
        return [loc for i, item in enumerate(value) for loc in _non_finite(item, f"{where}.{i}")]
    return []


def _check_consumers(
    recipe: Recipe,
    kinds: dict[str, HyperKind],
    consumers: Sequence[tuple[str, Mapping[str, HyperparameterUse]]],
    response_tunes: bool,
    problems: list[Problem],
) -> dict[str, float]:
    """Cross-check declarations against consumers (each one's label and the hyperparameters it
    consumes); return the constants (undeclared defaults)."""
    uses: dict[str, list[tuple[str, HyperparameterUse]]] = {}
    for label, consumed in consumers:
        for name, use in consumed.items():
            uses.setdefault(name, []).append((label, use))
    consumable = ", ".join(sorted(uses)) or "none"
    for name in recipe.hyperparameters:
        if name in kinds and name not in uses:
            problems.append(
                (f"hyperparameters.{name}", f"no component consumes {name!r} (consumed: {consumable})")
            )
    constants: dict[str, float] = {}
    for name, users in uses.items():
        kind = kinds.get(name)
        if kind is None:
            if name in recipe.hyperparameters:
                continue  # its own declaration is already reported as a problem
            required = [label for label, use in users if use.default is None]
            if required:
                problems.append(
                    (
                        "hyperparameters",
                        f"{name!r} must be declared: {required[0]} needs it ({users[0][1].description})",
                    )
                )
            else:
                constants[name] = float(users[0][1].default)  # type: ignore[arg-type]
            continue
        for label, use in users:
            if use.integer and not kind.integer:
                problems.append(
                    (
                        f"hyperparameters.{name}.kind",
                        f"{label} uses {name!r} as an integer: declare it with kind 'integer'",
                    )
                )
                continue
            if use.continuous and kind.discrete:
                low, high = kind.used_range()
                problems.append(
                    (
                        f"hyperparameters.{name}.kind",
                        f"{label} needs a continuous value for {name!r}, but kind {kind.name!r} is "
                        f"discrete (its values lie in [{low:g}, {high:g}]): declare a continuous kind "
                        "such as 'unit' or 'interval'",
                    )
                )
                continue
            if use.per_batch and kind.config.per_example:
                problems.append(
                    (
                        f"hyperparameters.{name}.per_example",
                        f"{label} uses one {name!r} per batch: declare it with per_example: false",
                    )
                )
            # what the consumer receives: the kind's values after ``discretize`` (HyperSpace.batch
            # and hp.discrete both apply it), never a discrete kind's continuous relaxation
            low, high = kind.used_range()
            if low < use.low or high > use.high:
                problems.append(
                    (
                        f"hyperparameters.{name}",
                        f"kind {kind.name!r} gives values in [{low:g}, {high:g}] but {label} "
                        f"accepts only [{use.low:g}, {use.high:g}]",
                    )
                )
    # only when every declaration is valid: one rejected for a typo is not "none declared"
    all_valid = len(kinds) == len(recipe.hyperparameters)
    if response_tunes and all_valid and not any(kind.config.tune for kind in kinds.values()):
        problems.append(
            (
                "hyperparameters",
                f"response {recipe.response.name!r} tunes hyperparameters, "
                "but none is declared with tune: true",
            )
        )
    return constants


def resolve(recipe: Recipe, plugins: Plugins) -> Resolved:
    """Stage-2 validation. Raises :class:`RecipeError` listing every problem found."""
    problems: list[Problem] = []
    context = {"base_dir": recipe.base_dir}
    device: torch.device | None = None
    try:
        device = distributed.local_device(resolve_device(recipe.device))
    except RecipeError as error:
        problems.extend(error.problems)
    if recipe.train.precision == "fp16" and device is not None and device.type != "cuda":
        problems.append(
            ("train.precision", f"fp16 needs a CUDA device (device is {device}); use bf16 or fp32")
        )
    data = _validate_section(plugins.datasets, recipe.data, "data", problems, context)
    model = _validate_section(plugins.models, recipe.model, "model", problems, context)
    response = _validate_section(plugins.responses, recipe.response, "response", problems, context)
    objective = _validate_section(plugins.objectives, recipe.objective, "objective", problems, context)
    augment = [
        _validate_section(plugins.augmentations, section, f"augment.{i}", problems, context)
        for i, section in enumerate(recipe.augment)
    ]
    kinds = _validate_kinds(recipe, plugins, problems)
    observers = _validate_observers(recipe, plugins, problems, context)
    consumers: list[tuple[str, Mapping[str, HyperparameterUse]]] = []
    if model is not None:
        model = Chosen(model.cls, model.cls.bind_config(model.config, list(kinds)), model.where)
        model_uses = _consumed(model, list(kinds), problems)
        if model_uses is None:
            model = None
        else:
            consumers.append((f"model {recipe.model.name!r}", model_uses))
    for chosen, section in zip(augment, recipe.augment, strict=True):
        if chosen is not None:
            consumers.append((f"augmentation {section.name!r}", chosen.cls.hyperparameters))
    if objective is not None:
        consumers.append((f"objective {recipe.objective.name!r}", objective.cls.hyperparameters))
    tunes = response is not None and response.cls.tunes
    constants: dict[str, float] = {}
    if model is not None and all(a is not None for a in augment) and objective is not None:
        constants = _check_consumers(recipe, kinds, consumers, tunes, problems)
    if response is not None:
        _check_scheduled(response, recipe, kinds, problems)
    if problems:
        raise RecipeError(mark_overrides(_dedupe(problems), recipe.overridden))
    assert data
    assert model
    assert response
    assert objective
    assert device is not None
    return Resolved(
        recipe=recipe,
        data=data,
        model=model,
        response=response,
        objective=objective,
        augment=[a for a in augment if a is not None],
        kinds=kinds,
        constants=constants,
        device=device,
        observers=observers,
    )


def _check_scheduled(
    response: Chosen, recipe: Recipe, kinds: Mapping[str, HyperKind], problems: list[Problem]
) -> None:
    """Each value the response sets must be of a declared hyperparameter and inside its kind's
    range: outside it a value has no unconstrained form (a negative weight decay is the log of a
    negative number) and the run would diverge at its first step."""
    for scheduled in response.cls.scheduled_values(response.config):
        where = f"{response.where}.{scheduled.where}"
        name = scheduled.name
        if name not in recipe.hyperparameters:
            problems.append((where, f"{name!r} is not a declared hyperparameter"))
            continue
        kind = kinds.get(name)
        if kind is None:
            continue  # its own declaration is already reported as a problem
        for i, value in enumerate(scheduled.values):
            if not kind.low <= value <= kind.high:
                problems.append(
                    (
                        f"{where}.{i}",
                        f"{value:g} is outside the range [{kind.low:g}, {kind.high:g}] of kind {kind.name!r}",
                    )
                )


def _consumed(
    chosen: Chosen, declared: list[str], problems: list[Problem]
) -> Mapping[str, HyperparameterUse] | None:
    """What ``chosen`` consumes under its config; ``None`` (its problems recorded) where the
    config cannot say (a model that must be built to know, and fails to build)."""
    try:
        return chosen.cls.hyperparameters_for(chosen.config, declared)  # type: ignore[no-any-return]
    except RecipeError as error:
        problems.extend(error.problems)
        return None


def _validate_observers(
    recipe: Recipe, plugins: Plugins, problems: list[Problem], context: dict[str, Any]
) -> list[Chosen]:
    chosen: list[Chosen] = []
    for name, options in recipe.observers.items():
        where = f"observers.{name}"
        if name not in plugins.observers:
            problems.append((where, plugins.observers.unknown_message(name)))
            continue
        cls = plugins.observers.get(name)
        try:
            config = cls.Config.model_validate(options or {}, context=context)
        except ValidationError as error:
            problems.extend(pydantic_problems(error, prefix=where.split("."), model=cls.Config))
            continue
        found = Chosen(cls, config, where)
        # a missing optional package is a recipe problem, reported before any run file exists
        missing = found.cls.check_environment()
        if missing:
            problems.append((f"observers.{name}", missing))
            continue
        chosen.append(found)
    return chosen


def _dedupe(problems: Iterable[Problem]) -> list[Problem]:
    seen: set[Problem] = set()
    out: list[Problem] = []
    for problem in problems:
        if problem not in seen:
            seen.add(problem)
            out.append(problem)
    return out


def optimizer_settings(config: OptimizerConfig) -> OptimizerSettings:
    """A recipe's optimizer section as the settings :func:`make_optimizer` reads."""
    return OptimizerSettings(
        name=config.name,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        betas=config.betas,
        eps=config.eps,
        clip=config.clip,
    )


def _perturbation_settings(config: PerturbationConfig) -> PerturbationSettings:
    return PerturbationSettings(
        init_scale=config.init_scale,
        tune=config.tune,
        entropy_weight=config.entropy_weight,
        max_scale=config.max_scale,
    )


def store_settings(recipe: Recipe) -> StoreSettings:
    """What the run store records of a recipe and the ``run:`` / ``store:`` settings it obeys."""
    return StoreSettings(
        recipe_yaml=recipe.to_yaml(),
        recipe_source=recipe.source or "",
        base_dir=recipe.base_dir.resolve(),
        response=recipe.response.name,
        kinds={name: str(entry.get("kind", "")) for name, entry in recipe.hyperparameters.items()},
        log_every=recipe.run.log_every,
        flush_seconds=recipe.run.flush_seconds,
        checkpoints=recipe.store.checkpoints,
    )


def train_settings(train: TrainConfig) -> TrainSettings:
    """A recipe's ``train`` section as the settings response models read."""
    return TrainSettings(
        optimizer=optimizer_settings(train.optimizer),
        hyper_optimizer=optimizer_settings(train.hyper_optimizer),
        response_optimizer=None
        if train.response_optimizer is None
        else optimizer_settings(train.response_optimizer),
        scale_optimizer=None if train.scale_optimizer is None else optimizer_settings(train.scale_optimizer),
        perturbation=_perturbation_settings(train.perturbation),
    )


def build(resolved: Resolved) -> Built:
    """Construct data, hyperparameter space, model, response, objective and optimizers.

    Seeds torch first so weight initialisation is reproducible. Data errors surface here, before
    any run file exists.
    """
    recipe = resolved.recipe
    device = resolved.device
    torch.manual_seed(recipe.seed)
    context = BuildContext(base_dir=recipe.base_dir, device=device, seed=recipe.seed)
    signal_point("data")
    dataset: Dataset = resolved.data.cls(resolved.data.config, context)
    info = dataset.info
    if info.steps_per_epoch < 1:  # located at "data", like every other recipe problem
        raise RecipeError.single(
            resolved.data.where, "the training set yields no batch: is batch_size larger than the data set?"
        )
    planned = recipe.train.epochs * info.steps_per_epoch
    if recipe.train.max_steps is None and planned > MAX_STEPS:
        # per-step tables and schedules are sized from the planned steps
        raise RecipeError.single(
            "train.epochs",
            f"{recipe.train.epochs} epochs of {info.steps_per_epoch} steps make {planned:,} weight "
            f"steps, more than {MAX_STEPS:,}: lower epochs or set train.max_steps",
        )
    # data built in Python has not been checked by a loader: a pass over it before any run file
    check_batches(dataset, recipe.seed)
    space = HyperSpace(
        resolved.kinds,
        default_scale=recipe.train.perturbation.init_scale,
        constants=resolved.constants,
    ).to(device)
    # without a response the model is built plain: no response weights to carry or update
    n_hyper = space.size if resolved.response.cls.uses_response else 0
    model: StnModel = resolved.model.cls(resolved.model.config, info, n_hyper).to(device)
    if n_hyper and resolved.response.cls.tunes and count_parameters(model)[1] == 0:
        # hypergradients reach h only through the response weights: without them every hyper
        # step is zero and the run would end "completed" with its initial hyperparameters
        raise RecipeError.single(
            resolved.model.where,
            f"model {recipe.model.name!r} has no best-response layers, so response "
            f"{recipe.response.name!r} has nothing to tune: build it from stnkit.nn layers "
            "(BRLinear, BRConv2d...) or use response: fixed",
        )
    response: ResponseModel = resolved.response.cls(resolved.response.config, space)
    objective: Objective = resolved.objective.cls(resolved.objective.config, info.task)
    augmentations: list[Augmentation] = []
    for chosen in resolved.augment:
        try:
            augmentations.append(chosen.cls(chosen.config, info))
        except RecipeError:
            raise
        except UsageError as error:
            # e.g. an image augmentation on tabular data: give the message its recipe location
            raise RecipeError.single(chosen.where, str(error)) from None
    train = train_settings(recipe.train)
    weight_optimizer = make_optimizer(train.optimizer, response.weight_parameters(model, train))
    hyper_optimizer = None
    if response.tunes and recipe.train.hyper_steps > 0:
        hyper_optimizer = make_optimizer(train.hyper_optimizer, response.hyper_parameters(space, train))
    parts = TrainingParts(
        model=model,
        space=space,
        task=info.task,
        objective=objective,
        augmentations=augmentations,
        weight_optimizer=weight_optimizer,
        hyper_optimizer=hyper_optimizer,
        clip=train.optimizer.clip,
        hyper_clip=train.hyper_optimizer.clip,
        perturbation=train.perturbation,
        precision=Precision(recipe.train.precision, device),
    )
    response.setup(parts, train)
    return Built(resolved=resolved, dataset=dataset, parts=parts, response=response, device=device)
