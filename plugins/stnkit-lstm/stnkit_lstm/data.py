"""``ptb``: the Mikolov Penn Treebank split, read from its folder or zip, batched for language
modelling with (fixed or AWD-style variable) BPTT windows."""

from __future__ import annotations

import hashlib
import math
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field
from torch import Tensor

from stnkit.config import ComponentConfig
from stnkit.data import Batch, BuildContext, DataInfo, DataPath, Dataset
from stnkit.errors import DataError
from stnkit.task import LanguageModelTask

__all__ = ["Corpus", "PTBData", "batchify", "load_corpus"]

SPLITS = ("train", "valid", "test")
#: MD5 of the published ptb.{train,valid,test}.txt (the widely reproduced Mikolov release)
KNOWN_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
EOS = "<eos>"


class ChecksumWarning(UserWarning):
    """A PTB file differs from the published release: results will not compare with the paper."""


@dataclass
class Corpus:
    """Token ids of each split and the vocabulary (index → word)."""

    words: list[str]
    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.words)


def _read_texts(root: Path) -> dict[str, bytes]:
    """The three split files, from a folder (possibly with a ``ptb/`` subfolder) or a zip."""
    texts: dict[str, bytes] = {}
    if root.is_file():
        try:
            with zipfile.ZipFile(root) as archive:
                for member in archive.namelist():
                    for split in SPLITS:
                        if member.endswith(f"ptb.{split}.txt"):
                            texts[split] = archive.read(member)
        except zipfile.BadZipFile:
            raise DataError(f"{root}: not a zip file (give the ptb.zip archive or its folder)") from None
    else:
        for split in SPLITS:
            for candidate in (root / f"ptb.{split}.txt", root / "ptb" / f"ptb.{split}.txt"):
                if candidate.is_file():
                    texts[split] = candidate.read_bytes()
                    break
    missing = [f"ptb.{s}.txt" for s in SPLITS if s not in texts]
    if missing:
        raise DataError(f"{root}: missing {', '.join(missing)}")
    return texts


def load_corpus(root: str | Path, check: bool = True) -> Corpus:
    """Tokenise PTB: whitespace-split words plus ``<eos>`` at each line end; the vocabulary is
    the training words in order of first appearance (10,000 for the standard release)."""
    root = Path(root)
    texts = _read_texts(root)
    if check:
        for split, data in texts.items():
            digest = hashlib.md5(data).hexdigest()
            if digest != KNOWN_MD5[split]:
                warnings.warn(
                    f"{root}: ptb.{split}.txt has MD5 {digest}, not the published {KNOWN_MD5[split]}; "
                    "perplexities will not be comparable with published results",
                    ChecksumWarning,
                    stacklevel=2,
                )
    index: dict[str, int] = {}
    words: list[str] = []
    ids: dict[str, Tensor] = {}
    for split in SPLITS:
        try:
            lines = texts[split].decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{root}: ptb.{split}.txt is not UTF-8 text") from None
        tokens: list[int] = []
        for line in lines:
            for word in [*line.split(), EOS]:
                i = index.get(word)
                if i is None:
                    if split != "train":
                        word = "<unk>"
                        i = index.get(word)
                        if i is None:
                            raise DataError(f"{root}: {split} has words outside the training vocabulary")
                    else:
                        i = index[word] = len(words)
                        words.append(word)
                tokens.append(i)
        ids[split] = torch.tensor(tokens, dtype=torch.long)
    return Corpus(words, ids["train"], ids["valid"], ids["test"])


def batchify(tokens: Tensor, batch_size: int) -> Tensor:
    """``(B, N/B)``: row ``b`` is the ``b``-th contiguous chunk of the stream (the tail is dropped)."""
    columns = tokens.numel() // batch_size
    return tokens[: columns * batch_size].view(batch_size, columns)


