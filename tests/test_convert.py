"""Conversion of plain torch modules to best-response form (stnkit.convert)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from stnkit.convert import ConvertedModel, ConvertError, ConvertSpec, convert_module
from stnkit.hyper.space import HyperBatch
from stnkit.nn import count_parameters, split_parameters, zero_hyper_weights
from tests.own_models import (
    LSTMLM,
    FunctionalDropoutMLP,
    NoLayers,
    PlainMLP,
    SmallCNN,
    TransformerLM,
    WithGRU,
)


def _batch(size: int, n_hyper: int, values: dict[str, float], hnet: str = "random") -> HyperBatch:
    if hnet == "none" or n_hyper == 0:
        h = None
    elif hnet == "zero":
        h = torch.zeros(size, n_hyper)
    else:
        h = torch.randn(size, n_hyper)
    return HyperBatch(hnet=h, values={k: torch.full((size,), v) for k, v in values.items()})


def _same_function(
    original: nn.Module, converted: ConvertedModel, inputs: Tensor, values: dict[str, float]
) -> None:
    """Converted in eval mode computes the original: plain (no hypernet input), at a zero
    hypernet input and, with V exactly zero (Δ-STN's start), at any hypernet input."""
    original.eval()
    converted.eval()
    with torch.no_grad():
        expected = original(inputs)
        size = inputs.shape[0]
        n = converted.n_hyper
        for mode in ("none", "zero"):
            got = converted(inputs, _batch(size, n, values, mode)).prediction
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        zero_hyper_weights(converted)
        got = converted(inputs, _batch(size, n, values)).prediction
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_mlp_starts_as_the_original_function() -> None:
    torch.manual_seed(0)
    model = PlainMLP()
    original = copy.deepcopy(model)
    converted = convert_module(model, ConvertSpec(), 2, ["dropout", "weight_decay"])
    assert converted.module is model
    assert type(model) is PlainMLP  # the user's class stays
    _same_function(original, converted, torch.randn(6, 8), {"dropout": 0.3, "weight_decay": 0.0})


def test_fixed_conversion_builds_one_stack_layers() -> None:
    model = PlainMLP()
    converted = convert_module(model, ConvertSpec(), 0, ["dropout"])
    assert model.fc1.weight.shape == (1, 16, 8)
    assert not any(name.startswith("hyper") for name, _ in converted.named_parameters())


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_starts_as_the_original_function(batch_first: bool) -> None:
    torch.manual_seed(0)
    model = TransformerLM(batch_first=batch_first)
    original = copy.deepcopy(model)
    names = ["attn_dropout", "dropout", "weight_decay"]
    converted = convert_module(model, ConvertSpec(), 3, names)
    kinds = {row.before for row in converted.report}
    assert {"Embedding", "TransformerEncoderLayer", "Linear", "Dropout"} <= kinds
    assert converted.report.dropout["attn_dropout"] == [
        "encoder.layers.0.self_attn.dropout",
        "encoder.layers.1.self_attn.dropout",
    ]
    tokens = torch.randint(0, 50, (4, 7))
    _same_function(original, converted, tokens, {"attn_dropout": 0.2, "dropout": 0.1, "weight_decay": 0.0})


def test_transformer_fast_path_does_not_bypass_the_converted_layers() -> None:
    torch.manual_seed(0)
    model = TransformerLM()
    converted = convert_module(model, ConvertSpec(), 1, ["dropout"])
    converted.eval()
    tokens = torch.randint(0, 50, (2, 5))
    padding = torch.zeros(2, 5, dtype=torch.bool)
    with torch.no_grad():
        base = converted(tokens, _batch(2, 1, {"dropout": 0.0}, "zero")).prediction
        for layer in model.encoder.layers:
            nn.init.constant_(layer.linear2.hyper_weight, 1.0)
        moved = converted(tokens, _batch(2, 1, {"dropout": 0.0}, "random")).prediction
        # the response branch is live in eval mode without gradients: no fused kernel skips it
        assert (moved - base).abs().max() > 1e-3
        model.encoder(model.embed(tokens), src_key_padding_mask=padding)  # no fused path either


@pytest.mark.parametrize("batch_first", [True, False])
def test_lstm_starts_as_the_original_function(batch_first: bool) -> None:
    torch.manual_seed(0)
    model = LSTMLM(batch_first=batch_first)
    original = copy.deepcopy(model)
    converted = convert_module(model, ConvertSpec(), 2, ["rnn_dropout", "output_dropout"])
    assert converted.report.dropout == {"output_dropout": ["output_dropout"], "rnn_dropout": ["rnn.dropout"]}
    tokens = torch.randint(0, 50, (3, 6))
    _same_function(original, converted, tokens, {"rnn_dropout": 0.2, "output_dropout": 0.1})


def test_cnn_starts_as_the_original_function() -> None:
    torch.manual_seed(0)
    model = SmallCNN()
    original = copy.deepcopy(model)
    converted = convert_module(model, ConvertSpec(), 2, ["dropout", "weight_decay"])
    assert {row.path for row in converted.report} == {"conv1", "conv2", "drop2d", "rows", "head"}
    _same_function(original, converted, torch.randn(3, 3, 8, 8), {"dropout": 0.3, "weight_decay": 0.0})


def test_weight_decay_penalty_is_the_effective_squared_norm() -> None:
    torch.manual_seed(0)
    model = PlainMLP()
    plain_norm = float(model.fc1.weight.detach().pow(2).sum() + model.fc2.weight.detach().pow(2).sum())
    converted = convert_module(model, ConvertSpec(), 1, ["weight_decay"])
    converted.train()
    x = torch.randn(4, 8)
    out = converted(x, _batch(4, 1, {"weight_decay": 0.5}, "zero"))
    assert out.penalty is not None
    assert abs(float(out.penalty.detach()) - 0.5 * plain_norm) < 1e-4
    # per example: value_i × ‖W_e + diag(V·λ_i) W_h‖², averaged over the batch
    hnet = torch.randn(4, 1)
    values = torch.tensor([0.0, 1.0, 2.0, 3.0])
    out = converted(x, HyperBatch(hnet=hnet, values={"weight_decay": values}))
    expected = torch.zeros(())
    for i in range(4):
        for layer in (model.fc1, model.fc2):
            assert layer.hyper_weight is not None
            gate = hnet[i] @ layer.hyper_weight[: layer.out_features].t()
            effective = layer.weight[0] + gate[:, None] * layer.weight[1]
            expected = expected + values[i] * effective.pow(2).sum() / 4
    assert out.penalty is not None
    torch.testing.assert_close(out.penalty, expected)
    converted.eval()
    assert converted(x, _batch(4, 1, {"weight_decay": 0.5})).penalty is None


def test_default_weight_decay_leaves_out_biases_and_norms() -> None:
    converted = convert_module(TransformerLM(), ConvertSpec(), 1, ["weight_decay"])
    decayed = converted.report.weight_decay["weight_decay"]
    assert "encoder.layers.0.self_attn.in_proj_weight" in decayed
    assert "embed.weight" in decayed
    assert not [name for name in decayed if "bias" in name or "norm" in name]


def test_explicit_patterns_choose_dropouts_and_parameters() -> None:
    spec = ConvertSpec(
        dropout={"residual": ["*.dropout1", "*.dropout2"]},
        weight_decay={"decoder_decay": "decoder.*"},
    )
    converted = convert_module(TransformerLM(), spec, 2, ["residual", "decoder_decay"])
    assert converted.report.dropout["residual"] == [
        f"encoder.layers.{i}.dropout{j}" for i in range(2) for j in (1, 2)
    ]
    assert converted.report.weight_decay["decoder_decay"] == ["decoder.weight", "decoder.bias"]
    assert set(converted.consumed()) == {"residual", "decoder_decay"}


def test_converted_dropout_uses_the_per_example_rate() -> None:
    model = PlainMLP(p=0.0)
    converted = convert_module(model, ConvertSpec(targets=["fc1"]), 1, ["input_dropout"])
    converted.train()
    seen: list[Tensor] = []
    model.fc1.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    x = torch.ones(2, 8).repeat(200, 1)
    rates = torch.tensor([0.0, 0.75]).repeat(200)
    converted(x, HyperBatch(hnet=None, values={"input_dropout": rates}))
    kept = (seen[0] != 0).float()
    assert float(kept[rates == 0.0].mean()) == 1.0
    assert abs(float(kept[rates == 0.75].mean()) - 0.25) < 0.05
    # outside a converted model's forward, the module's own rate applies (here 0)
    assert torch.equal(model.input_drop(x), x)


def test_context_is_cleared_after_an_exception() -> None:
    model = PlainMLP()
    converted = convert_module(model, ConvertSpec(), 1, ["dropout"])
    with pytest.raises(RuntimeError):
        converted(torch.randn(2, 5), _batch(2, 1, {"dropout": 0.1}))
    assert not converted.context.active and converted.context.hnet is None


def test_tuple_and_dict_inputs() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 2)

        def forward(self, x: Tensor, y: Tensor) -> Tensor:
            return self.a(x) + y

    converted = convert_module(Two(), ConvertSpec(), 1, [])
    x, y = torch.randn(2, 3), torch.randn(2, 2)
    hp = _batch(2, 1, {})
    torch.testing.assert_close(converted((x, y), hp).prediction, converted({"x": x, "y": y}, hp).prediction)


