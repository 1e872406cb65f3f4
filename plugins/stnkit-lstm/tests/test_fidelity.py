"""stn-lstm against the released STN code (asteroidhouse/self-tuning-networks, lstm/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import stnkit
from stnkit.data import BuildContext, DataInfo
from stnkit.errors import DataError
from stnkit.recipe import load_recipe
from stnkit.runner import prepare
from stnkit.task import LanguageModelTask
from stnkit.testing import make_space
from stnkit_lstm import STNLSTM, PTBData

REPO = Path(__file__).parents[3]
PTB_ZIP = REPO / "recipes" / "data" / "ptb.zip"
VOCAB = 40
RATES = ("dropout_output", "dropout_input", "dropout_hidden", "dropout_embedding", "weight_drop")


def _model(decoder: str, n_hyper: int = 1, tie: bool = True) -> STNLSTM:
    torch.manual_seed(0)
    info = DataInfo(LanguageModelTask(VOCAB), (6,), 1, 100, 100, output_size=VOCAB)
    config = STNLSTM.Config(embedding_size=8, hidden_size=8, layers=2, tie_weights=tie, decoder=decoder)
    return STNLSTM(config, info, n_hyper)


def _space(embedding_drop: float):  # type: ignore[no-untyped-def]
    constants = {name: 0.0 for name in RATES} | {"activation_reg": 0.0, "temporal_activation_reg": 0.0}
    constants["dropout_embedding"] = embedding_drop
    return make_space({"dropout_output": {"kind": "unit", "init": 0.05}}, constants=constants)


@pytest.mark.parametrize("decoder", ["plain", "response"])
def test_dropped_words_are_still_decoded_from_the_hidden_state(decoder: str) -> None:
    # with nearly every word dropped from the embedding table, a decoder reading the dropped
    # table gives a dropped word the same logit (its bias) at every position, whatever the state
    model = _model(decoder).train()
    space = _space(0.99)
    hp = space.batch(space.h.detach().expand(3, 1), hnet=torch.randn(3, 1))
    tokens = torch.randint(0, VOCAB, (3, 6), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    logits = model(tokens, hp).prediction  # (3, 6, V)
    spread = logits.reshape(-1, VOCAB).std(dim=0)
    assert bool((spread > 1e-4).all()), f"{int((spread <= 1e-4).sum())} words have a constant logit"


def test_tied_decoder_is_the_undropped_table() -> None:
    # the logits are exactly out · E_e[w] + b_w with the table itself, not a 1/(1-p) scaled copy
    model = _model("plain").train()
    space = _space(0.5)
    captured: list[torch.Tensor] = []
    model.rnns[-1].register_forward_hook(lambda _m, _i, out: captured.append(out[0]))
    tokens = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    hp = space.batch(space.h.detach().expand(2, 1), hnet=torch.zeros(2, 1))
    logits = model(tokens, hp).prediction
    table = model.embedding.weight[:, 0]
    expected = F.linear(captured[0], table, model.decoder.bias[0])  # output dropout is 0 here
    torch.testing.assert_close(logits, expected)


def test_plain_decoder_is_the_default_and_has_no_response_branch() -> None:
    assert STNLSTM.Config().decoder == "plain"
    plain, response = _model("plain", n_hyper=3), _model("response", n_hyper=3)
    assert plain.decoder.hyper_weight is None and plain.decoder.bias.shape == (1, VOCAB)
    assert response.decoder.hyper_weight is not None and response.decoder.hyper_weight.shape == (2 * VOCAB, 3)
    untied = _model("plain", n_hyper=3, tie=False)
    assert untied.decoder.hyper_weight is None and untied.decoder.weight.shape[0] == 1
    # the plain decoder costs nothing: the two differ by the response bias row and V
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(response) - count(plain) == VOCAB + 2 * VOCAB * 3


def test_decoder_option_is_validated() -> None:
    with pytest.raises(ValueError, match="decoder"):
        STNLSTM.Config.model_validate({"decoder": "gated"})


def test_test_pass_has_its_own_batch_size_and_token_limit() -> None:
    config = PTBData.Config.model_validate(
        {"root": PTB_ZIP, "batch_size": 10, "bptt": 20, "train_tokens": 1000, "eval_batch_size": 10}
    )
    assert PTBData(config, BuildContext()).test.shape == (10, 82_430 // 10)  # default: eval_batch_size
    one = PTBData(config.model_copy(update={"test_batch_size": 1, "test_tokens": 500}), BuildContext())
    assert one.test.shape == (1, 500) and one.valid.shape[0] == 10 and one.info.n_test == 500
    first = next(one.test_batches())
    assert first.inputs.shape == (1, 20) and torch.equal(first.inputs[0], one.corpus.test[:20])
    with pytest.raises(DataError, match="too few test tokens"):
        PTBData(config.model_copy(update={"test_batch_size": 400, "test_tokens": 500}), BuildContext())


SMALL = [
    "data.train_tokens=3000",
    "data.valid_tokens=1000",
    "data.test_tokens=300",
    "model.embedding_size=16",
    "model.hidden_size=16",
]


def test_ptb_lstm_recipe_is_the_released_setting() -> None:
    recipe = load_recipe(REPO / "recipes" / "ptb-lstm.yaml")
    data, model, train = recipe.data.options(), recipe.model.options(), recipe.train
    sizes = (data["batch_size"], data["bptt"], data["eval_batch_size"], data["test_batch_size"])
    assert sizes == (40, 70, 10, 1)
    assert not data["variable_bptt"] and data.get("hyper_batch_size") is None  # hyper batch = 40
    assert model == {
        "embedding_size": 650,
        "hidden_size": 650,
        "layers": 2,
        "tie_weights": True,
        "decoder": "plain",
    }
    assert recipe.response.name == "stn" and recipe.response.options() == {}
    hp = recipe.hyperparameters
    assert {name: (entry["kind"], entry["init"]) for name, entry in hp.items()} == {
        **{name: ("unit", 0.05) for name in RATES},
        "activation_reg": ("positive", 0.05),
        "temporal_activation_reg": ("positive", 0.05),
    }
    per_batch = {name for name, entry in hp.items() if entry.get("per_example", True) is False}
    assert per_batch == {"dropout_embedding", "weight_drop", "activation_reg", "temporal_activation_reg"}
    assert (train.warmup_epochs, train.train_steps, train.hyper_steps, train.patience) == (1, 2, 1, 20)
    opt, hyper = train.optimizer, train.hyper_optimizer
    assert (opt.name, opt.lr, opt.momentum, opt.clip, opt.weight_decay) == ("sgd", 30, 0, 0.25, 0)
    assert (hyper.name, hyper.lr) == ("adam", 0.01)
    assert (train.perturbation.init_scale, train.perturbation.tune) == (1.0, False)
    decay = train.lr_decay
    assert decay is not None
    assert (decay.rule, decay.factor, decay.window, decay.stop_below) == ("nonmonotone", 0.25, 5, 3e-4)


def test_untuned_scales_give_sigma_one_no_entropy_and_hyper_steps_at_h() -> None:
    built = prepare(REPO / "recipes" / "ptb-lstm.yaml", SMALL)
    parts, response, space = built.parts, built.response, built.parts.space
    assert torch.equal(space.sigma(), torch.ones(7))
    seen: list[tuple[str, torch.Tensor | None, dict[str, torch.Tensor]]] = []
    forward = parts.model.forward

    def spy(inputs, hp, stream="train"):  # type: ignore[no-untyped-def]
        seen.append((stream, hp.hnet, dict(hp.values)))
        return forward(inputs, hp, stream)

    parts.model.forward = spy  # type: ignore[method-assign]
    s_before, h_before = space.s.detach().clone(), space.h.detach().clone()
    batches = built.dataset.train_batches(1, torch.Generator())
    response.weight_step(parts, next(batches))
    hyper_batch = next(built.dataset.hyper_batches(torch.Generator()))
    response.hyper_step(parts, hyper_batch)
    (train_hnet, hyper_hnet) = (seen[0][1], seen[1][1])
    assert seen[1][0] == "hyper" and hyper_hnet is not None and train_hnet is not None
    # the hypernetwork sees λ̃ minus the initial values (the centred input): zero at h here
    h = h_before.unsqueeze(0).expand(hyper_batch.size, 7)
    torch.testing.assert_close(hyper_hnet.detach(), h - space.h_initial, rtol=0, atol=1e-6)
    for i, name in enumerate(space.names):
        torch.testing.assert_close(seen[1][2][name].detach(), space.constrain(h)[:, i], rtol=0, atol=1e-6)
    # training steps are perturbed: per example for the locked dropouts, per batch for the rest
    assert not torch.allclose(train_hnet, (h_before - space.h_initial).expand_as(train_hnet))
    spread = train_hnet.std(dim=0)
    assert [bool(spread[space.index(n)] > 0) for n in space.names] == [
        n in ("dropout_output", "dropout_input", "dropout_hidden") for n in space.names
    ]
    assert torch.equal(space.s.detach(), s_before)  # σ is never updated: no entropy, no gradient
    assert not torch.equal(space.h.detach(), h_before)  # h is


@pytest.mark.slow
def test_ptb_lstm_recipe_runs_on_the_cpu(tmp_path: Path) -> None:
    overrides = [
        "train.max_steps=3",
        "train.warmup_epochs=0",
        "data.train_tokens=3000",
        "data.valid_tokens=1000",
        "data.test_tokens=300",
        "device=cpu",
        f"store.dir={tmp_path}",
    ]
    result = stnkit.run(REPO / "recipes" / "ptb-lstm.yaml", overrides=overrides)
    assert result.status == "completed" and result.end.step == 3
    record = stnkit.open_run(result.path)  # type: ignore[arg-type]
    assert len(record.hyper["step"]) == 1 and record.test["perplexity"] > 1
    assert record.initial_scales == {name: pytest.approx(1.0) for name in record.hyperparameters}
