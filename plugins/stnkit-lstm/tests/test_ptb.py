"""The PTB loader on the real data set, its batching, and the stn-lstm model."""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import stnkit
from stnkit.data import Batch, BuildContext, DataInfo
from stnkit.errors import DataError, RecipeError
from stnkit.task import LanguageModelTask
from stnkit.testing import ModelConformance, make_space
from stnkit_lstm import STNLSTM, PTBData, load_corpus
from stnkit_lstm.data import ChecksumWarning, batchify, windows

REPO = Path(__file__).parents[3]
PTB_ZIP = REPO / "recipes" / "data" / "ptb.zip"
SEVEN = (
    "dropout_output",
    "dropout_input",
    "dropout_hidden",
    "dropout_embedding",
    "weight_drop",
    "activation_reg",
    "temporal_activation_reg",
)


@pytest.fixture(scope="module")
def corpus():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)  # the shipped file is the published one
        return load_corpus(PTB_ZIP)


def test_published_token_counts_and_vocabulary(corpus) -> None:  # type: ignore[no-untyped-def]
    assert corpus.train.numel() == 929_589
    assert corpus.valid.numel() == 73_760
    assert corpus.test.numel() == 82_430
    assert corpus.vocab_size == 10_000
    assert "<eos>" in corpus.words and "<unk>" in corpus.words
    eos = corpus.words.index("<eos>")
    assert int((corpus.train == eos).sum()) == 42_068  # one per line
    assert int((corpus.valid == eos).sum()) == 3_370 and int((corpus.test == eos).sum()) == 3_761


def test_folder_layout_reads_the_same(tmp_path: Path, corpus) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(PTB_ZIP) as archive:
        archive.extractall(tmp_path)
    from_folder = load_corpus(tmp_path / "ptb")
    assert from_folder.words == corpus.words
    assert torch.equal(from_folder.test, corpus.test)
    assert torch.equal(load_corpus(tmp_path).valid, corpus.valid)  # the folder above ptb/ works too


def test_changed_file_warns_and_missing_file_fails(tmp_path: Path) -> None:
    with zipfile.ZipFile(PTB_ZIP) as archive:
        archive.extractall(tmp_path)
    folder = tmp_path / "ptb"
    text = (folder / "ptb.valid.txt").read_text()
    (folder / "ptb.valid.txt").write_text(text.replace(" the ", " a ", 1))
    with pytest.warns(ChecksumWarning, match="ptb.valid.txt has MD5"):
        load_corpus(folder)
    (folder / "ptb.test.txt").unlink()
    with pytest.raises(DataError, match=r"missing ptb\.test\.txt"):
        load_corpus(folder)
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(DataError, match="not a zip"):
        load_corpus(tmp_path / "bad.zip")


def test_batchify_and_windows() -> None:
    tokens = torch.arange(103)
    data = batchify(tokens, 4)
    assert data.shape == (4, 25) and torch.equal(data[1], torch.arange(25, 50))
    batches = list(windows(data, 10))
    assert [b.inputs.shape[1] for b in batches] == [10, 10, 4]
    assert batches[0].first and not batches[1].first
    for b in batches:
        assert torch.equal(b.targets, b.inputs + 1)  # the next token, in every stream
    g = torch.Generator().manual_seed(0)
    variable = list(windows(batchify(torch.arange(4001), 1), 35, g, variable=True))
    lengths = [b.inputs.shape[1] for b in variable]
    assert sum(lengths) == 4000 and min(lengths[:-1]) >= 5 and len(set(lengths)) > 5


def test_dataset_options(tmp_path: Path) -> None:
    config = PTBData.Config.model_validate(
        {"root": PTB_ZIP, "batch_size": 10, "bptt": 20, "train_tokens": 10_000, "valid_tokens": 2000}
    )
    data = PTBData(config, BuildContext())
    info = data.info
    assert isinstance(info.task, LanguageModelTask) and info.output_size == 10_000
    assert info.n_train == 10_000 and info.steps_per_epoch == 50 and info.n_valid == 2000
    first = next(data.train_batches(1, torch.Generator()))
    assert first.inputs.shape == (10, 20) and first.first
    assert next(data.hyper_batches(torch.Generator())).inputs.shape == (10, 20)


class TestSTNLSTMConformance(ModelConformance):
    model_cls = STNLSTM
    config = {"embedding_size": 8, "hidden_size": 12, "layers": 2, "tie_weights": True}
    hyperparameters = {
        "dropout_output": {"kind": "unit", "init": 0.2},
        "dropout_input": {"kind": "unit", "init": 0.2},
        "dropout_hidden": {"kind": "unit", "init": 0.2},
        "dropout_embedding": {"kind": "unit", "init": 0.1, "per_example": False},
        "weight_drop": {"kind": "unit", "init": 0.2, "per_example": False},
        "activation_reg": {"kind": "positive", "init": 1.0, "per_example": False},
        "temporal_activation_reg": {"kind": "positive", "init": 1.0, "per_example": False},
    }

    def make_data(self) -> DataInfo:
        return DataInfo(LanguageModelTask(50), (7,), 1, 100, 100, output_size=50)

    def make_batch(self, batch_size: int) -> Batch:
        g = torch.Generator().manual_seed(batch_size)
        tokens = torch.randint(0, 50, (batch_size, 8), generator=g)
        return Batch(tokens[:, :-1], tokens[:, 1:], first=True)


