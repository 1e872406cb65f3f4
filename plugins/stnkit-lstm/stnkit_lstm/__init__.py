"""stnkit plugin: the Penn Treebank data set (``ptb``) and a Self-Tuning LSTM (``stn-lstm``)."""

from __future__ import annotations

from stnkit_lstm.data import PTBData, load_corpus
from stnkit_lstm.model import STNLSTM

__all__ = ["STNLSTM", "PTBData", "load_corpus"]