# -- errors ------------------------------------------------------------------------------------


def test_nothing_to_convert() -> None:
    with pytest.raises(ConvertError, match="nothing to convert"):
        convert_module(NoLayers(), ConvertSpec(), 1, [])


def test_unconsumed_hyperparameter_is_named_with_what_exists() -> None:
    with pytest.raises(ConvertError, match=r"'attn_dropout'.*dropout modules: input_drop, drop") as error:
        convert_module(PlainMLP(), ConvertSpec(), 1, ["attn_dropout"])
    assert error.value.location == "hyperparameters.attn_dropout"
    with pytest.raises(ConvertError, match="'momentum'"):
        convert_module(PlainMLP(), ConvertSpec(), 1, ["momentum"])


def test_dropout_pattern_matching_nothing() -> None:
    spec = ConvertSpec(dropout={"dropout": ["encoder.*"]})
    with pytest.raises(ConvertError, match=r"'encoder\.\*'.*matches nothing") as error:
        convert_module(PlainMLP(), spec, 1, ["dropout"])
    assert error.value.location == "dropout.dropout"


def test_weight_decay_pattern_matching_nothing() -> None:
    spec = ConvertSpec(weight_decay={"weight_decay": ["conv*.weight"]})
    with pytest.raises(ConvertError, match=r"'conv\*\.weight'.*matches nothing.*fc1\.weight") as error:
        convert_module(PlainMLP(), spec, 1, ["weight_decay"])
    assert error.value.location == "weight_decay.weight_decay"


