"""The ``delta-stn`` response: centring, the two updates, linearization, every built-in model."""

from __future__ import annotations

import copy
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import stnkit
from stnkit.build import Built
from stnkit.cli import main
from stnkit.data import Batch
from stnkit.errors import UsageError
from stnkit.hyper.space import HyperBatch, HyperSpace
from stnkit.nn import split_parameters
from stnkit.response import DeltaSTNResponse
from stnkit.response.delta_stn import linearized_prediction
from stnkit.runner import prepare
from stnkit.testing import ResponseConformance
from tests.helpers import write_recipe

REPO = Path(__file__).parents[1]
RECIPES = REPO / "recipes"
IMAGES = REPO / "plugins" / "stnkit-cnn" / "tests" / "data"
DELTA = 'response={"name": "delta-stn"}'
SMALL_IMAGES = [
    f"data.root={IMAGES}",
    "data.valid_size=100",
    "data.train_subset=null",
    "data.valid_subset=null",
    "data.test_subset=200",
    "data.batch_size=25",
    "data.eval_batch_size=100",
]


def tiny_ptb(folder: Path, lines: int = 150) -> Path:
    """The first ``lines`` lines of each PTB split (a third for valid and test), as a folder:
    a final test pass over the whole test set would dominate these tests' time."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(RECIPES / "data" / "ptb.zip") as archive:
        for split in ("train", "valid", "test"):
            text = archive.read(f"ptb/ptb.{split}.txt").decode("utf-8").splitlines(keepends=True)
            keep = lines if split == "train" else lines // 3
            (folder / f"ptb.{split}.txt").write_text("".join(text[:keep]))
    return folder


PTB = tiny_ptb(Path(tempfile.mkdtemp(prefix="stnkit-tiny-ptb-")))
SMALL_PTB = [
    f"data.root={PTB}",
    "data.check_md5=false",
    "data.batch_size=10",
    "data.eval_batch_size=10",
    "data.bptt=10",
    "model.embedding_size=16",
    "model.hidden_size=16",
]
MODELS: dict[str, tuple[str, list[str]]] = {
    "stn-mlp": (
        "toy-ridge.yaml",
        [
            f"data.path={RECIPES / 'data' / 'toy-ridge.npz'}",
            "model.hidden_sizes=[8]",
            'hyperparameters.dropout={"kind": "unit", "init": 0.2}',
        ],
    ),
    # ptb-small holds σ fixed (as the released LSTM); these checks need tuned scales
    "stn-lstm": ("ptb-small.yaml", [*SMALL_PTB, "train.perturbation.tune=true"]),
    "stn-cnn": ("cifar10-small.yaml", SMALL_IMAGES),
    "stn-alexnet": (
        "cifar10-alexnet.yaml",
        [*SMALL_IMAGES, "model.channels=[4,6,8,6,6]", "model.fc=[16,16]"],
    ),
}


class TestDeltaSTNConformance(ResponseConformance):
    response_cls = DeltaSTNResponse


class TestDeltaSTNPlainForwardConformance(ResponseConformance):
    response_cls = DeltaSTNResponse
    config = {"linearize": False}


class _DoubleBackward(DeltaSTNResponse):
    """Δ-STN pinned to the double-backward trick (what a model jvp cannot run falls back to)."""

    def __init__(self, config: Any, space: HyperSpace) -> None:
        super().__init__(config, space)
        self._method = "double-backward"


class TestDeltaSTNDoubleBackwardConformance(ResponseConformance):
    response_cls = _DoubleBackward


def build(model: str, *extra: str) -> Built:
    recipe, overrides = MODELS[model]
    return prepare(RECIPES / recipe, [*overrides, DELTA, *extra])


def first_batches(built: Built, count: int) -> list[Batch]:
    batches = built.dataset.train_batches(1, torch.Generator().manual_seed(0))
    return [batch for batch, _ in zip(batches, range(count), strict=False)]


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def parts_of(built: Built) -> tuple[list[Tensor], list[Tensor]]:
    """(general, response) tensors, cloned."""
    split = split_parameters(built.parts.model)
    return (
        [t.detach().clone() for t in split.general.tensors],
        [t.detach().clone() for t in split.response.tensors],
    )


def plain_twin(built: Built) -> nn.Module:
    """The same model built without response branches, holding the elementary weights."""
    chosen = built.resolved.model
    plain: nn.Module = chosen.cls(chosen.config, built.dataset.info, 0)
    full = dict(built.parts.model.named_parameters())
    with torch.no_grad():
        for name, param in plain.named_parameters():
            source = full[name]
            if source.shape != param.shape:  # a stacked parameter: take its elementary part
                (dim,) = [d for d in range(source.dim()) if source.shape[d] == 2 and param.shape[d] == 1]
                source = source.narrow(dim, 0, 1)
            param.copy_(source)
    for name, buffer in plain.named_buffers():
        buffer.copy_(dict(built.parts.model.named_buffers())[name])
    return plain


@pytest.mark.parametrize("model", list(MODELS))
def test_v_starts_at_zero_and_the_split_covers_every_weight_once(model: str) -> None:
    built = build(model)
    split = split_parameters(built.parts.model)
    assert split.hyper_weights and all(bool((v == 0).all()) for v in split.hyper_weights)
    total = sum(p.numel() for p in built.parts.model.parameters())
    general = sum(t.numel() for t in split.general.tensors)
    response = sum(t.numel() for t in split.response.tensors)
    assert general + response == total
    # the optimizers hold exactly those tensors: general in train.optimizer, response in its own
    weight_opt = [p for g in built.parts.weight_optimizer.param_groups for p in g["params"]]
    response_opt = built.response.response_optimizer  # type: ignore[attr-defined]
    assert sum(p.numel() for p in weight_opt) == general
    assert sum(p.numel() for g in response_opt.param_groups for p in g["params"]) == response
    # views share storage with the parameters: writing one writes the model
    marker = split.response.tensors[0]
    with torch.no_grad():
        marker.add_(1.0)
    assert any(bool((p == marker.flatten()[0]).any()) for p in built.parts.model.parameters())


@pytest.mark.parametrize("model", list(MODELS))
def test_at_the_current_h_the_model_is_the_plain_network(model: str) -> None:
    built = build(model)
    space, network = built.parts.space, built.parts.model
    with torch.no_grad():  # a trained response: V and the response weights far from zero
        for v in split_parameters(network).hyper_weights:
            v.normal_(0.0, 1.0)
        space.h.add_(0.3)
    plain = plain_twin(built)
    batch = first_batches(built, 1)[0]
    network.eval()
    plain.eval()
    centre = space.expand(batch.size)
    centred = space.batch(centre.detach(), hnet=centre - space.h.detach())  # λ̃ = h: input 0
    assert bool((centred.hnet == 0).all())  # type: ignore[union-attr]
    with torch.no_grad():
        network.reset_state("eval")
        gated = network(batch.inputs, centred, stream="eval").prediction
        plain.reset_state("eval")  # type: ignore[operator]
        reference = plain(batch.inputs, space.batch(centre.detach(), hnet=None), stream="eval").prediction
        network.reset_state("eval")
        evaluated = network(batch.inputs, built.response.eval_batch(batch.size), stream="eval").prediction
        # and a perturbed input really does change the output: the check can fail
        network.reset_state("eval")
        moved = space.batch(centre.detach(), hnet=torch.ones_like(centre))
        perturbed = network(batch.inputs, moved, stream="eval").prediction
    torch.testing.assert_close(gated, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(evaluated, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(perturbed, reference, atol=1e-3)


def _linearized(built: Built, method: str) -> tuple[Tensor, list[Tensor]]:
    """The linearized prediction on a perturbed batch and its gradients in the response weights."""
    network, space = built.parts.model, built.parts.space
    batch = first_batches(built, 1)[0]
    torch.manual_seed(5)
    lam = space.sample(batch.size).detach()
    delta = lam - space.expand(batch.size).detach()
    at_lam = space.batch(lam, hnet=None)
    inputs = built.parts.augment(batch.inputs, at_lam)
    network.train()

    def forward(hnet: Tensor) -> Tensor:
        network.reset_state("train")
        torch.manual_seed(6)  # the same dropout masks in both methods
        out: Tensor = network(
            inputs, HyperBatch(hnet, at_lam.values, at_lam.kinds), stream="train"
        ).prediction
        return out

    prediction = linearized_prediction(forward, torch.zeros_like(delta), delta, method)  # type: ignore[arg-type]
    loss = built.parts.task.loss(prediction, batch.targets)
    split = split_parameters(network)
    grads = torch.autograd.grad(loss, split.response.bases)
    return prediction.detach(), [g.detach() for g in grads]


@pytest.mark.parametrize("model", list(MODELS))
def test_jvp_and_double_backward_agree(model: str) -> None:
    built = build(model)
    with torch.no_grad():
        for v in split_parameters(built.parts.model).hyper_weights:
            v.normal_(0.0, 0.1)
    state = snapshot(built.parts.model)
    by_jvp, grads_jvp = _linearized(built, "jvp")
    built.parts.model.load_state_dict(state)
    by_trick, grads_trick = _linearized(built, "double-backward")
    torch.testing.assert_close(by_jvp, by_trick, atol=1e-5, rtol=1e-4)
    assert any(float(g.abs().max()) > 0 for g in grads_jvp)
    for a, b in zip(grads_jvp, grads_trick, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_linearization_is_not_the_plain_forward() -> None:
    """For a nonlinear network the two response fits differ (else ``linearize`` would be idle)."""
    built = build("stn-mlp")
    with torch.no_grad():
        for v in split_parameters(built.parts.model).hyper_weights:
            v.normal_(0.0, 1.0)
    network, space = built.parts.model, built.parts.space
    batch = first_batches(built, 1)[0]
    lam = space.sample(batch.size).detach()
    delta = lam - space.expand(batch.size).detach()
    network.eval()
    values = space.batch(lam, hnet=None)

    def forward(hnet: Tensor) -> Tensor:
        out: Tensor = network(batch.inputs, HyperBatch(hnet, values.values, values.kinds)).prediction
        return out

    linear = linearized_prediction(forward, torch.zeros_like(delta), delta, "jvp")
    assert not torch.allclose(linear, forward(delta), atol=1e-4)


@pytest.mark.parametrize("model", list(MODELS))
def test_each_update_moves_only_its_own_weights(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    built = build(model)
    parts, response = built.parts, built.response
    batches = first_batches(built, 2)
    response.weight_step(parts, batches[0])  # moves V off zero, so W_h gets gradients too
    general, responding = parts_of(built)

    monkeypatch.setattr(response.response_optimizer, "step", lambda: None)  # type: ignore[attr-defined]
    response.weight_step(parts, batches[1])
    after_general, after_response = parts_of(built)
    assert all(torch.equal(a, b) for a, b in zip(responding, after_response, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(general, after_general, strict=True))
    monkeypatch.undo()

    monkeypatch.setattr(parts.weight_optimizer, "step", lambda: None)
    response.weight_step(parts, batches[1])
    final_general, final_response = parts_of(built)
    assert all(torch.equal(a, b) for a, b in zip(after_general, final_general, strict=True))
    changed = [not torch.equal(a, b) for a, b in zip(after_response, final_response, strict=True)]
    assert sum(changed) >= 2  # V and the response weights


@pytest.mark.parametrize("model", list(MODELS))
def test_a_hyper_step_changes_only_h_and_s(model: str) -> None:
    built = build(model)
    parts, response = built.parts, built.response
    for batch in first_batches(built, 3):
        response.weight_step(parts, batch)
    weights = snapshot(parts.model)
    optimizers = copy.deepcopy(
        [parts.weight_optimizer.state_dict(), response.state_dict()["response_optimizer"]]
    )
    h, s = parts.space.h.detach().clone(), parts.space.s.detach().clone()
    hyper_batch = next(built.dataset.hyper_batches(torch.Generator().manual_seed(0)))
    loss = response.hyper_step(parts, hyper_batch)
    assert torch.isfinite(loss)
    moved = parts.space.h.detach() != h
    assert bool(moved[parts.space.tuned].all()), "every tuned hyperparameter gets a hypergradient"
    assert not torch.equal(parts.space.s.detach(), s)
    for key, value in snapshot(parts.model).items():
        assert torch.equal(value, weights[key]), key
    after = [parts.weight_optimizer.state_dict(), response.state_dict()["response_optimizer"]]
    assert str(after) == str(optimizers)


def test_h_and_s_have_their_own_optimizers() -> None:
    built = build(
        "stn-mlp", "train.hyper_optimizer.lr=0.05", 'train.scale_optimizer={"name": "sgd", "lr": 0.5}'
    )
    parts, response = built.parts, built.response
    hyper = [p for g in parts.hyper_optimizer.param_groups for p in g["params"]]  # type: ignore[union-attr]
    assert len(hyper) == 1 and hyper[0] is parts.space.h
    scale = response.scale_optimizer  # type: ignore[attr-defined]
    assert isinstance(scale, torch.optim.SGD) and scale.param_groups[0]["params"][0] is parts.space.s
    default = build("stn-mlp", "train.hyper_optimizer.lr=0.05").response.scale_optimizer  # type: ignore[attr-defined]
    assert isinstance(default, torch.optim.Adam) and default.param_groups[0]["lr"] == 0.05


def test_by_default_the_response_moves_at_a_tenth_of_the_weights_rate() -> None:
    built = build("stn-mlp", 'train.optimizer={"name": "adam", "lr": 0.02, "betas": [0.8, 0.99]}')
    parts, response = built.parts, built.response
    default = response.response_optimizer  # type: ignore[attr-defined]
    assert isinstance(default, torch.optim.Adam)
    assert default.param_groups[0]["lr"] == pytest.approx(0.002)
    assert default.param_groups[0]["betas"] == (0.8, 0.99)  # every other setting is the weights'
    response.weight_step(parts, first_batches(built, 1)[0])
    assert default.param_groups[0]["lr"] == pytest.approx(0.002)  # and it holds while lr does
    assert parts.weight_optimizer.param_groups[0]["lr"] == pytest.approx(0.02)


def test_the_response_learning_rate_follows_the_weight_decay_of_lr() -> None:
    built = build("stn-mlp", 'train.response_optimizer={"name": "sgd", "lr": 0.2}')
    parts, response = built.parts, built.response
    batch = first_batches(built, 1)[0]
    response.weight_step(parts, batch)
    assert response.response_optimizer.param_groups[0]["lr"] == pytest.approx(0.2)  # type: ignore[attr-defined]
    for group in parts.weight_optimizer.param_groups:
        group["lr"] *= 0.25  # what the engine's learning-rate decay does
    response.weight_step(parts, batch)
    assert response.response_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # type: ignore[attr-defined]


def test_auto_falls_back_to_double_backward_without_a_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(break_jvp: bool) -> dict[str, Tensor]:
        built = build("stn-mlp", 'response={"name": "delta-stn"}')
        if not break_jvp:
            built.response._method = "double-backward"  # type: ignore[attr-defined]
        else:

            def broken(*args: Any, **kwargs: Any) -> Any:
                torch.rand(100)  # consume randomness, as a half-run forward pass would
                raise RuntimeError("this op has no forward-mode AD formula")

            monkeypatch.setattr(torch.func, "jvp", broken)
        for batch in first_batches(built, 2) * 2:
            built.response.weight_step(built.parts, batch)
        monkeypatch.undo()
        assert built.response._method == "double-backward"  # type: ignore[attr-defined]
        return snapshot(built.parts.model)

    fallback = run(break_jvp=True)
    direct = run(break_jvp=False)
    for key, value in direct.items():
        torch.testing.assert_close(fallback[key], value, atol=0, rtol=0)


def test_a_model_without_best_response_layers_is_a_clear_error() -> None:
    from stnkit.testing import make_space

    class Plain(nn.Module):
        name = "plain"

        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(3, 1)

    space = make_space({"weight_decay": {"kind": "positive", "init": 0.1}})
    response = DeltaSTNResponse(DeltaSTNResponse.Config(), space)
    train = build("stn-mlp").recipe.train
    with pytest.raises(UsageError, match="needs a model built from stnkit.nn best-response layers"):
        response.weight_parameters(Plain(), train)  # type: ignore[arg-type]


def test_augmentations_and_every_cnn_hyperparameter_under_delta_stn() -> None:
    """cifar10-small declares all seven augmentations; each hyperparameter gets a hypergradient."""
    built = build("stn-cnn")
    assert len(built.parts.augmentations) == 7
    parts, response = built.parts, built.response
    torch.manual_seed(0)
    for batch in first_batches(built, 3):
        response.weight_step(parts, batch)
    response.hyper_step(parts, next(built.dataset.hyper_batches(torch.Generator())))
    grad = parts.space.h.grad
    assert grad is not None
    for i, name in enumerate(parts.space.names):
        assert float(grad[i].abs()) > 0, f"no hypergradient for {name}"


@pytest.mark.parametrize("model", ["stn-lstm", "stn-cnn", "stn-alexnet"])
def test_recipes_run_end_to_end(model: str, tmp_path: Path) -> None:
    recipe, overrides = MODELS[model]
    extra = [
        "train.epochs=1" if model == "stn-lstm" else "train.epochs=2",
        "train.warmup_epochs=0",
        f"store.dir={tmp_path}",
    ]
    result = stnkit.run(RECIPES / recipe, overrides=[*overrides, DELTA, *extra])
    assert result.status == "completed", result.end.message
    record = stnkit.open_run(result.path)  # type: ignore[arg-type]
    assert record.attrs["response"] == "delta-stn"
    assert len(record.hyper["step"]) > 0 and record.test


def test_plugins_lists_delta_stn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    assert "delta-stn" in json.dumps(json.loads(capsys.readouterr().out))


def test_replay_and_show_a_delta_stn_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stnkit.analysis.replay import replay

    recipe = write_recipe(tmp_path, response={"name": "delta-stn"}, train__epochs=3)
    result = stnkit.run(recipe)
    assert result.status == "completed"
    for final in (False, True):
        replayed = replay(result.path, final=final, out_dir=tmp_path / "replays")  # type: ignore[arg-type]
        assert replayed.status == "completed"
        assert stnkit.open_run(replayed.path).attrs["response"] == "fixed"  # type: ignore[arg-type]
    assert main(["show", str(result.path)]) == 0
    assert "delta-stn" in capsys.readouterr().out


def test_stn_takes_a_separate_scale_optimizer(tmp_path: Path) -> None:
    """The released CIFAR STN runs one Adam on h and another on s. Adam is elementwise, so two
    Adams with the same settings follow one joint Adam; a different one changes only how s moves.
    The hyper lr is held constant: a schedule sets the rate of hyper_optimizer, not of a separate
    scale optimizer."""
    from tests.test_resume import trajectories

    def run(folder: str, **changes: Any) -> dict[str, Any]:
        constant = {"train__hyper_lr_schedule": "constant"}
        result = stnkit.run(write_recipe(tmp_path / folder, train__epochs=4, **constant, **changes))
        assert result.status == "completed"
        return trajectories(result.path)  # type: ignore[arg-type]

    joint = run("joint")
    same = run("same", train__scale_optimizer={"name": "adam", "lr": 0.1})
    other = run("other", train__scale_optimizer={"name": "sgd", "lr": 0.01})
    for key in ("hyper.values", "hyper.scales", "hyper.val_loss"):
        torch.testing.assert_close(torch.as_tensor(same[key]), torch.as_tensor(joint[key]))
    assert not torch.allclose(torch.as_tensor(other["hyper.scales"]), torch.as_tensor(joint["hyper.scales"]))
    built = prepare(write_recipe(tmp_path / "b", train__scale_optimizer={"name": "sgd", "lr": 0.01}))
    hyper = [p for g in built.parts.hyper_optimizer.param_groups for p in g["params"]]  # type: ignore[union-attr]
    assert len(hyper) == 1 and hyper[0] is built.parts.space.h
    assert set(built.response.state_dict()) == {"scale_optimizer"}


def test_compare_and_plot_label_the_response(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stnkit.analysis.common import run_labels

    paths = []
    for response in ("stn", "delta-stn"):
        result = stnkit.run(write_recipe(tmp_path / response, response={"name": response}, train__epochs=2))
        paths.append(result.path)
    records = [stnkit.open_run(p) for p in paths]  # type: ignore[arg-type]
    assert run_labels(records) == ["ridge (stn)", "ridge (delta-stn)"]
    assert main(["compare", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    assert "delta-stn" in out and "stn" in out.replace("delta-stn", "")
    figure = tmp_path / "runs.png"
    assert main(["plot", *map(str, paths), "--output", str(figure)]) == 0
    assert figure.stat().st_size > 0


def test_without_tuned_scales_the_hyper_step_sees_the_centre(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tune: false``: the hypernet input is ``h − h.detach()`` — zero, yet h gets a gradient."""
    built = build("stn-mlp", "train.perturbation.tune=false")
    parts, response = built.parts, built.response
    for batch in first_batches(built, 2) * 2:
        response.weight_step(parts, batch)
    seen: list[Tensor] = []
    forward = type(parts.model).forward

    def spy(self: Any, inputs: Tensor, hp: HyperBatch, stream: str = "train") -> Any:
        if stream == "hyper":
            seen.append(hp.hnet.detach().clone())  # type: ignore[union-attr]
        return forward(self, inputs, hp, stream)

    monkeypatch.setattr(type(parts.model), "forward", spy)
    h, s = parts.space.h.detach().clone(), parts.space.s.detach().clone()
    response.hyper_step(parts, next(built.dataset.hyper_batches(torch.Generator().manual_seed(0))))
    assert len(seen) == 1 and bool((seen[0] == 0).all())
    assert not torch.equal(parts.space.h.detach(), h)
    assert torch.equal(parts.space.s.detach(), s)
