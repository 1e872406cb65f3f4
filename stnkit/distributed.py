"""Data-parallel runs under ``torchrun``: one experiment across processes, GPUs and nodes.

A :class:`Distributed` holds one process's part in a run — its :class:`World` and the slice of
the global batch the step under way works on — with the collectives as its methods. The runner
makes it (:func:`setup`) and hands it to the engine and its policies; the store writes on rank 0
only. ``Distributed()``, a process outside torchrun, makes every collective a no-op (or returns
its input), so a plain run never touches ``torch.distributed``.

Code that is handed no :class:`Distributed` reads the run's from a context variable
(:func:`current`, set by :func:`use` for the run's duration): the per-example draws
(:func:`batch_rand` and its kin, :func:`global_rows`) run deep inside model forwards and
augmentations, third-party ones included, whose signatures cannot carry it, and the response
models average gradients (:func:`average_gradients_`) inside their own steps. A context variable
rather than a module global because it is scoped: it holds the run's object only inside the
``with`` block, comes back to the previous one on exit even after an error, and each thread or
asyncio task sees its own, so two runs in one process never see each other's state.

What stays exactly as in one process with the same global batch:

- every weight and hyper batch is the global batch the recipe asks for, drawn identically on every
  rank from the same seeded order, then split into contiguous slices along dim 0 (PTB's token
  streams split along their batch dimension): equal slices for a full batch (a global batch that
  does not divide by the world size is a recipe error before anything starts), near-equal ones
  for a short last batch, which loses no example;
- weight gradients are combined across ranks after each backward (:func:`average_gradients_`),
  before clipping and the optimizer step, each rank's weighted by its share of the global batch,
  so the result is the global batch's mean-loss gradient and every rank applies the same update;
  h/s gradients likewise before each hyper step, and the reported losses are weighted the same
  way — ranks hold identical weights, h and s, checked every epoch;
- every per-example random draw has the global batch's shape and each rank keeps its own rows
  (:func:`batch_rand`, :func:`batch_randint`, :func:`batch_randn`): the perturbations ``ε`` of
  ``λ̃ = h + σ ⊙ ε`` (from the run's own perturbation generator, the same in one process and on
  every rank), and the dropout masks and augmentation draws of the built-in layers and
  augmentations (from torch's global stream, which every rank seeds alike). A per-batch
  hyperparameter takes one value per *global* batch;
- evaluation passes are split across ranks and their sums added, in rank order.

What differs: float sums are reduced in another order, so trajectories agree to rounding, not bit
for bit. Randomness that a component draws with plain ``torch.rand`` on its slice rather than
through these helpers comes from torch's global stream, which is the same on every rank: such a
component still trains and its ranks stay identical, but its draws differ from one process's,
and the same draws repeat on every rank's slice. Per-batch draws (DropConnect and embedding masks,
shaped like a weight, not like the batch) need nothing: every rank draws the same ones, as one
process does.

Why not ``DistributedDataParallel``: hyper steps differentiate in ``h``/``s`` only
(``torch.autograd.grad``), which leaves DDP's reducer waiting for weight gradients; Δ-STN's weight
step runs two updates with two optimizers and a ``torch.func.jvp``, which DDP does not compose
with; and models carry stream state through their own methods. One bucketed all-reduce of the
weight gradients after backward is exactly DDP's arithmetic (a mean over ranks), works for every
response model, and lets Δ-STN keep its JVP under data parallelism.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from stnkit.errors import DistributedError, RecipeError, RunFileError, StnkitError

__all__ = (
    "Distributed",
    "Slice",
    "World",
    "agree",
    "average_gradients_",
    "average_weight_gradients_",
    "batch_max",
    "batch_rand",
    "batch_randint",
    "batch_randn",
    "current",
    "global_rows",
    "launched",
    "mean",
    "setup",
    "use",
    "world",
)

T = TypeVar("T")

_BUCKET_BYTES = 25 * 2**20  # DDP's default bucket size


@dataclass(frozen=True)
class World:
    """This process's place in the run. ``backend`` is ``""`` outside torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the run file and prints progress (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether a process group is up (under torchrun, even with one process)."""
        return self.backend != ""


@dataclass(frozen=True)
class Slice:
    """This rank's rows ``start:stop`` of a global batch of ``total`` rows."""

    start: int
    stop: int
    total: int

    @property
    def size(self) -> int:
        return self.stop - self.start


