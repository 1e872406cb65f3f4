"""``loaders``: a user's own torch DataLoaders as a data set.

The recipe names a function, ``target: "package.module:function"`` called with ``args``, that
returns the train and validation DataLoaders (and optionally a test one) as a tuple or a dict
``{train, valid, test}``. Batches are ``(inputs, targets)`` tuples, or dicts whose keys
``inputs:`` and ``targets:`` name (tuples of more items: their positions).

stnkit draws the order itself. A DataLoader with ``shuffle=True`` would draw each epoch's order
(and its workers' seeds) from torch's global random stream, which dropout draws from too: a
resumed run could not replay it. So the training loader is iterated again with the same data
set, batch size, collate function and workers, but with its sampler driven by a generator seeded
from the run's data stream: each epoch's order is reproducible from the recipe's seed and a
resumed run continues exactly. ``shuffle=False`` keeps the data set's order. Validation passes
are in order; hyper steps draw validation batches in an order of their own stream.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler

from stnkit.config import ComponentConfig
from stnkit.data import MAX_CLASSES, Batch, BuildContext, DataInfo, Dataset, check_labels
from stnkit.errors import DataError
from stnkit.imports import import_target
from stnkit.task import ClassificationTask, LanguageModelTask, LossTask, RegressionTask, Task

__all__ = ["LoaderData", "Loaders", "check_own_loss", "describe_batch", "to_batch"]

TaskName = Literal["classification", "regression", "language-model"]

#: key pairs tried, in order, for dict batches when ``inputs``/``targets`` are not set
_DICT_KEYS = (("inputs", "targets"), ("input", "target"), ("x", "y"), ("image", "label"), ("data", "target"))
_SEED_LIMIT = 2**62


class Loaders:
    """The DataLoaders a user's function returned: ``train``, ``valid`` and maybe ``test``."""

    def __init__(self, train: DataLoader[Any], valid: DataLoader[Any], test: DataLoader[Any] | None):
        self.train = train
        self.valid = valid
        self.test = test

    @classmethod
    def from_result(cls, result: Any, source: str) -> Loaders:
        """Accept ``(train, valid[, test])`` or ``{train, valid[, test]}``; say what came otherwise."""
        expected = "(train, valid) or (train, valid, test) DataLoaders, or a dict {train, valid, test}"
        if isinstance(result, Mapping):
            unknown = sorted(set(map(str, result)) - {"train", "valid", "test"})
            missing = [key for key in ("train", "valid") if key not in result]
            if unknown or missing:
                what = f"keys {', '.join(map(repr, sorted(map(str, result))))}"
                raise DataError(f"{source} returned a dict with {what}; expected {expected}")
            parts = [result["train"], result["valid"], result.get("test")]
        elif isinstance(result, tuple | list) and len(result) in (2, 3):
            parts = [*result, None][:3]
        else:
            raise DataError(f"{source} returned {_describe(result)}; expected {expected}")
        for name, loader in zip(("train", "valid", "test"), parts, strict=True):
            if loader is not None and not isinstance(loader, DataLoader):
                raise DataError(f"{source}: the {name} loader is {_describe(loader)}, not a torch DataLoader")
        return cls(parts[0], parts[1], parts[2])


def describe_batch(raw: Any) -> str:
    """A short account of what a DataLoader yielded, for error messages."""
    return _describe(raw, depth=0)


