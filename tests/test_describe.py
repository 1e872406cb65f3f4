"""``stnkit plugins NAME``: a component's options and consumed hyperparameters, without its source."""

from __future__ import annotations

import json

import pytest

from stnkit.cli import main


def described(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert main(["plugins", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["components"]


def test_a_model_lists_its_options_and_the_hyperparameters_it_consumes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (lstm,) = described(capsys, "stn-lstm")
    assert lstm["type"] == "model" and lstm["plugin"] == "lstm" and lstm["distribution"] == "stnkit-lstm"
    assert lstm["recipe"] == "model: {name: stn-lstm, ...}"
    options = {row["name"]: row for row in lstm["options"]}
    # stn-lstm's Config: the paper's sizes are its defaults
    assert options["hidden_size"]["type"] == "int" and not options["hidden_size"]["required"]
    assert options["hidden_size"]["default"] == 650 and options["hidden_size"]["constraints"] == [">= 1"]
    assert options["tie_weights"]["description"] == "share the embedding with the decoder"
    uses = {row["name"]: row for row in lstm["hyperparameters"]}
    assert {"dropout_output", "dropout_hidden", "dropout_embedding", "weight_drop"} <= set(uses)
    assert len(uses) == 7  # the paper's seven
    assert uses["weight_drop"]["per_batch"] is True and uses["dropout_output"]["per_batch"] is False
    for row in uses.values():
        assert row["description"] and row["accepts"].startswith(("[", "("))


def test_ranges_defaults_and_flags_come_from_the_declarations(capsys: pytest.CaptureFixture[str]) -> None:
    (mlp,) = described(capsys, "stn-mlp")
    uses = {row["name"]: row for row in mlp["hyperparameters"]}
    assert uses["dropout"]["low"] == 0.0 and uses["dropout"]["accepts"].startswith("[0, ")
    assert uses["weight_decay"]["high"] == "inf" and uses["weight_decay"]["accepts"] == "[0, inf)"
    (cutout,) = described(capsys, "cutout")
    cut = {row["name"]: row for row in cutout["hyperparameters"]}
    assert any(row["integer"] for row in cut.values()), "cutout's holes/length need an integer kind"


def test_a_kind_lists_its_declaration_fields(capsys: pytest.CaptureFixture[str]) -> None:
    (interval,) = described(capsys, "interval")
    assert interval["type"] == "hyperparameter kind" and interval["integer"] is False
    fields = {row["name"]: row for row in interval["options"]}
    assert fields["low"]["required"] and fields["high"]["required"] and fields["init"]["required"]
    assert fields["per_example"]["default"] is True and fields["tune"]["default"] is True
    assert fields["scale"]["constraints"] == ["> 0"]
    (integer,) = described(capsys, "integer")
    assert integer["integer"] is True


def test_a_plugin_name_describes_everything_it_registers(capsys: pytest.CaptureFixture[str]) -> None:
    components = described(capsys, "lstm")
    assert {(c["type"], c["name"]) for c in components} == {("data set", "ptb"), ("model", "stn-lstm")}


def test_plain_output_is_a_readable_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "stn-mlp"]) == 0
    out = capsys.readouterr().out
    assert "model stn-mlp" in out and "stnkit-tabular" in out
    assert "options" in out and "hidden_sizes" in out
    assert "hyperparameters consumed" in out and "weight_decay" in out and "[0, inf)" in out


def test_an_unknown_name_says_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "stn-lstn"]) == 2
    err = capsys.readouterr().err
    assert "no component or plugin is named 'stn-lstn'; did you mean 'stn-lstm'?" in err
    assert main(["plugins", "zzzz", "--json"]) == 2
    err = capsys.readouterr().err
    assert "did you mean" not in err and "stn-mlp" in err
