"""Best-response layers and hyperparameter-driven dropout helpers."""

from __future__ import annotations

from stnkit.nn.base import BestResponse, count_parameters
from stnkit.nn.conv import BRConv2d
from stnkit.nn.dropout import channel_dropout, dropconnect, dropout, embedding_dropout, locked_dropout
from stnkit.nn.embedding import BREmbedding, BRTiedDecoder, br_tied_linear
from stnkit.nn.linear import BRLinear, br_linear
from stnkit.nn.lstm import BRLSTM, BRLSTMLayer, LSTMState
from stnkit.nn.split import (
    ParameterGroup,
    ParameterSplit,
    split_parameters,
    zero_hyper_weights,
)

__all__ = [
    "BRLSTM",
    "BRConv2d",
    "BREmbedding",
    "BRLSTMLayer",
    "BRLinear",
    "BRTiedDecoder",
    "BestResponse",
    "LSTMState",
    "ParameterGroup",
    "ParameterSplit",
    "br_linear",
    "br_tied_linear",
    "channel_dropout",
    "count_parameters",
    "dropconnect",
    "dropout",
    "embedding_dropout",
    "locked_dropout",
    "split_parameters",
    "zero_hyper_weights",
]