def _describe(value: Any, depth: int = 1) -> str:
    if isinstance(value, Tensor):
        return f"{_a(str(value.dtype).removeprefix('torch.'))} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"{_a(str(value.dtype))} array of shape {value.shape}"
    if isinstance(value, Mapping):
        keys = ", ".join(repr(k) for k in list(value)[:8])
        return f"a dict with keys {keys}" if value else "an empty dict"
    if isinstance(value, tuple | list) and depth == 0:
        items = "; ".join(_describe(item) for item in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"a {type(value).__name__} of {len(value)} ({items}{more})"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _pick(raw: Any, key: str | int | None, default: str | int, what: str, where: str) -> Any:
    chosen = default if key is None else key
    try:
        return raw[chosen]
    except (KeyError, IndexError, TypeError):
        raise DataError(f"{where} yielded {describe_batch(raw)}: it has no {what} at {chosen!r}") from None


def to_batch(
    raw: Any,
    where: str,
    inputs: str | int | None = None,
    targets: str | int | None = None,
    first: bool = False,
) -> Batch:
    """Turn one DataLoader batch into a :class:`Batch`; a :class:`DataError` says what came instead."""
    setting = "set inputs: and targets: to the keys holding them"
    if isinstance(raw, Mapping):
        if inputs is None and targets is None:
            pair = next((p for p in _DICT_KEYS if p[0] in raw and p[1] in raw), None)
            if pair is None:
                raise DataError(f"{where} yielded {describe_batch(raw)}: {setting}")
            inputs, targets = pair
        x = _pick(raw, inputs, "inputs", "inputs", where)
        y = _pick(raw, targets, "targets", "targets", where)
    elif isinstance(raw, tuple | list):
        if len(raw) != 2 and (inputs is None or targets is None):
            raise DataError(
                f"{where} yielded {describe_batch(raw)}; stnkit expects (inputs, targets) pairs: "
                "for longer tuples set inputs: and targets: to their positions"
            )
        x = _pick(raw, inputs, 0, "inputs", where)
        y = _pick(raw, targets, 1, "targets", where)
    else:
        raise DataError(
            f"{where} yielded {describe_batch(raw)}; stnkit expects (inputs, targets) tuples or dicts "
            "(with inputs: and targets: naming their keys)"
        )
    return Batch(_tensor(x, "inputs", raw, where), _tensor(y, "targets", raw, where), first=first)


def _tensor(value: Any, what: str, raw: Any, where: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype != np.object_:
        return torch.as_tensor(value)
    raise DataError(f"{where} yielded {describe_batch(raw)}: its {what} are {_describe(value)}, not a tensor")


def _rebuilt(loader: DataLoader[Any], sampler: Any, generator: torch.Generator) -> DataLoader[Any]:
    """``loader``'s data set, batching, collate function and workers, with our sampler and
    generator (which also seeds the workers, instead of torch's global stream)."""
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
        generator=generator,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers if workers else False,
    )


def _seeded(generator: torch.Generator) -> torch.Generator:
    seed = int(torch.randint(_SEED_LIMIT, (1,), generator=generator))
    return torch.Generator().manual_seed(seed)


def _check_batching(loader: DataLoader[Any], name: str) -> None:
    if loader.batch_size is None:
        raise DataError(
            f"the {name} DataLoader has no batch_size (it uses a batch_sampler, or batch_size=None): "
            "stnkit draws the order itself; give it batch_size= (and shuffle=True or False)"
        )
    if isinstance(loader.dataset, IterableDataset):
        return
    sampler = loader.sampler
    if (
        name == "training"
        and not isinstance(sampler, SequentialSampler)
        and not hasattr(sampler, "generator")
    ):
        raise DataError(
            f"the training DataLoader's sampler is a {type(sampler).__name__}, whose order stnkit "
            "cannot draw from the run's seed (so a resumed run could not continue exactly): "
            "use shuffle=True or shuffle=False, or a torch sampler that takes a generator"
        )


class LoaderData(Dataset):
    """The DataLoaders a user's function returns (see the module docstring)."""

    name = "loaders"

    class Config(ComponentConfig):
        target: str = Field(description="'package.module:function' returning the DataLoaders")
        args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of target")
        inputs: str | int | None = Field(None, description="key (dicts) or position (tuples) of inputs")
        targets: str | int | None = Field(None, description="key (dicts) or position (tuples) of targets")
        task: TaskName | None = Field(
            None, description="default: classification for integer targets, regression for float ones"
        )
        num_classes: int | None = Field(
            None, ge=1, le=MAX_CLASSES, description="default: the largest training label + 1 (one pass)"
        )
        loss: str | None = Field(
            None, description="'package.module:function'(prediction, targets) -> scalar; default: the task's"
        )

        @field_validator("target", "loss")
        @classmethod
        def _importable(cls, value: str | None) -> str | None:
            if value is not None and not callable(import_target(value)):
                raise ValueError(f"{value!r} is not callable")
            return value

    config: Config

    def __init__(self, config: Config, context: BuildContext) -> None:
        super().__init__(config, context)
        function: Callable[..., Any] = import_target(config.target)
        try:
            result = function(**config.args)
        except Exception as error:
            raise DataError(f"{config.target}(...) failed: {type(error).__name__}: {error}") from error
        self.loaders = Loaders.from_result(result, config.target)
        _check_batching(self.loaders.train, "training")
        _check_batching(self.loaders.valid, "validation")
        if self.loaders.test is not None:
            _check_batching(self.loaders.test, "test")
        train = self._first(self.loaders.train, "training")
        valid = self._first(self.loaders.valid, "validation")
        test = self._first(self.loaders.test, "test") if self.loaders.test is not None else None
        task = self._task(train, [b for b in (train, valid, test) if b is not None])
        if config.loss is not None:
            loss_fn = import_target(config.loss)
            task = LossTask(loss_fn, str(getattr(loss_fn, "__qualname__", config.loss)), task)
        steps = self._count(self.loaders.train)
        self._info = DataInfo(
            task=task,
            input_shape=tuple(train.inputs.shape[1:]),
            steps_per_epoch=steps,
            n_train=_examples(self.loaders.train, steps),
            n_valid=_examples(self.loaders.valid, None),
            n_test=0 if self.loaders.test is None else _examples(self.loaders.test, None),
        )

    # -- checks at build time ---------------------------------------------------------------------

    def _first(self, loader: DataLoader[Any], name: str) -> Batch:
        batch = next(self._pass(loader, name, torch.Generator().manual_seed(0), shuffle=False), None)
        if batch is None:
            raise DataError(f"the {name} DataLoader yields no batch: its data set is empty")
        if batch.size == 0 or batch.inputs.ndim == 0:
            raise DataError(f"the {name} DataLoader yielded an empty batch ({_describe(batch.inputs)})")
        return batch

    def _task(self, train: Batch, firsts: list[Batch]) -> Task:
        config = self.config
        name = config.task
        targets = train.targets
        integer = not targets.is_floating_point() and not targets.is_complex() and targets.dtype != torch.bool
        if name is None:
            if targets.dtype == torch.bool or targets.is_complex():
                raise DataError(
                    f"targets are {_describe(targets)}: stnkit needs class indices or float values"
                )
            sequences = integer and targets.ndim >= 2 and not train.inputs.is_floating_point()
            name = ("language-model" if sequences else "classification") if integer else "regression"
        if name == "regression":
            for batch in firsts:
                if not batch.targets.is_floating_point():
                    raise DataError(
                        f"targets are {_describe(batch.targets)}, but task regression needs float targets "
                        "(convert them with .float(), or set task: classification)"
                    )
            return RegressionTask()
        for batch in firsts:
            t = batch.targets
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise DataError(
                    f"targets are {_describe(t)}, but task {name} needs integer class indices "
                    "(convert them with .long(), or set task: regression)"
                )
        classes = config.num_classes or self._count_classes()
        for batch in firsts:
            check_labels(batch.targets.numpy(force=True), "targets", num_classes=classes)
        return LanguageModelTask(classes) if name == "language-model" else ClassificationTask(classes)

    def _count_classes(self) -> int:
        """The largest training label + 1: from the data set's ``targets`` when it has them, else
        one pass over the training loader."""
        labels = getattr(self.loaders.train.dataset, "targets", None)
        if isinstance(labels, Tensor | np.ndarray | list) and len(labels):
            return check_labels(np.asarray(labels), "the training data set's targets")
        high = 0
        for batch in self._pass(self.loaders.train, "training", torch.Generator().manual_seed(0), False):
            high = max(high, check_labels(batch.targets.numpy(force=True), "training targets"))
        return max(high, 1)

    def _count(self, loader: DataLoader[Any]) -> int:
        try:
            return len(loader)
        except TypeError:  # an IterableDataset without a length: count one pass
            gen = torch.Generator().manual_seed(0)
            return sum(1 for _ in self._pass(loader, "training", gen, shuffle=False))

    # -- passes -----------------------------------------------------------------------------------

    def _pass(
        self, loader: DataLoader[Any], name: str, generator: torch.Generator, shuffle: bool
    ) -> Iterator[Batch]:
        sampler: Any = None
        if not isinstance(loader.dataset, IterableDataset):
            sampler = SequentialSampler(loader.dataset)  # type: ignore[arg-type]
            if shuffle and not isinstance(loader.sampler, SequentialSampler):
                sampler = copy.copy(loader.sampler)
                sampler.generator = generator
        where = f"the {name} DataLoader"
        inputs, targets = self.config.inputs, self.config.targets
        for index, raw in enumerate(_rebuilt(loader, sampler, generator)):
            yield to_batch(raw, where, inputs, targets, first=index == 0)

    @property
    def info(self) -> DataInfo:
        return self._info

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        return self._pass(self.loaders.train, "training", _seeded(generator), shuffle=True)

    def valid_batches(self) -> Iterator[Batch]:
        return self._pass(self.loaders.valid, "validation", torch.Generator().manual_seed(0), False)

    def test_batches(self) -> Iterator[Batch] | None:
        if self.loaders.test is None:
            return None
        return self._pass(self.loaders.test, "test", torch.Generator().manual_seed(0), False)

    def hyper_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        valid = self.loaders.valid
        for _ in itertools.count():
            if isinstance(valid.dataset, IterableDataset):
                yield from self.valid_batches()
                continue
            order = _seeded(generator)
            sampler = torch.utils.data.RandomSampler(valid.dataset, generator=order)  # type: ignore[arg-type]
            for index, raw in enumerate(_rebuilt(valid, sampler, order)):
                yield to_batch(
                    raw, "the validation DataLoader", self.config.inputs, self.config.targets, index == 0
                )


def _examples(loader: DataLoader[Any], steps: int | None) -> int:
    try:
        return len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        batch = loader.batch_size or 1
        return (steps or 0) * batch


def check_own_loss(built: Any) -> None:
    """Call a user's loss (``data.loss``) once, on the first validation batch at the initial
    hyperparameters, so that one returning anything but a single number is reported before the
    run file exists. Evaluation mode, no gradients: no random draw, no state of the run moves."""
    task = built.parts.task
    if not isinstance(task, LossTask):
        return
    batch = next(iter(built.dataset.valid_batches()), None)
    if batch is None:
        return
    batch = batch.to(built.device)
    model = built.parts.model
    was_training = model.training
    model.eval()
    model.reset_state("eval")
    try:
        with torch.no_grad():
            output = built.parts.forward(batch.inputs, built.response.eval_batch(batch.size), stream="eval")
            task.loss(output.prediction, batch.targets)
    finally:
        model.reset_state("eval")
        model.train(was_training)
