"""Best-response layers: plain equivalence at zero gates, hypergradients, per-example gates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stnkit.nn import (
    BRLSTM,
    BRConv2d,
    BREmbedding,
    BRLinear,
    BRLSTMLayer,
    channel_dropout,
    dropconnect,
    dropout,
    embedding_dropout,
    locked_dropout,
)

H = 3


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def zero_gates(module: nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("hyper"):
                p.zero_()


def test_linear_equals_nn_linear_at_zero_gates() -> None:
    layer = BRLinear(7, 5, H)
    zero_gates(layer)
    ref = nn.Linear(7, 5)
    with torch.no_grad():
        ref.weight.copy_(layer.weight[0])
        ref.bias.copy_(layer.bias[0])  # type: ignore[index]
    x = torch.randn(4, 6, 7)  # extra middle dimension: gates broadcast over it
    hnet = torch.randn(4, H)
    assert torch.allclose(layer(x, hnet), ref(x), atol=1e-6)
    assert torch.allclose(layer(x, None), ref(x), atol=1e-6)


def test_linear_matches_its_formula() -> None:
    layer = BRLinear(7, 5, H)
    x, hnet = torch.randn(4, 7), torch.randn(4, H)
    we, wh = layer.weight[0], layer.weight[1]
    be, bh = layer.bias[0], layer.bias[1]  # type: ignore[index]
    vw, vb = layer.hyper_weight[:5], layer.hyper_weight[5:]
    expected = x @ we.T + be + (hnet @ vw.T) * (x @ wh.T) + (hnet @ vb.T) * bh
    assert torch.allclose(layer(x, hnet), expected, atol=1e-6)


def test_conv_equals_nn_conv_at_zero_gates() -> None:
    layer = BRConv2d(3, 8, 3, H, stride=2, padding=1)
    zero_gates(layer)
    ref = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    with torch.no_grad():
        ref.weight.copy_(layer.weight[0])
        ref.bias.copy_(layer.bias[0])  # type: ignore[index]
    x = torch.randn(2, 3, 9, 9)
    assert torch.allclose(layer(x, torch.randn(2, H)), ref(x), atol=1e-5)


def test_conv_matches_its_formula_per_channel() -> None:
    layer = BRConv2d(3, 4, 3, H, padding=1)
    x, hnet = torch.randn(2, 3, 5, 5), torch.randn(2, H)
    e = F.conv2d(x, layer.weight[0], layer.bias[0], padding=1)  # type: ignore[index]
    r = F.conv2d(x, layer.weight[1], padding=1)
    gw = (hnet @ layer.hyper_weight[:4].T)[:, :, None, None]
    gb = (hnet @ layer.hyper_weight[4:].T)[:, :, None, None]
    expected = e + gw * r + gb * layer.bias[1][None, :, None, None]  # type: ignore[index]
    assert torch.allclose(layer(x, hnet), expected, atol=1e-5)


def test_embedding_equals_nn_embedding_at_zero_gates() -> None:
    layer = BREmbedding(20, 6, H)
    zero_gates(layer)
    tokens = torch.randint(0, 20, (3, 5))
    expected = F.embedding(tokens, layer.elementary_table)
    assert torch.allclose(layer(tokens, torch.randn(3, H)), expected)
    assert torch.allclose(layer(tokens, None), expected)


def test_lstm_equals_nn_lstm_at_zero_gates() -> None:
    lstm = BRLSTM(5, 7, 2, H)
    zero_gates(lstm)
    ref = nn.LSTM(5, 7, num_layers=2, batch_first=True)
    with torch.no_grad():
        for i, layer in enumerate(lstm.layers):
            getattr(ref, f"weight_ih_l{i}").copy_(layer.weight_ih[0])
            getattr(ref, f"weight_hh_l{i}").copy_(layer.weight_hh[0])
            getattr(ref, f"bias_ih_l{i}").copy_(layer.bias_ih[0])
            getattr(ref, f"bias_hh_l{i}").copy_(layer.bias_hh[0])
    x = torch.randn(3, 6, 5)
    h0, c0 = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    expected, (hn, cn) = ref(x, (h0, c0))
    state = [(h0[i], c0[i]) for i in range(2)]
    for hnet in (torch.randn(3, H), None):
        out, last = lstm(x, hnet, state)
        assert torch.allclose(out, expected, atol=1e-5)
        assert torch.allclose(last[1][0], hn[1], atol=1e-5)
        assert torch.allclose(last[1][1], cn[1], atol=1e-5)


def _lstm_step_by_step(
    layer: BRLSTMLayer, x: torch.Tensor, hnet: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """The best-response LSTM written out one time step at a time, every map per step: the
    reference the layer's one-matmul input map and fused recurrent step must equal."""
    assert layer.hyper_ih is not None and layer.hyper_hh is not None
    gate = 4 * layer.hidden_size

    def br_map(v: torch.Tensor, w: torch.Tensor, b: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        gw, gb = (hnet @ hyper.t()).split(gate, dim=1)
        return v @ w[0].t() + gw * (v @ w[1].t()) + b[0] + gb * b[1]

    outputs = []
    for t in range(x.shape[1]):
        g = br_map(x[:, t], layer.weight_ih, layer.bias_ih, layer.hyper_ih)
        g = g + br_map(h, layer.weight_hh, layer.bias_hh, layer.hyper_hh)
        i, f, cand, o = g.split(layer.hidden_size, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def test_lstm_layer_equals_its_step_by_step_formula_forward_and_backward() -> None:
    layer = BRLSTMLayer(5, 7, H)
    with torch.no_grad():  # gates well away from zero, so the response branch matters
        assert layer.hyper_ih is not None and layer.hyper_hh is not None
        layer.hyper_ih.normal_()
        layer.hyper_hh.normal_()
    x = torch.randn(4, 9, 5, requires_grad=True)
    hnet = torch.randn(4, H, requires_grad=True)
    h0, c0 = torch.randn(4, 7), torch.randn(4, 7)
    inputs = (x, hnet, *layer.parameters())
    out, _ = layer(x, hnet, (h0, c0))
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), inputs)
    expected = _lstm_step_by_step(layer, x, hnet, h0, c0)
    weights = torch.linspace(-1, 1, expected.numel()).view_as(expected)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs)
    assert torch.allclose(out, expected, atol=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("make", "inputs"),
    [
        (lambda: BRLinear(4, 3, H), lambda: torch.randn(5, 4)),
        (lambda: BRConv2d(2, 3, 3, H), lambda: torch.randn(5, 2, 6, 6)),
        (lambda: BREmbedding(11, 4, H), lambda: torch.randint(0, 11, (5, 7))),
        (lambda: BRLSTM(4, 3, 2, H), lambda: torch.randn(5, 6, 4)),
    ],
    ids=["linear", "conv", "embedding", "lstm"],
)
class TestEveryLayer:
    def out(self, layer: nn.Module, x: torch.Tensor, hnet: torch.Tensor | None) -> torch.Tensor:
        y = layer(x, hnet)
        return y[0] if isinstance(y, tuple) else y

    def test_gradient_reaches_hyperparameters_through_the_response(self, make, inputs) -> None:  # type: ignore[no-untyped-def]
        layer, x = make(), inputs()
        h = torch.zeros(H, requires_grad=True)
        hnet = h.expand(x.shape[0], H)
        self.out(layer, x, hnet).pow(2).sum().backward()
        assert h.grad is not None and (h.grad.abs() > 0).all()

    def test_gates_are_per_example(self, make, inputs) -> None:  # type: ignore[no-untyped-def]
        layer, x = make(), inputs()
        x = x[:1].expand(3, *x.shape[1:]).contiguous()
        hnet = torch.randn(1, H).expand(3, H).clone()
        base = self.out(layer, x, hnet).detach()
        hnet[1] += 1.0
        moved = self.out(layer, x, hnet).detach()
        assert torch.allclose(moved[0], base[0]) and torch.allclose(moved[2], base[2])
        assert not torch.allclose(moved[1], base[1])

    def test_response_starts_small(self, make, inputs) -> None:  # type: ignore[no-untyped-def]
        layer, x = make(), inputs()
        hnet = torch.randn(x.shape[0], H)
        gated, plain = self.out(layer, x, hnet), self.out(layer, x, None)
        scale = plain.abs().mean()
        assert (gated - plain).abs().mean() < 0.2 * scale