def test_target_pattern_matching_nothing() -> None:
    with pytest.raises(ConvertError, match="'fc9' matches no module"):
        convert_module(PlainMLP(), ConvertSpec(targets=["fc9"]), 1, [])


def test_functional_dropout_is_reported_with_its_call() -> None:
    with pytest.raises(
        ConvertError, match=r"own_models\.py:\d+: F\.dropout\(\.\.\.\) in FunctionalDropoutMLP"
    ):
        convert_module(FunctionalDropoutMLP(), ConvertSpec(), 1, ["weight_decay", "dropout"])


def test_unconvertible_layer_in_the_targets_is_named() -> None:
    with pytest.raises(ConvertError, match=r"'rnn' is a GRU"):
        convert_module(WithGRU(), ConvertSpec(), 1, [])
    converted = convert_module(WithGRU(), ConvertSpec(exclude=["rnn"]), 1, [])
    assert [row.path for row in converted.report] == ["head"]


def test_unsupported_options_are_named() -> None:
    model = nn.Sequential(nn.LSTM(3, 4, bidirectional=True))
    with pytest.raises(ConvertError, match=r"'0' \(LSTM\) cannot be converted: bidirectional"):
        convert_module(model, ConvertSpec(), 1, [])
    conv = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ConvertError, match="grouped convolution"):
        convert_module(conv, ConvertSpec(), 1, [])
    for other in ({"kdim": 6}, {"vdim": 6}):
        attention = nn.Sequential(nn.MultiheadAttention(8, 2, **other))
        with pytest.raises(ConvertError, match="kdim or vdim differ from embed_dim"):
            convert_module(attention, ConvertSpec(), 1, [])


def test_tied_weights_are_refused() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.decoder = nn.Linear(4, 10)
            self.decoder.weight = self.embed.weight

        def forward(self, x: Tensor) -> Tensor:
            return self.decoder(self.embed(x))

    with pytest.raises(ConvertError, match="tied weights"):
        convert_module(Tied(), ConvertSpec(), 1, [])


