"""One converter per supported torch layer type: the layer → its converted form.

A converter returns the new module and, for each of the original layer's parameters (by its
local name), where its value lives now: ``(path relative to the new module, attribute)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from stnkit.convert.layers import ConvertedConv, ConvertedDropout, ConvertedEmbedding, ConvertedLinear

__all__ = [
    "COMPOSITES",
    "CONVERTERS",
    "DROPOUT_TYPES",
    "UNSUPPORTED",
    "Converted",
    "UnsupportedLayerError",
    "converter_for",
    "dropout_converter",
]


class UnsupportedLayerError(Exception):
    """This layer's options cannot be converted; the message says which."""


@dataclass
class Converted:
    module: nn.Module
    origins: dict[str, tuple[str, str]]


Converter = Callable[[nn.Module, int], Converted]


def _linear(layer: nn.Module, n_hyper: int) -> Converted:
    assert isinstance(layer, nn.Linear)
    new = ConvertedLinear.from_module(layer, n_hyper)
    return Converted(new, {name: ("", name) for name, _ in layer.named_parameters()})


def _conv(layer: nn.Module, n_hyper: int) -> Converted:
    assert isinstance(layer, nn.Conv1d | nn.Conv2d)
    if layer.groups != 1:
        raise UnsupportedLayerError(f"grouped convolution (groups={layer.groups})")
    if layer.padding_mode != "zeros":
        raise UnsupportedLayerError(f"padding_mode {layer.padding_mode!r} (only 'zeros')")
    new = ConvertedConv(layer, n_hyper)
    return Converted(new, {name: ("", name) for name, _ in layer.named_parameters()})


def _embedding(layer: nn.Module, n_hyper: int) -> Converted:
    assert isinstance(layer, nn.Embedding)
    if layer.max_norm is not None:
        raise UnsupportedLayerError("max_norm (it renormalizes the table in place)")
    if layer.sparse:
        raise UnsupportedLayerError("sparse gradients")
    if layer.scale_grad_by_freq:
        raise UnsupportedLayerError("scale_grad_by_freq")
    new = ConvertedEmbedding.from_module(layer, n_hyper)
    return Converted(new, {"weight": ("", "weight")})


def _attention(layer: nn.Module, n_hyper: int) -> Converted:
    from stnkit.convert.attention import attention_origins, convert_attention

    assert isinstance(layer, nn.MultiheadAttention)
    return Converted(convert_attention(layer, n_hyper), attention_origins())


def _encoder_layer(layer: nn.Module, n_hyper: int) -> Converted:
    from stnkit.convert.attention import convert_encoder_layer

    assert isinstance(layer, nn.TransformerEncoderLayer)
    new, origins = convert_encoder_layer(layer, n_hyper)
    return Converted(new, origins)


def _lstm(layer: nn.Module, n_hyper: int) -> Converted:
    from stnkit.convert.lstm import ConvertedLSTM, check_lstm, lstm_origins

    assert isinstance(layer, nn.LSTM)
    check_lstm(layer)
    return Converted(ConvertedLSTM(layer, n_hyper), lstm_origins(layer))


def _dropout_converter(channel: bool) -> Converter:
    def convert(layer: nn.Module, n_hyper: int) -> Converted:
        assert isinstance(layer, nn.modules.dropout._DropoutNd)
        # an in-place original gives the same values: the converted dropout never works in place
        return Converted(ConvertedDropout(layer.p, channel, None), {})

    return convert


#: exact types only: a subclass may have its own forward, which conversion would lose
CONVERTERS: dict[type[nn.Module], Converter] = {
    nn.Linear: _linear,
    nn.modules.linear.NonDynamicallyQuantizableLinear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Embedding: _embedding,
    nn.MultiheadAttention: _attention,
    nn.TransformerEncoderLayer: _encoder_layer,
    nn.LSTM: _lstm,
}

#: converted as a whole when any module inside them is targeted: their forward reads their
#: children's weights directly
COMPOSITES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention, nn.TransformerEncoderLayer)

#: dropout modules whose rate a hyperparameter can drive (exact types), and whether they drop
#: whole channels
DROPOUT_TYPES: dict[type[nn.Module], bool] = {nn.Dropout: False, nn.Dropout1d: True, nn.Dropout2d: True}

#: layers with weights that conversion cannot express: targeting one is an error
UNSUPPORTED: tuple[type[nn.Module], ...] = (
    nn.GRU,
    nn.RNN,
    nn.RNNCell,
    nn.LSTMCell,
    nn.GRUCell,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Bilinear,
    nn.EmbeddingBag,
    nn.TransformerDecoderLayer,
)


def converter_for(module: nn.Module) -> Converter | None:
    return CONVERTERS.get(type(module))


def dropout_converter(module: nn.Module) -> Converter | None:
    channel = DROPOUT_TYPES.get(type(module))
    return None if channel is None else _dropout_converter(channel)
