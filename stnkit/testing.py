"""Fixtures and conformance suites for stnkit plugins.

Install with ``pip install stnkit[testing]`` (pytest and hypothesis). Use the fixtures by adding
``pytest_plugins = ("stnkit.testing",)`` to a ``conftest.py``. Reuse a conformance suite by
subclassing it in a test module (the class name must start with ``Test``), setting its class
attributes and implementing the methods it names::

    from stnkit.testing import AugmentationConformance, HyperKindConformance, ModelConformance

    class TestMyKind(HyperKindConformance):
        kind_cls = MyKind
        configs = [{"low": 1e-5, "high": 1e-1, "init": 1e-3}]   # Config dicts, init included

    class TestMyModel(ModelConformance):
        model_cls = MyModel
        config = {"width": 8}
        hyperparameters = {"dropout": {"kind": "unit", "init": 0.2}}

        def make_data(self) -> DataInfo: ...               # the data the model is built for
        def make_batch(self, batch_size: int) -> Batch: ...  # inputs and targets of that data

    class TestMyAugmentation(AugmentationConformance):
        augmentation_cls = MyAugmentation
        identity = {"strength": 0.0}   # values at which it must return its input unchanged
        strong = {"strength": 0.8}     # values at which it must change every input

        def make_data(self) -> DataInfo: ...                 # the data it is built for
        def make_inputs(self, batch_size: int) -> Tensor: ...  # a batch of inputs (B, ...)

:class:`ResponseConformance` needs only ``response_cls`` (and ``config``).

Every suite checks behaviour that can fail — a suite that passes for a broken plugin is a bug.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import Tensor

from stnkit.augment import Augmentation
from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.data import Batch, BuildContext, DataInfo, Dataset
from stnkit.hyper.kinds import HyperConfig, HyperKind, PositiveKind
from stnkit.hyper.space import HyperBatch, HyperSpace
from stnkit.model import ModelOutput, StnModel
from stnkit.nn import BRLinear
from stnkit.nn.base import BestResponse
from stnkit.objective import LossObjective
from stnkit.optim import make_optimizer
from stnkit.plugins import Plugins, load_plugins
from stnkit.response.base import ResponseModel, TrainingParts
from stnkit.settings import OptimizerSettings, TrainSettings
from stnkit.task import RegressionTask, Task

__all__ = [
    "AugmentationConformance",
    "HyperKindConformance",
    "ModelConformance",
    "ResponseConformance",
    "TinyRegression",
    "make_space",
    "run_dir",
    "stnkit_plugins",
]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def stnkit_plugins() -> Plugins:
    """A freshly loaded plugin manager (honours STNKIT_PLUGINS / STNKIT_DISABLE_PLUGINS)."""
    return load_plugins()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """An empty folder for run files."""
    folder = tmp_path / "runs"
    folder.mkdir()
    return folder


# -- helpers ------------------------------------------------------------------------------------


def make_space(
    declarations: Mapping[str, Mapping[str, Any]],
    plugins: Plugins | None = None,
    default_scale: float = 0.5,
    constants: Mapping[str, float] | None = None,
) -> HyperSpace:
    """A :class:`HyperSpace` from recipe-style declarations, e.g. ``{"p": {"kind": "unit", "init": 0.3}}``."""
    plugins = plugins or load_plugins()
    kinds: dict[str, HyperKind] = {}
    for name, entry in declarations.items():
        options = dict(entry)
        kind_cls = plugins.kinds.get(options.pop("kind"))
        kinds[name] = kind_cls(kind_cls.Config.model_validate(options))
    return HyperSpace(kinds, default_scale=default_scale, constants=constants)


def _best_response_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, BestResponse)]


def _hyper_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1].startswith("hyper")]


class TinyRegression(StnModel):
    """A one-layer best-response regression model used by the response conformance suite."""

    name = "stnkit-testing-tiny"

    class Config(ComponentConfig):
        pass

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "weight_decay": HyperparameterUse("L2 penalty", default=0.0, low=0.0),
    }

    def __init__(self, config: Any, data: DataInfo, n_hyper: int) -> None:
        super().__init__(config, data, n_hyper)
        self.layer = BRLinear(data.input_shape[0], 1, n_hyper)

    def forward(self, inputs: Tensor, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        prediction = self.layer(inputs, hp.hnet).squeeze(-1)
        penalty = None
        if self.training:
            penalty = (hp["weight_decay"] * self.layer.weight_sq_norm(hp.hnet)).mean()
        return ModelOutput(prediction, penalty)


# -- conformance suites -------------------------------------------------------------------------


class HyperKindConformance:
    """Checks a hyperparameter kind: its Config, bounds (exactly, in float32), round trips,
    initial values, monotonicity, gradients and the hypernetwork's view.

    Set ``kind_cls`` and ``configs`` (a list of Config dicts, ``init`` included); include configs
    whose bounds have no exact float32 form (such as 0.3 or 1e-5), since that is where rounding
    lets values escape a range.
    """

    kind_cls: ClassVar[type[HyperKind]]
    configs: ClassVar[list[dict[str, Any]]]

    def kinds(self) -> list[HyperKind]:
        return [self.kind_cls(self.kind_cls.Config.model_validate(c)) for c in self.configs]

    def test_has_name_and_config(self) -> None:
        assert isinstance(self.kind_cls.name, str) and self.kind_cls.name
        assert issubclass(self.kind_cls.Config, HyperConfig), "a kind's Config must subclass HyperConfig"
        assert not (self.kind_cls.integer and not self.kind_cls.discrete)

    def test_config_rejects_init_outside_the_range(self) -> None:
        from pydantic import ValidationError

        for config, kind in zip(self.configs, self.kinds(), strict=True):
            low, high = kind.used_range()
            outside = [
                b + d for b, d in ((low, -1.0 - abs(low)), (high, 1.0 + abs(high))) if math.isfinite(b)
            ]
            for init in outside:
                with pytest.raises(ValidationError):
                    self.kind_cls.Config.model_validate({**config, "init": init})

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.differing_executors])
    @given(u=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
    @example(u=17.0)  # sigmoid is exactly 1 in float32 from here on
    @example(u=-17.0)
    @example(u=1e6)
    @example(u=-1e6)  # exp is exactly 0
    def test_bounds_never_violated(self, u: float) -> None:
        for kind in self.kinds():
            for dtype in (torch.float32, torch.float64):
                value = kind.constrain(torch.tensor([u], dtype=dtype))
                assert value.dtype == dtype
                assert torch.isfinite(value).all()
                # compared as Python floats: a float32 0.30000001 is above a bound of 0.3
                assert kind.low <= float(value) <= kind.high, (kind.config, u, float(value))
                used = kind.discretize(value)
                low, high = kind.used_range()
                assert low <= float(used) <= high, (kind.config, u, float(used))
                assert torch.equal(kind.discretize(used), used), "discretize must be idempotent"
                if kind.integer:
                    assert float(used) == math.floor(float(used))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.differing_executors])
    @given(u=st.floats(min_value=-6.0, max_value=6.0, allow_nan=False))
    def test_round_trip(self, u: float) -> None:
        for kind in self.kinds():
            x = torch.tensor([u], dtype=torch.float64)
            back = kind.unconstrain(kind.constrain(x))
            assert torch.allclose(back, x, atol=1e-6, rtol=1e-6), (kind.config, u, back)

    def test_initial_value_round_trips(self) -> None:
        for kind in self.kinds():
            u = torch.tensor([kind.initial_unconstrained()], dtype=torch.float64)
            value = kind.constrain(u)
            used = float(kind.discretize(value))
            if kind.discrete:
                assert used == kind.config.init
            else:
                assert math.isclose(float(value), kind.config.init, rel_tol=1e-6, abs_tol=1e-9)

    def test_monotone_and_differentiable(self) -> None:
        for kind in self.kinds():
            u = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
            value = kind.constrain(u)
            assert (value[1:] >= value[:-1]).all()
            torch.autograd.backward(value.sum())
            assert u.grad is not None and torch.isfinite(u.grad).all()
            assert (u.grad > 0).any()


class ModelConformance:
    """Checks a model plugin: declarations, config strictness, shapes, the zero-gate identity,
    hypergradients and per-example hyperparameters.

    Set ``model_cls``, ``config`` (its Config dict) and ``hyperparameters`` (recipe-style
    declarations of the ones to tune; undeclared ones take their defaults), and implement
    ``make_data() -> DataInfo`` and ``make_batch(batch_size) -> Batch``. Optional: ``batch_size``,
    ``atol``. Stateful models get ``reset_state("eval")`` before each comparison.
    """

    model_cls: ClassVar[type[StnModel]]
    config: ClassVar[dict[str, Any]] = {}
    hyperparameters: ClassVar[dict[str, dict[str, Any]]] = {}
    batch_size: ClassVar[int] = 4
    atol: ClassVar[float] = 1e-5

    def make_data(self) -> DataInfo:
        raise NotImplementedError

    def make_batch(self, batch_size: int) -> Batch:
        raise NotImplementedError

    def build(self) -> tuple[StnModel, HyperSpace]:
        torch.manual_seed(0)
        consumed = self.model_cls.hyperparameters
        declared = {n: d for n, d in self.hyperparameters.items() if n in consumed}
        constants = {
            n: float(u.default) for n, u in consumed.items() if n not in declared and u.default is not None
        }
        space = make_space(declared, constants=constants)
        config = self.model_cls.Config.model_validate(self.config)
        model = self.model_cls(config, self.make_data(), space.size)
        return model, space

    def _forward(self, model: StnModel, hp: HyperBatch, batch: Batch) -> ModelOutput:
        model.reset_state("eval")
        output: ModelOutput = model(batch.inputs, hp, stream="eval")
        return output

    def test_declares_hyperparameters_sensibly(self) -> None:
        for name, use in self.model_cls.hyperparameters.items():
            assert name.isidentifier()
            assert use.description
            assert use.low <= use.high
        for name in self.hyperparameters:
            assert name in self.model_cls.hyperparameters, f"{name} is not consumed by the model"

    def test_config_rejects_unknown_keys(self) -> None:
        from pydantic import ValidationError

        with pytest.raises(ValidationError):
            self.model_cls.Config.model_validate({**self.config, "no_such_option_xyz": 1})

    def test_forward_shapes_and_penalty(self) -> None:
        model, space = self.build()
        batch = self.make_batch(self.batch_size)
        lam = space.sample(batch.size).detach()
        model.train()
        out = model(batch.inputs, space.batch(lam, lam), stream="train")
        assert out.prediction.shape[0] == batch.size
        assert torch.isfinite(out.prediction).all()
        task = self.make_data().task
        loss = task.loss(out.prediction, batch.targets)
        assert loss.dim() == 0 and torch.isfinite(loss)
        if out.penalty is not None:
            assert out.penalty.dim() == 0 and torch.isfinite(out.penalty)
        model.eval()
        with torch.no_grad():
            evaluated = self._forward(model, space.batch(lam, lam), batch)
        assert evaluated.prediction.shape == out.prediction.shape

    def test_zero_gates_equal_plain_network(self) -> None:
        model, space = self.build()
        assert _best_response_layers(model), "the model has no best-response layer"
        with torch.no_grad():
            for p in _hyper_parameters(model):
                p.zero_()
        model.eval()
        batch = self.make_batch(self.batch_size)
        lam = space.sample(batch.size).detach()
        with torch.no_grad():
            gated = self._forward(model, space.batch(lam, lam), batch).prediction
            plain = self._forward(model, space.batch(lam, None), batch).prediction
        assert torch.allclose(gated, plain, atol=self.atol)

    def test_hypergradient_reaches_every_tuned_hyperparameter(self) -> None:
        model, space = self.build()
        if space.size == 0:
            pytest.skip("the recipe declares no hyperparameter for this model")
        model.eval()
        batch = self.make_batch(self.batch_size)
        lam = space.sample(batch.size)
        out = self._forward(model, space.batch(lam, lam), batch)
        loss = self.make_data().task.loss(out.prediction, batch.targets)
        (grad,) = torch.autograd.grad(loss, [space.h])
        for i, name in enumerate(space.names):
            assert float(grad[i].abs()) > 0, f"no hypergradient reaches {name}"

    def test_examples_use_their_own_hyperparameters(self) -> None:
        model, space = self.build()
        if space.size == 0:
            pytest.skip("the recipe declares no hyperparameter for this model")
        model.eval()
        one = self.make_batch(1)
        inputs = one.inputs.expand(2, *one.inputs.shape[1:]).contiguous()
        batch = Batch(inputs, one.targets.expand(2, *one.targets.shape[1:]).contiguous(), first=True)
        lam = space.expand(2).detach().clone()
        lam[1] += 2.0
        with torch.no_grad():
            out = self._forward(model, space.batch(lam, lam), batch).prediction
            same = self._forward(model, space.batch(lam[:1].expand(2, -1), lam[:1].expand(2, -1)), batch)
        assert not torch.allclose(out[0], out[1]), "changing one example's λ did not change its output"
        assert torch.allclose(out[0], same.prediction[0], atol=self.atol), "examples leak into each other"


class AugmentationConformance:
    """Checks an augmentation: declarations, identity at zero strength, output range and shape,
    per-example values.

    Set ``augmentation_cls``, ``config`` (its Config dict), ``identity`` (hyperparameter values at
    which it must return its input unchanged) and ``strong`` (values that must change it), and
    implement ``make_data() -> DataInfo`` and ``make_inputs(batch_size) -> Tensor`` (inputs
    ``(B, ...)``). Optional: ``low``/``high``, the range outputs must stay in (default 0..1).
    """

    augmentation_cls: ClassVar[type[Augmentation]]
    config: ClassVar[dict[str, Any]] = {}
    identity: ClassVar[dict[str, float]]
    strong: ClassVar[dict[str, float]]
    low: ClassVar[float] = 0.0
    high: ClassVar[float] = 1.0

    def make_data(self) -> DataInfo:
        raise NotImplementedError

    def make_inputs(self, batch_size: int) -> Tensor:
        raise NotImplementedError

    def build(self) -> Augmentation:
        config = self.augmentation_cls.Config.model_validate(self.config)
        return self.augmentation_cls(config, self.make_data())

    def _hp(self, rows: list[dict[str, float]]) -> HyperBatch:
        names = set(self.identity) | set(self.strong)
        values = {n: torch.tensor([row.get(n, self.identity.get(n, 0.0)) for row in rows]) for n in names}
        return HyperBatch(hnet=None, values=values)

    def test_declares_what_it_uses(self) -> None:
        for name in set(self.identity) | set(self.strong):
            assert name in self.augmentation_cls.hyperparameters

    def test_identity_at_zero_strength(self) -> None:
        x = self.make_inputs(6)
        out = self.build()(x.clone(), self._hp([self.identity] * 6))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.allclose(out, x, atol=1e-6)

    def test_output_range_and_shape(self) -> None:
        torch.manual_seed(0)
        x = self.make_inputs(8)
        out = self.build()(x.clone(), self._hp([self.strong] * 8))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.isfinite(out).all()
        assert float(out.min()) >= self.low - 1e-5 and float(out.max()) <= self.high + 1e-5

    def test_per_example_values_honoured(self) -> None:
        torch.manual_seed(0)
        x = self.make_inputs(1).expand(4, *self.make_inputs(1).shape[1:]).contiguous()
        rows = [self.identity, self.strong, self.identity, self.strong]
        out = self.build()(x.clone(), self._hp(rows))
        assert torch.allclose(out[0], x[0], atol=1e-6) and torch.allclose(out[2], x[2], atol=1e-6)
        assert not torch.allclose(out[1], x[1]) and not torch.allclose(out[3], x[3])


class _ArrayData(Dataset):
    """In-memory regression data for the response suite."""

    name = "stnkit-testing-arrays"

    def __init__(self, x: Tensor, y: Tensor, task: Task) -> None:
        super().__init__(ComponentConfig(), BuildContext())
        self.x, self.y, self.task = x, y, task

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.task, tuple(self.x.shape[1:]), 1, len(self.x), len(self.x))

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        yield Batch(self.x, self.y, first=True)

    def valid_batches(self) -> Iterator[Batch]:
        yield Batch(self.x, self.y, first=True)


class ResponseConformance:
    """Checks a response model on a tiny ridge problem. Set ``response_cls`` and ``config``."""

    response_cls: ClassVar[type[ResponseModel]]
    config: ClassVar[dict[str, Any]] = {}

    def parts(self) -> tuple[TrainingParts, ResponseModel, _ArrayData]:
        torch.manual_seed(0)
        x = torch.randn(32, 5)
        y = x @ torch.randn(5) + 0.1 * torch.randn(32)
        data = _ArrayData(x, y, RegressionTask())
        kind = PositiveKind(PositiveKind.Config(init=0.1, per_example=False))
        space = HyperSpace({"weight_decay": kind}, default_scale=0.5)
        model = TinyRegression(None, data.info, space.size if self.response_cls.uses_response else 0)
        response = self.response_cls(self.response_cls.Config.model_validate(self.config), space)
        train = TrainSettings(
            optimizer=OptimizerSettings(name="sgd", lr=0.05),
            hyper_optimizer=OptimizerSettings(name="adam", lr=0.05),
        )
        opt = make_optimizer(train.optimizer, response.weight_parameters(model, train))
        hyper_opt = (
            make_optimizer(train.hyper_optimizer, response.hyper_parameters(space, train))
            if response.tunes
            else None
        )
        parts = TrainingParts(
            model=model,
            space=space,
            task=data.task,
            objective=LossObjective(LossObjective.Config(), data.task),
            augmentations=[],
            weight_optimizer=opt,
            hyper_optimizer=hyper_opt,
            clip=None,
            hyper_clip=None,
            perturbation=train.perturbation,
        )
        response.setup(parts, train)
        return parts, response, data

    def test_weight_steps_train_the_weights(self) -> None:
        parts, response, data = self.parts()
        batch = next(data.train_batches(1, torch.Generator()))
        before = [p.detach().clone() for p in parts.model.parameters()]
        first = float(response.weight_step(parts, batch))
        for _ in range(20):
            last = float(response.weight_step(parts, batch))
        assert math.isfinite(first) and last < first
        after = list(parts.model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))

    def test_hyper_steps_move_only_hyperparameters(self) -> None:
        parts, response, data = self.parts()
        batch = next(data.valid_batches())
        if not response.tunes:
            # a response that does not tune must leave h alone however long it trains
            h = parts.space.h.detach().clone()
            for step in range(1, 6):
                response.before_weight_step(step)
                response.weight_step(parts, batch)
            assert parts.hyper_optimizer is None
            if not response.scheduled_values(response.config):
                assert torch.equal(parts.space.h.detach(), h)
            return
        for _ in range(3):
            response.weight_step(parts, batch)
        weights = [p.detach().clone() for p in parts.model.parameters()]
        h = parts.space.h.detach().clone()
        loss = response.hyper_step(parts, batch)
        assert math.isfinite(float(loss))
        assert not torch.equal(parts.space.h.detach(), h)
        for before, after in zip(weights, parts.model.parameters(), strict=True):
            assert torch.equal(before, after.detach())

    def test_eval_batch_is_unperturbed(self) -> None:
        parts, response, _ = self.parts()
        a = response.eval_batch(6)
        b = response.eval_batch(6)
        for name in parts.space.names:
            assert torch.equal(a[name], b[name])
            assert torch.allclose(a[name], torch.full((6,), parts.space.values()[name]))