class Distributed:
    """One process's part in a run: its :class:`World` and the slice of the global batch that the
    step under way works on, with the collectives over the ranks as methods.

    ``Distributed()`` is the single-process run, where every collective is a no-op (or returns
    its input); :func:`setup` joins torchrun's process group and returns the run's own.
    """

    def __init__(self, world: World | None = None) -> None:
        self.world = world or World()
        # this rank's slice of the batch in the step under way (set by shard); None in one process
        self.slice: Slice | None = None

    def teardown(self, clean: bool = True) -> None:
        """Leave the process group (end of a run). ``clean=False`` after an error: only forget
        it — the process is about to exit, and a clean exit could wait for ranks that are gone."""
        joined = self.world.active
        if clean and joined and dist.is_initialized():
            with contextlib.suppress(RuntimeError):
                dist.destroy_process_group()
        self.slice = None
        if clean and joined:
            # Free the process group's C++ side now, while the interpreter is whole: a reference
            # cycle otherwise keeps it until interpreter shutdown, where joining gloo's threads
            # aborts a non-zero rank ("terminate called without an active exception", exit -6)
            # in some 2-rank runs after the run itself has completed.
            gc.collect()

    # -- collectives -----------------------------------------------------------------------------

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        """Run a collective; a lost rank or a timeout becomes one clear :class:`DistributedError`."""
        try:
            return fn()
        except StnkitError:
            raise
        except (RuntimeError, OSError) as error:  # gloo/nccl raise DistBackendError (a RuntimeError)
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DistributedError(
                f"rank {self.world.rank}: {what} failed — another rank stopped or is unreachable ({first})",
                lost=True,
            ) from None

    def _comm_device(self) -> torch.device:
        if self.world.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def share(self) -> float:
        """This rank's weight in a mean over ranks, times the world size: 1 for equal slices, its
        slice's share of the global batch × world size for a short last batch."""
        if self.slice is None or self.slice.total == 0:
            return 1.0
        return self.slice.size * self.world.world_size / self.slice.total

    def mean(self, value: Tensor | float) -> float:
        """The global batch's mean of a per-slice mean (a loss): the mean over ranks, each
        weighted by its slice's share of the step's global batch."""
        if not self.world.active:
            return float(value)
        share = self.share()
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().reshape(1).to(self._comm_device())
        if share != 1.0:
            tensor.mul_(share)
        self._guard("averaging the loss", lambda: dist.all_reduce(tensor))
        return float(tensor) / self.world.world_size

    def agree(self, any_rank: bool, main_rank: bool = False) -> tuple[bool, bool]:
        """``(any rank's any_rank, rank 0's main_rank)``: control decisions every rank takes
        together (a stop request that reached one rank, a time-based checkpoint decided by rank
        0's clock)."""
        if not self.world.active:
            return any_rank, main_rank
        flags = torch.tensor(
            [float(any_rank), float(main_rank and self.world.is_main)],
            dtype=torch.float64,
            device=self._comm_device(),
        )
        self._guard("agreeing on a stop", lambda: dist.all_reduce(flags))
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def average_gradients_(self, tensors: Iterable[Tensor | None]) -> None:
        """Replace each tensor by its mean over ranks, in place; a no-op in one process.

        Each rank's tensor is weighted by its slice's share of the step's global batch (equal
        weights for equal slices), so gradients of per-slice mean losses become the global
        batch's. ``None`` entries are skipped — they are ``None`` on every rank, since every rank
        runs the same graph. Tensors are reduced in buckets of about 25 MiB, flattened per dtype,
        so a large model needs a few collectives, not one per tensor.
        """
        if not self.world.active or self.world.world_size == 1:
            return
        present = [t for t in tensors if t is not None]
        scale = 1.0 / self.world.world_size
        share = self.share()
        if share != 1.0:
            for tensor in present:
                with torch.no_grad():
                    tensor.mul_(share)
        bucket: list[Tensor] = []
        size = 0
        for tensor in present:
            if bucket and (tensor.dtype != bucket[0].dtype or tensor.device != bucket[0].device):
                self._reduce_bucket(bucket, scale)
                bucket, size = [], 0
            bucket.append(tensor)
            size += tensor.numel() * tensor.element_size()
            if size >= _BUCKET_BYTES:
                self._reduce_bucket(bucket, scale)
                bucket, size = [], 0
        if bucket:
            self._reduce_bucket(bucket, scale)

    def _reduce_bucket(self, bucket: list[Tensor], scale: float) -> None:
        flat = torch.cat([t.detach().reshape(-1) for t in bucket])
        comm = self._comm_device()
        if flat.device.type != comm.type:
            moved = flat.to(comm)
            self._guard("averaging gradients", lambda: dist.all_reduce(moved))
            flat = moved.to(flat.device)
        else:
            self._guard("averaging gradients", lambda: dist.all_reduce(flat))
        flat.mul_(scale)
        offset = 0
        for tensor in bucket:
            n = tensor.numel()
            with torch.no_grad():
                tensor.copy_(flat[offset : offset + n].view_as(tensor))
            offset += n

    def average_weight_gradients_(self, params: Iterable[Tensor]) -> None:
        """:meth:`average_gradients_` on the ``.grad`` of ``params`` (after a backward)."""
        if self.world.active and self.world.world_size > 1:
            self.average_gradients_(p.grad for p in params)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
        if not self.world.active:
            return [obj]
        out: list[Any] = [None] * self.world.world_size
        self._guard("gathering state", lambda: dist.all_gather_object(out, obj))
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.world.active:
            return obj
        box = [obj if self.world.is_main else None]
        self._guard("receiving rank 0's state", lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def broadcast_tensors_(self, tensors: Iterable[Tensor]) -> None:
        """Overwrite each tensor with rank 0's copy (parameters and buffers at the start)."""
        if not self.world.active or self.world.world_size == 1:
            return
        for tensor in tensors:
            if not tensor.is_floating_point():
                continue  # masks and counters are built identically on every rank
            data = tensor.detach()
            moved = data.to(self._comm_device())
            self._guard("broadcasting the initial weights", lambda m=moved: dist.broadcast(m, src=0))  # type: ignore[misc]
            if moved is not data:
                data.copy_(moved)

    def collectively(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` on every rank; if it raised a user error on any rank, raise on all of them.

        Without this a recipe or data problem found on one rank only (a missing file on one
        node) would leave the others waiting in their first collective until the timeout.
        """
        if not self.world.active:
            return fn()
        error: Exception | None = None
        result: T | None = None
        try:
            result = fn()
        except Exception as caught:  # any failure: the others must not wait for this rank
            error = caught
        report = None if error is None else f"{type(error).__name__}: {error}"
        reports = self.gather_objects(report)
        if error is not None:
            raise error
        failed = [(rank, r) for rank, r in enumerate(reports) if r is not None]
        if failed:
            rank, message = failed[0]
            raise DistributedError(f"rank {rank} failed while {what}: {message}")
        return result  # type: ignore[return-value]

    # -- the engine's hooks ----------------------------------------------------------------------

    def check_batches(self, first_train: int, first_hyper: int | None) -> None:
        """The global training and hyper batch sizes must divide by the world size."""
        size = self.world.world_size
        problems = [
            ("data", f"the {kind} batch of {n} examples does not divide by the world size {size}")
            for kind, n in (("training", first_train), ("hyper-step", first_hyper))
            if n is not None and n % size
        ]
        if problems:
            hint = "; make the batch size a multiple of --nproc_per_node × --nnodes"
            raise RecipeError([(loc, msg + hint) for loc, msg in problems])

    def shard(self, batch: Any) -> Any:
        """This rank's contiguous slice of a global batch along dim 0 (a :class:`Batch`), and the
        slice the step under way works on (:meth:`global_rows`, the weights of the means).

        Full batches split equally; a short last batch splits near-equally (rank ``r`` takes rows
        ``n·r // size`` to ``n·(r+1) // size``), and the means weight each rank by its share.
        """
        size, rank = self.world.world_size, self.world.rank
        if size == 1:
            self.slice = None
            return batch
        n = batch.size
        if n < size:
            raise DistributedError(f"a batch of {n} examples cannot feed {size} ranks")
        start, stop = n * rank // size, n * (rank + 1) // size
        self.slice = Slice(start, stop, n)
        return type(batch)(batch.inputs[start:stop], batch.targets[start:stop], batch.first)

    def global_rows(self, batch_size: int) -> Slice:
        """Where a tensor of ``batch_size`` rows sits in the global batch of the step under way:
        this rank's slice when ``batch_size`` is its size, else the whole of a batch of
        ``batch_size``."""
        chosen = self.slice
        if chosen is not None and chosen.size == batch_size:
            return chosen
        return Slice(0, batch_size, batch_size)

    def batch_max(self, value: int) -> int:
        """The largest ``value`` over the ranks' slices of the step under way (one process:
        itself). A draw whose shape depends on the batch's values (cutout's hole slots) takes the
        global batch's shape from it."""
        if self.slice is None or not self.world.active or self.world.world_size == 1:
            return value
        box = torch.tensor([value], dtype=torch.int64, device=self._comm_device())
        self._guard("agreeing on a draw's shape", lambda: dist.all_reduce(box, op=dist.ReduceOp.MAX))
        return int(box.item())

    def eval_shard(self, batch: Any) -> Any | None:
        """This rank's part of an evaluation batch (near-equal, contiguous), or ``None`` if
        empty: evaluation sums statistics, so uneven parts lose nothing."""
        self.slice = None  # evaluation draws nothing per example and takes no step
        size, rank = self.world.world_size, self.world.rank
        if size == 1:
            return batch
        n = batch.size
        bounds = [n * r // size for r in range(size + 1)]
        start, stop = bounds[rank], bounds[rank + 1]
        if start == stop:
            return None
        return type(batch)(batch.inputs[start:stop], batch.targets[start:stop], batch.first)

    def sum_stats(self, sums: dict[str, float]) -> dict[str, float]:
        """Evaluation sums added over ranks, in rank order (the same float result on every rank)."""
        if self.world.world_size == 1:
            return sums
        total: dict[str, float] = {}
        for part in self.gather_objects(sums):
            for key, value in part.items():
                total[key] = total.get(key, 0.0) + value
        return total

    def check_identical(self, tensors: Sequence[Tensor], weights: Iterable[Tensor], where: str) -> None:
        """Raise if ranks disagree on ``tensors`` (h and s, compared exactly) or on a checksum of
        the weights: a silent drift would make the run mean nothing. Cheap: a few numbers per
        rank."""
        if self.world.world_size == 1:
            return
        hs = torch.cat([t.detach().double().reshape(-1).cpu() for t in tensors])
        sums = [w.detach().double().sum() for w in weights]
        checksum = float(torch.stack(sums).sum()) if sums else 0.0  # one device-to-host copy
        parts = self.gather_objects((hs.tolist(), checksum))
        reference = parts[0]
        for rank, part in enumerate(parts[1:], start=1):
            if part[0] != reference[0]:
                raise DistributedError(f"{where}: h/s differ between rank 0 and rank {rank}")
            if part[1] != reference[1]:
                raise DistributedError(f"{where}: the weights differ between rank 0 and rank {rank}")

    def state(self) -> dict[str, Any]:
        """What every rank needs to resume: its random states (the engine saves the perturbation
        generator). Called on every rank at each checkpoint (a collective)."""
        on_gpu = self.world.backend == "nccl" and torch.cuda.is_available()
        own = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if on_gpu else None}
        return {
            "world_size": self.world.world_size,
            "backend": self.world.backend,
            "rng": self.gather_objects(own) if self.world.active else [],
        }

    def load_state(self, saved: dict[str, Any] | None) -> None:
        """Restore :meth:`state` on this rank; another world size is an error."""
        world_size = 1 if saved is None else int(saved.get("world_size", 1))
        if world_size != self.world.world_size:
            raise RunFileError(
                f"this run was trained on {world_size} process(es); resume it with the same world "
                f"size (now {self.world.world_size}): the data split and random streams depend on it"
            )
        if saved is None or not self.world.active:
            return
        rng = saved.get("rng") or []
        if len(rng) == self.world.world_size:
            own = rng[self.world.rank]
            torch.set_rng_state(own["torch"])
            if own.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(own["cuda"])

    def hook_for(self, hook: Any) -> Any:
        """``hook`` on rank 0, a silent relay elsewhere (no store, no progress, no observers)."""
        return hook if self.world.is_main else _Silent()


class _Silent:
    """A hook relay whose every hook does nothing: ranks other than 0 observe nothing."""

    def __getattr__(self, name: str) -> Callable[..., list[Any]]:
        return lambda **kwargs: []


# The run's Distributed, for code that cannot be handed one: see the module docstring.
_CURRENT: ContextVar[Distributed | None] = ContextVar("stnkit_distributed", default=None)


def current() -> Distributed:
    """The :class:`Distributed` of the run under way in this context; outside a run a fresh
    one-process one (which holds no slice, so nothing is lost by not keeping it)."""
    return _CURRENT.get() or Distributed()


@contextlib.contextmanager
def use(state: Distributed) -> Iterator[Distributed]:
    """Make ``state`` the current :class:`Distributed` for the ``with`` block; the previous one
    comes back on exit, an error included."""
    token = _CURRENT.set(state)
    try:
        yield state
    finally:
        _CURRENT.reset(token)


def world() -> World:
    """The current world: ``World()`` (rank 0 of 1) unless a run joined a process group."""
    return current().world


def launched() -> bool:
    """Whether torchrun (or another launcher setting its variables) started this process."""
    return all(key in os.environ for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _env_int(key: str, default: int) -> int:
    try:
        return int(os.environ.get(key, default))
    except ValueError:
        message = f"{key}={os.environ[key]!r} is not an integer"
        raise RecipeError.single("train.distributed", message) from None


def local_device(device: torch.device) -> torch.device:
    """Each rank's own device: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if device.type != "cuda" or not launched():
        return device
    world_size = _env_int("WORLD_SIZE", 1)
    index: int | None = device.index  # None for a bare "cuda" (the stubs say int)
    if index is not None:
        if world_size > 1:
            raise RecipeError.single(
                "device",
                f"under torchrun use device: cuda (each rank takes cuda:LOCAL_RANK), not {device}",
            )
        return device
    local = _env_int("LOCAL_RANK", 0)
    if local >= torch.cuda.device_count():
        raise RecipeError.single(
            "device", f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}"
        )
    return torch.device("cuda", local)


def setup(backend: str, timeout: float, device: torch.device) -> Distributed:
    """Join torchrun's process group and return this process's :class:`Distributed`; outside
    torchrun (or when the current one has joined already) the current one.

    ``backend``: ``auto`` (nccl on CUDA, gloo on the CPU), ``gloo`` or ``nccl``. ``timeout``:
    seconds any collective waits before the run fails — the bound on how long the surviving ranks
    wait for a rank that died.
    """
    here = current()
    if not launched() or (here.world.active and dist.is_initialized()):
        return here
    chosen = ("nccl" if device.type == "cuda" else "gloo") if backend == "auto" else backend
    if chosen == "nccl" and device.type != "cuda":
        raise RecipeError.single("train.distributed.backend", f"nccl needs device: cuda, not {device}")
    if chosen == "nccl" and not dist.is_nccl_available():
        raise RecipeError.single("train.distributed.backend", "this torch build has no NCCL")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {}
    if chosen == "nccl":
        kwargs["device_id"] = device  # binds the communicator to this rank's GPU up front
    try:
        dist.init_process_group(chosen, timeout=_dt.timedelta(seconds=timeout), **kwargs)
    except (RuntimeError, ValueError) as error:
        raise DistributedError(f"cannot join the process group ({chosen}): {error}") from None
    return Distributed(World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), chosen))


# -- the current run's operations, for code that is handed no Distributed ------------------------


def mean(value: Tensor | float) -> float:
    """:meth:`Distributed.mean` of the current run."""
    return current().mean(value)


def agree(any_rank: bool, main_rank: bool = False) -> tuple[bool, bool]:
    """:meth:`Distributed.agree` of the current run."""
    return current().agree(any_rank, main_rank)


def average_gradients_(tensors: Iterable[Tensor | None]) -> None:
    """:meth:`Distributed.average_gradients_` of the current run: response models call it on the
    h/s gradients right before their hyper optimizer step."""
    current().average_gradients_(tensors)


def average_weight_gradients_(params: Iterable[Tensor]) -> None:
    """:meth:`Distributed.average_weight_gradients_` of the current run: a weight step rule calls
    it after its backward pass."""
    current().average_weight_gradients_(params)


def global_rows(batch_size: int) -> Slice:
    """:meth:`Distributed.global_rows` of the current run."""
    return current().global_rows(batch_size)


def batch_max(value: int) -> int:
    """:meth:`Distributed.batch_max` of the current run."""
    return current().batch_max(value)


def _global_shape(shape: Sequence[int]) -> tuple[Slice, tuple[int, ...]]:
    rows = global_rows(int(shape[0]))
    return rows, (rows.total, *(int(d) for d in shape[1:]))


def batch_rand(
    shape: Sequence[int],
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``torch.rand(shape)`` for a tensor whose dim 0 runs over the batch's examples: under
    torchrun the global batch's draw, of which this rank keeps its rows, so every example gets
    the value it gets in one process. Per-example randomness in layers and augmentations draws
    through this (and :func:`batch_randint`, :func:`batch_randn`)."""
    rows, full = _global_shape(shape)
    drawn = torch.rand(full, device=device, dtype=dtype, generator=generator)
    return drawn[rows.start : rows.stop]


def batch_randn(
    shape: Sequence[int],
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """:func:`batch_rand` for ``torch.randn``."""
    rows, full = _global_shape(shape)
    drawn = torch.randn(full, device=device, dtype=dtype, generator=generator)
    return drawn[rows.start : rows.stop]


def batch_randint(
    high: int,
    shape: Sequence[int],
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """:func:`batch_rand` for ``torch.randint(high, shape)``."""
    rows, full = _global_shape(shape)
    drawn = torch.randint(high, full, device=device, generator=generator)
    return drawn[rows.start : rows.stop]
