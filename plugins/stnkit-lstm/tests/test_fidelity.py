"""stn-lstm against the released STN code (asteroidhouse/self-tuning-networks, lstm/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stnkit.data import DataInfo
from stnkit.task import LanguageModelTask
from stnkit.testing import make_space
from stnkit_lstm import STNLSTM

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
