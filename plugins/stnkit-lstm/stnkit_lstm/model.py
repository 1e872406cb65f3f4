"""``stn-lstm``: the paper's Self-Tuning LSTM language model with seven tuned regularizers."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from stnkit.config import ComponentConfig, HyperparameterUse
from stnkit.data import DataInfo
from stnkit.hyper.space import HyperBatch
from stnkit.model import ModelOutput, StnModel
from stnkit.nn import (
    BREmbedding,
    BRLinear,
    BRLSTMLayer,
    BRTiedDecoder,
    LSTMState,
    embedding_dropout,
    locked_dropout,
)

__all__ = ["STNLSTM"]


def _rate(description: str, per_batch: bool = False) -> HyperparameterUse:
    return HyperparameterUse(
        description, default=0.0, low=0.0, high=1.0, per_batch=per_batch, continuous=True
    )


class STNLSTM(StnModel):
    """Embedding → LSTM layers → decoder; the embedding and the LSTM maps are best-response layers.

    Inputs ``(B, T)`` token ids, prediction ``(B, T, V)`` logits. The hidden state of each stream
    (``train``, ``hyper``, ``eval``) is carried, detached, from one window to the next, so training
    and hyper steps read the corpus as continuous text; ``reset_state`` starts a stream afresh.

    As in the released code (``lstm/hyperlstm.py``), embedding dropout masks only the *lookup*: the
    tied decoder always decodes with the undropped table, and by default (``decoder: plain``) it
    is a plain tied linear map — the elementary table and one bias ``(V,)``, no response branch.
    ``decoder: response`` makes it a best-response layer (response table rows gated per word by a
    ``(2V, H)`` map), an stnkit extension.

    Where stnkit differs from the released code on purpose (see the plugin README): the
    tied decoder's bias starts at zero (released: ``nn.Linear``'s default uniform init; its
    ``init_weights``, which would zero it, is never called); the elementary and response halves of every
    map are stacked ``(2, out, in)`` and applied as one matmul, with one DropConnect mask for both
    halves as released; hyper steps minimise the validation loss alone (released: plus α·AR +
    β·TAR of the validation outputs); the model returns the AR/TAR penalty separately so the
    task loss and the penalty are logged apart.
    """

    name = "stn-lstm"

    class Config(ComponentConfig):
        embedding_size: int = Field(
            650, ge=1, description="word embedding width (also the last layer's units when tied)"
        )
        hidden_size: int = Field(650, ge=1, description="units of every layer but the last when tied")
        layers: int = Field(2, ge=1, description="stacked LSTM layers")
        tie_weights: bool = Field(True, description="share the embedding with the decoder")
        init_range: float = Field(0.1, gt=0, description="embedding/decoder init U(-r, r)")
        decoder: Literal["plain", "response"] = Field(
            "plain",
            description="plain: a plain (tied) linear map, as released; response: a best-response "
            "decoder whose logits and bias are gated per word by the hyperparameters",
        )

    hyperparameters: ClassVar[dict[str, HyperparameterUse]] = {
        "dropout_output": _rate("locked dropout on the last LSTM layer's output"),
        "dropout_input": _rate("locked dropout on the embeddings fed to the first layer"),
        "dropout_hidden": _rate("locked dropout between LSTM layers"),
        "dropout_embedding": _rate("embedding dropout: drop whole words", per_batch=True),
        "weight_drop": _rate("DropConnect on the hidden-to-hidden weights", per_batch=True),
        "activation_reg": HyperparameterUse(
            "AR: α · mean squared (dropped) output activation", default=0.0, low=0.0, per_batch=True
        ),
        "temporal_activation_reg": HyperparameterUse(
            "TAR: β · mean squared change of the output between steps", default=0.0, low=0.0, per_batch=True
        ),
    }

    config: Config

    def __init__(self, config: Config, data: DataInfo, n_hyper: int) -> None:
        super().__init__(config, data, n_hyper)
        vocab = data.output_size
        sizes = [config.hidden_size] * config.layers
        if config.tie_weights:
            sizes[-1] = config.embedding_size  # the decoder reads embedding-sized vectors
        inputs = [config.embedding_size, *sizes[:-1]]
        self.embedding = BREmbedding(vocab, config.embedding_size, n_hyper)
        self.rnns = nn.ModuleList(BRLSTMLayer(i, h, n_hyper) for i, h in zip(inputs, sizes, strict=True))
        decoder_hyper = n_hyper if config.decoder == "response" else 0
        self.decoder: BRTiedDecoder | BRLinear
        if config.tie_weights:
            self.decoder = BRTiedDecoder(vocab, decoder_hyper)
        else:
            self.decoder = BRLinear(sizes[-1], vocab, decoder_hyper)
        with torch.no_grad():
            self.embedding.weight.uniform_(-config.init_range, config.init_range)
            if isinstance(self.decoder, BRLinear):
                self.decoder.weight.uniform_(-config.init_range, config.init_range)
                assert self.decoder.bias is not None
                self.decoder.bias.zero_()
        self._states: dict[str, list[LSTMState]] = {}

    def reset_state(self, stream: str) -> None:
        self._states.pop(stream, None)

    def stream_state(self) -> dict[str, Any]:
        return {stream: [list(layer) for layer in layers] for stream, layers in self._states.items()}

    def load_stream_state(self, state: dict[str, Any]) -> None:
        self._states = {stream: [(h, c) for h, c in layers] for stream, layers in state.items()}

    def _state(self, stream: str, batch: int) -> list[LSTMState] | None:
        state = self._states.get(stream)
        if state is None or state[0][0].shape[0] != batch:
            return None
        return state

    def forward(self, inputs: Tensor, hp: HyperBatch, stream: str = "train") -> ModelOutput:
        training = self.training
        hnet = hp.hnet
        # embedding dropout masks the lookup only; the tied decoder below reads the undropped table
        table = embedding_dropout(self.embedding.weight, hp.scalar("dropout_embedding"), training)
        x = self.embedding(inputs, hnet, weight=table)
        x = locked_dropout(x, hp["dropout_input"], training)
        state = self._state(stream, inputs.shape[0])
        weight_drop = hp.scalar("weight_drop") if training else 0.0
        new_state: list[LSTMState] = []
        for index, rnn in enumerate(self.rnns):
            x, last = rnn(x, hnet, None if state is None else state[index], weight_drop)
            new_state.append((last[0].detach(), last[1].detach()))
            if index < len(self.rnns) - 1:
                x = locked_dropout(x, hp["dropout_hidden"], training)
        self._states[stream] = new_state
        raw = x
        out = locked_dropout(raw, hp["dropout_output"], training)
        decoder_hnet = hnet if self.decoder.has_response else None
        if isinstance(self.decoder, BRTiedDecoder):
            logits = self.decoder(out, decoder_hnet, self.embedding.weight)
        else:
            logits = self.decoder(out, decoder_hnet)
        penalty = None
        if training:
            alpha, beta = hp["activation_reg"], hp["temporal_activation_reg"]
            ar = out.pow(2).mean(dim=(1, 2))
            tar = (
                (raw[:, 1:] - raw[:, :-1]).pow(2).mean(dim=(1, 2))
                if raw.shape[1] > 1
                else torch.zeros_like(ar)
            )
            penalty = (alpha * ar + beta * tar).mean()
        return ModelOutput(logits, penalty)