def test_weight_sq_norm_matches_explicit_effective_weights() -> None:
    for layer in (BRLinear(6, 4, H), BRConv2d(2, 3, 3, H)):
        hnet = torch.randn(5, H)
        out = layer.weight.shape[1]
        gate = hnet @ layer.hyper_weight[:out].T
        we, wh = layer.weight[0], layer.weight[1]
        shape = (5, out) + (1,) * (we.dim() - 1)
        effective = we.unsqueeze(0) + gate.view(shape) * wh.unsqueeze(0)
        expected = effective.pow(2).flatten(1).sum(1)
        assert torch.allclose(layer.weight_sq_norm(hnet), expected, rtol=1e-5)
        assert torch.allclose(layer.weight_sq_norm(None), we.pow(2).sum())


def test_dropout_per_example_rates() -> None:
    x = torch.ones(3, 20000)
    out = dropout(x, torch.tensor([0.0, 0.5, 0.9]), training=True)
    assert torch.equal(out[0], x[0])
    for row, p in ((1, 0.5), (2, 0.9)):
        kept = (out[row] != 0).float().mean()
        assert float(kept) == pytest.approx(1 - p, abs=0.02)
        assert float(out[row].mean()) == pytest.approx(1.0, abs=0.1)  # inverted scaling
    assert torch.equal(dropout(x, torch.full((3,), 0.5), training=False), x)


