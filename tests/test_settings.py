"""The settings objects the builder makes from a recipe carry the recipe's values exactly."""

from __future__ import annotations

import dataclasses

from stnkit.build import optimizer_settings, train_settings
from stnkit.recipe import OptimizerConfig, PerturbationConfig, TrainConfig
from stnkit.settings import OptimizerSettings, PerturbationSettings, TrainSettings


def test_every_optimizer_field_is_carried() -> None:
    config = OptimizerConfig(
        name="sgd",
        lr=0.3,
        momentum=0.7,
        nesterov=True,
        weight_decay=1e-4,
        betas=(0.8, 0.9),
        eps=1e-6,
        clip=2.5,
    )
    settings = optimizer_settings(config)
    assert {f.name for f in dataclasses.fields(OptimizerSettings)} == set(OptimizerConfig.model_fields)
    assert dataclasses.asdict(settings) == config.model_dump()


def test_every_train_field_a_response_reads_is_carried() -> None:
    train = TrainConfig(
        epochs=1,
        optimizer=OptimizerConfig(name="sgd", lr=0.1, clip=1.0),
        hyper_optimizer=OptimizerConfig(name="adam", lr=0.01),
        response_optimizer=OptimizerConfig(name="sgd", lr=0.2),
        scale_optimizer=OptimizerConfig(name="rmsprop", lr=0.02),
        perturbation=PerturbationConfig(init_scale=0.25, tune=False, entropy_weight=0.01, max_scale=1.0),
    )
    settings = train_settings(train)
    assert {f.name for f in dataclasses.fields(PerturbationSettings)} == set(PerturbationConfig.model_fields)
    dumped = train.model_dump()
    for name in ("optimizer", "hyper_optimizer", "response_optimizer", "scale_optimizer", "perturbation"):
        assert dataclasses.asdict(getattr(settings, name)) == dumped[name], name


def test_the_defaults_agree_with_the_recipe_defaults() -> None:
    optimizer = OptimizerSettings(name="sgd", lr=0.1)
    made = train_settings(TrainConfig(epochs=1, optimizer=OptimizerConfig(name="sgd", lr=0.1)))
    assert made == TrainSettings(optimizer=optimizer)
    assert made.response_optimizer is None and made.scale_optimizer is None