def windows(
    data: Tensor, bptt: int, generator: torch.Generator | None = None, variable: bool = False
) -> Iterator[Batch]:
    """BPTT windows over batchified ``data``: inputs ``(B, T)``, targets shifted by one token.

    ``variable`` draws each length AWD-style: ``bptt`` with probability 0.95 else ``bptt/2``, then
    ``N(that, 5)``, at least 5 tokens.
    """
    position = 0
    last = data.shape[1] - 1
    while position < last:
        length = bptt
        if variable:
            assert generator is not None
            base = bptt if float(torch.rand((), generator=generator)) < 0.95 else bptt / 2
            length = max(5, int(base + 5 * float(torch.randn((), generator=generator))))
        length = min(length, last - position)
        yield Batch(
            data[:, position : position + length],
            data[:, position + 1 : position + 1 + length],
            first=position == 0,
        )
        position += length


class PTBData(Dataset):
    """Penn Treebank for word-level language modelling. Hidden state carries across windows, so
    each pass starts at the beginning (``first``) and moves forward in order."""

    name = "ptb"
    checks_values = True  # token ids of its own vocabulary: in range by construction

    class Config(ComponentConfig):
        root: DataPath = Field(description="ptb.zip, or a folder holding ptb.{train,valid,test}.txt")
        batch_size: int = Field(20, ge=1, description="training streams")
        bptt: int = Field(35, ge=2, description="tokens per training window")
        variable_bptt: bool = Field(False, description="AWD-style random window lengths in training")
        eval_batch_size: int = Field(10, ge=1, description="streams for validation passes")
        test_batch_size: int | None = Field(
            None,
            ge=1,
            description="streams for the final test pass (default eval_batch_size); the released "
            "STN code reports test perplexity with 1, one stream over the whole test set",
        )
        hyper_batch_size: int | None = Field(
            None, ge=1, description="streams for hyper steps (default batch_size)"
        )
        train_tokens: int | None = Field(None, ge=100, description="use only the first N training tokens")
        valid_tokens: int | None = Field(
            None, ge=100, description="use only the first N validation tokens (quick runs and tests)"
        )
        test_tokens: int | None = Field(
            None, ge=100, description="use only the first N test tokens (quick runs and tests)"
        )
        check_md5: bool = Field(True, description="warn when files differ from the published release")

    config: Config

    def __init__(self, config: Config, context: BuildContext) -> None:
        super().__init__(config, context)
        self.corpus = load_corpus(Path(config.root), check=config.check_md5)
        train = self.corpus.train
        if config.train_tokens is not None:
            train = train[: config.train_tokens]
        self.train = batchify(train, config.batch_size)
        if self.train.shape[1] < 2:
            raise DataError(f"{config.root}: too few training tokens for batch_size {config.batch_size}")
        valid = self.corpus.valid
        if config.valid_tokens is not None:
            valid = valid[: config.valid_tokens]
        self.valid = batchify(valid, config.eval_batch_size)
        test = self.corpus.test
        if config.test_tokens is not None:
            test = test[: config.test_tokens]
        self.test = batchify(test, config.test_batch_size or config.eval_batch_size)
        for split, data in (("validation", self.valid), ("test", self.test)):
            if data.shape[1] < 2:  # no window at all: the pass would silently report nothing
                raise DataError(f"{config.root}: too few {split} tokens for its batch size")
        self.hyper = batchify(valid, config.hyper_batch_size or config.batch_size)
        steps = math.ceil((self.train.shape[1] - 1) / config.bptt)
        self._info = DataInfo(
            task=LanguageModelTask(self.corpus.vocab_size),
            input_shape=(config.bptt,),
            steps_per_epoch=steps,
            n_train=int(train.numel()),
            n_valid=int(valid.numel()),
            n_test=int(test.numel()),
            output_size=self.corpus.vocab_size,
            extras={"vocab_size": self.corpus.vocab_size},
        )

    @property
    def info(self) -> DataInfo:
        return self._info

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        return windows(self.train, self.config.bptt, generator, self.config.variable_bptt)

    def valid_batches(self) -> Iterator[Batch]:
        return windows(self.valid, self.config.bptt)

    def test_batches(self) -> Iterator[Batch]:
        return windows(self.test, self.config.bptt)

    def hyper_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        while True:  # sequential passes; the model carries its "hyper" state between steps
            yield from windows(self.hyper, self.config.bptt)