def test_locked_dropout_shares_mask_over_time() -> None:
    x = torch.ones(4, 10, 50)
    out = locked_dropout(x, torch.full((4,), 0.5), training=True)
    assert torch.equal(out, out[:, :1].expand_as(out))
    assert (out == 0).any()


def test_embedding_dropout_drops_whole_words() -> None:
    weight = torch.ones(1000, 2, 8)  # BREmbedding's layout: (words, stacks, dim)
    out = embedding_dropout(weight, 0.3, training=True)
    zero_rows = (out[:, 0] == 0).all(dim=1)
    assert 0.2 < float(zero_rows.float().mean()) < 0.4
    assert torch.equal(out[:, 0] == 0, out[:, 1] == 0)  # same words dropped in both tables
    assert torch.equal(embedding_dropout(weight, 0.3, training=False), weight)


def test_dropconnect_shares_mask_across_stack() -> None:
    weight = torch.ones(2, 30, 40)
    out = dropconnect(weight, 0.5, training=True, shared_dims=1)
    assert torch.equal(out[0], out[1])
    assert 0.4 < float((out[0] == 0).float().mean()) < 0.6


def test_tied_decoder_matches_untied_formula() -> None:
    from stnkit.nn import br_tied_linear

    emb = BREmbedding(13, 6, H)
    bias = torch.randn(2, 13)
    hyper = torch.randn(26, H) * 0.1
    x, hnet = torch.randn(4, 5, 6), torch.randn(4, H)
    we, wh = emb.weight[:, 0], emb.weight[:, 1]
    gw, gb = (hnet @ hyper[:13].T)[:, None], (hnet @ hyper[13:].T)[:, None]
    expected = x @ we.T + bias[0] + gw * (x @ wh.T) + gb * bias[1]
    assert torch.allclose(br_tied_linear(x, hnet, emb.weight, bias, hyper), expected, atol=1e-5)
    plain = br_tied_linear(x, None, emb.weight, bias, hyper)
    assert torch.allclose(plain, x @ we.T + bias[0], atol=1e-5)
    single = BREmbedding(13, 6, 0)
    assert torch.allclose(
        br_tied_linear(x, None, single.weight, bias[:1], None), x @ single.weight[:, 0].T + bias[0], atol=1e-5
    )


def test_channel_dropout_drops_whole_maps_at_each_examples_rate() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 200, 5, 5) + 0.5
    rates = torch.tensor([0.0, 0.25, 0.5, 0.9])
    out = channel_dropout(x, rates, training=True)
    assert torch.equal(out[0], x[0])  # rate 0: untouched
    gain = out / x  # (B, C, H, W): 0 or 1/(1-p), the same at every position of a map
    assert torch.allclose(gain, gain[:, :, :1, :1].expand_as(gain))
    for i, p in enumerate(rates.tolist()):
        for value in torch.unique(gain[i]).tolist():
            assert value == 0.0 or value == pytest.approx(1 / (1 - p))
    dropped = (out[:, :, 0, 0] == 0).float().mean(dim=1)
    assert torch.allclose(dropped, rates, atol=0.1)
    assert torch.equal(channel_dropout(x, rates, training=False), x)