class TestUntiedConformance(TestSTNLSTMConformance):
    config = {"embedding_size": 8, "hidden_size": 12, "layers": 3, "tie_weights": False}


def test_hidden_state_is_carried_per_stream() -> None:
    torch.manual_seed(0)
    info = DataInfo(LanguageModelTask(30), (5,), 1, 10, 10, output_size=30)
    space = make_space({}, constants={n: 0.0 for n in SEVEN})
    model = STNLSTM(STNLSTM.Config(embedding_size=6, hidden_size=6, layers=2), info, 0).eval()
    hp = space.batch(torch.zeros(2, 0), hnet=None)
    x1, x2 = torch.randint(0, 30, (2, 5)), torch.randint(0, 30, (2, 5))
    model(x1, hp, stream="train")
    carried = model(x2, hp, stream="train").prediction
    fresh = model(x2, hp, stream="eval").prediction  # another stream starts from zeros
    assert not torch.allclose(carried, fresh)
    model.reset_state("train")
    assert torch.allclose(model(x2, hp, stream="train").prediction, fresh)


def tiny_recipe(tmp_path: Path, **sets: object) -> list[str]:
    overrides = [
        f"data.root={PTB_ZIP}",
        "data.train_tokens=3000",
        "data.valid_tokens=1000",
        "data.batch_size=10",
        "data.eval_batch_size=10",
        "data.bptt=10",
        "model.embedding_size=16",
        "model.hidden_size=24",
        "train.epochs=2",
        "train.warmup_epochs=0",
        "run.log_every=5",
        f"store.dir={tmp_path / 'runs'}",
    ]
    return overrides + [f"{k}={v}" for k, v in sets.items()]


def test_short_real_run_stores_seven_trajectories(tmp_path: Path) -> None:
    result = stnkit.run(REPO / "recipes" / "ptb-small.yaml", overrides=tiny_recipe(tmp_path))
    assert result.status == "completed"
    record = stnkit.open_run(result.path)  # type: ignore[arg-type]
    assert record.hyperparameters == SEVEN
    assert record.hyper["values"].shape == (30, 7)  # 2 epochs x 30 windows, a hyper step every 2
    for name in SEVEN:
        trajectory = record.values(name)
        assert trajectory.std() > 0, f"{name} never moved"
    summary = record.summary()
    assert set(summary["epoch_metrics"]) == {"loss", "perplexity", "accuracy"}
    assert summary["test"]["perplexity"] > 1 and set(summary["hyperparameters"]) == set(SEVEN)


def test_every_hyperparameter_gets_a_hypergradient_on_real_data(tmp_path: Path) -> None:
    from stnkit.runner import prepare

    built = prepare(REPO / "recipes" / "ptb-small.yaml", tiny_recipe(tmp_path))
    parts, response, data = built.parts, built.response, built.dataset
    for batch in list(data.train_batches(1, torch.Generator()))[:5]:
        response.weight_step(parts, batch)  # move V away from its initialisation
    response.hyper_step(parts, next(data.hyper_batches(torch.Generator())))
    grad = parts.space.h.grad
    assert grad is not None
    for i, name in enumerate(parts.space.names):
        assert float(grad[i].abs()) > 0, f"no hypergradient for {name}"


def test_per_batch_hyperparameters_must_be_declared_per_batch(tmp_path: Path) -> None:
    overrides = [*tiny_recipe(tmp_path), "hyperparameters.weight_drop.per_example=true"]
    with pytest.raises(RecipeError) as info:
        stnkit.validate(REPO / "recipes" / "ptb-small.yaml", overrides)
    ((location, message),) = info.value.problems
    assert location == "hyperparameters.weight_drop.per_example"
    assert "per batch" in message


def test_missing_data_path_is_a_recipe_error(tmp_path: Path) -> None:
    copy = tmp_path / "recipe.yaml"
    shutil.copy(REPO / "recipes" / "ptb-small.yaml", copy)
    with pytest.raises(RecipeError) as info:
        stnkit.validate(copy)
    assert "file not found" in dict(info.value.problems)["data.root"]


class TestResponseDecoderConformance(TestSTNLSTMConformance):
    config = {"embedding_size": 8, "hidden_size": 12, "layers": 2, "tie_weights": True, "decoder": "response"}