def test_converting_twice_is_refused() -> None:
    model = PlainMLP()
    converted = convert_module(model, ConvertSpec(), 1, ["dropout"])
    with pytest.raises(ConvertError, match="already converted"):
        convert_module(model, ConvertSpec(), 1, ["dropout"])
    with pytest.raises(ConvertError, match="already converted"):
        convert_module(converted, ConvertSpec(), 1, ["dropout"])


@pytest.mark.parametrize("factory", [PlainMLP, SmallCNN, TransformerLM, LSTMLM])
def test_delta_stn_splits_converted_layers_into_general_and_response(factory: type[nn.Module]) -> None:
    """Δ-STN updates the elementary halves with one optimizer and the response halves with
    another: the general group must be exactly the original module's weights."""
    model = factory()
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    converted = convert_module(model, ConvertSpec(), 2, [])
    split = split_parameters(converted)
    general = sorted(t.numel() for t in split.general.tensors)
    assert general == sorted(p.numel() for p in original.values())
    assert count_parameters(converted)[0] == sum(p.numel() for p in original.values())
    assert split.hyper_weights, "no V was found"


def test_functional_dropout_without_readable_source_is_caught_at_the_first_training_pass() -> None:
    namespace: dict[str, object] = {"nn": nn, "torch": torch}
    exec(  # a class whose source inspect cannot read, as in some notebooks
        "class Hidden(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n"
        "        self.drop = nn.Dropout(0.1)\n"
        "    def forward(self, x):\n"
        "        return torch.nn.functional.dropout(self.drop(self.fc(x)), 0.3, self.training)\n",
        namespace,
    )
    model = namespace["Hidden"]()  # type: ignore[operator]
    converted = convert_module(model, ConvertSpec(), 1, ["dropout"])
    converted.eval()
    converted(torch.randn(2, 4), _batch(2, 1, {"dropout": 0.1}))  # eval: not checked, no error
    converted.train()
    with pytest.raises(ConvertError, match=r"<string>:7: dropout\(\.\.\.\) in the model's forward"):
        converted(torch.randn(2, 4), _batch(2, 1, {"dropout": 0.1}))


def test_module_dropouts_pass_the_run_time_check() -> None:
    model = TransformerLM()
    converted = convert_module(model, ConvertSpec(targets=["decoder"]), 1, ["dropout"])
    converted.train()
    converted(torch.randint(0, 50, (2, 5)), _batch(2, 1, {"dropout": 0.1}))  # no error
    assert not converted._watch_dropout_calls


def test_a_failed_conversion_leaves_the_module_as_it_was() -> None:
    model = PlainMLP()
    before = {name: type(sub) for name, sub in model.named_modules()}
    with pytest.raises(ConvertError, match="'momentum'"):
        convert_module(model, ConvertSpec(), 1, ["dropout", "momentum"])
    assert {name: type(sub) for name, sub in model.named_modules()} == before
    convert_module(model, ConvertSpec(), 1, ["dropout"])  # the corrected call converts it


class _CrossAttention(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=batch_first)

    def forward(self, query: Tensor, memory: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        out, weights = self.attn(query, memory, memory, key_padding_mask=padding)
        return out, weights


@pytest.mark.parametrize("batch_first", [True, False])
def test_standalone_attention_keeps_outputs_and_weights(batch_first: bool) -> None:
    torch.manual_seed(0)
    model = _CrossAttention(batch_first)
    original = copy.deepcopy(model).eval()
    converted = convert_module(model, ConvertSpec(), 1, ["attn_dropout"])
    converted.eval()
    shape = (3, 4, 8) if batch_first else (4, 3, 8)
    memory_shape = (3, 6, 8) if batch_first else (6, 3, 8)
    query, memory = torch.randn(shape), torch.randn(memory_shape)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[:, -2:] = True
    with torch.no_grad():
        expected = original(query, memory, padding)
        got = converted((query, memory, padding), _batch(3, 1, {"attn_dropout": 0.1}, "zero")).prediction
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], expected[1], atol=1e-6, rtol=0)
    assert converted.report.dropout == {"attn_dropout": ["attn.dropout"]}
