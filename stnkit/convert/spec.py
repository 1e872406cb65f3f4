"""Which layers conversion swaps and which hyperparameter drives which dropout or weight decay."""

from __future__ import annotations

from pydantic import Field, field_validator

from stnkit.config import ComponentConfig

__all__ = ["ConvertSpec", "dropout_rule_part", "is_dropout_name", "is_weight_decay_name"]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


class ConvertSpec(ComponentConfig):
    """How :func:`~stnkit.convert.convert_module` converts a torch module.

    Patterns are :mod:`fnmatch` patterns (``*``, ``?``, ``[...]``) matched against whole dotted
    paths as ``named_modules()`` / ``named_parameters()`` of the *original* module give them.

    ``targets``
        module paths whose supported layers become best-response layers (``nn.Linear``,
        ``nn.Conv1d``/``Conv2d``, ``nn.Embedding``, ``nn.LSTM``, ``nn.MultiheadAttention``,
        ``nn.TransformerEncoderLayer``); default: every supported layer. A module a pattern
        names that is of none of these kinds (and holds none) is an error.
    ``exclude``
        module paths left exactly as they are (not converted, no response branch).
    ``dropout``
        hyperparameter name → patterns of dropout-module paths it drives (``nn.Dropout``,
        ``Dropout1d``/``2d``, the attention dropout ``<mha>.dropout`` of a converted
        ``nn.MultiheadAttention``, the dropouts of an ``nn.TransformerEncoderLayer``, the
        between-layer dropout ``<lstm>.dropout`` of a multi-layer ``nn.LSTM``).
    ``weight_decay``
        hyperparameter name → patterns of parameter names whose squared norm, times the
        hyperparameter, is added to the training loss.

    Default name rules, for hyperparameters the spec does not list:

    - ``dropout`` drives every dropout module no more specific rule claims;
    - ``<part>_dropout`` drives the dropout modules whose path contains ``<part>``
      (``attn_dropout`` → ``layers.0.self_attn.dropout``; ``input_dropout`` → ``input_drop``);
    - ``weight_decay`` decays every parameter except biases (names ending in ``bias``, such as
      ``bias``, ``in_proj_bias``, ``bias_ih_l0``) and the parameters of normalization layers;
    - ``<part>_weight_decay`` decays those of them whose name contains ``<part>``.

    A listed pattern that matches nothing and a dropout module two rules claim are errors.
    """

    targets: list[str] = Field(default_factory=lambda: ["*"], description="module path patterns to convert")
    exclude: list[str] = Field(default_factory=list, description="module path patterns left as they are")
    dropout: dict[str, list[str]] = Field(
        default_factory=dict, description="hyperparameter -> dropout module path patterns"
    )
    weight_decay: dict[str, list[str]] = Field(
        default_factory=dict, description="hyperparameter -> parameter name patterns"
    )

    @field_validator("targets", "exclude", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _as_list(value)

    @field_validator("dropout", "weight_decay", mode="before")
    @classmethod
    def _patterns(cls, value: object) -> object:
        if isinstance(value, dict):
            return {key: _as_list(item) for key, item in value.items()}
        return value


def is_dropout_name(name: str) -> bool:
    return name == "dropout" or (name.endswith("_dropout") and len(name) > len("_dropout"))


def dropout_rule_part(name: str) -> str | None:
    """``attn`` for ``attn_dropout``; ``None`` for ``dropout`` itself."""
    return None if name == "dropout" else name[: -len("_dropout")]


def is_weight_decay_name(name: str) -> bool:
    return name == "weight_decay" or (name.endswith("_weight_decay") and len(name) > len("_weight_decay"))
