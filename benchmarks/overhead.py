"""Forward+backward time of each best-response layer against its plain torch counterpart, and
whole training steps of the paper's PTB model under STN and Δ-STN against plain torch.

The response branch doubles the weight FLOPs, so 2.0x is the floor to aim at. "2x-width" is the
plain layer with twice the outputs — what doubling the weight FLOPs costs on this machine, the
real floor. The last column
is the same layer built without a response branch (``n_hyper=0``, what the ``fixed`` response
trains) against plain torch: the cost of stnkit's own implementation. Timings are
measured side by side in one process, interleaved (plain, best response, plain, ...), and the
median of each is reported, so machine load affects both alike.

    python benchmarks/overhead.py            # the paper's sizes
    python benchmarks/overhead.py --quick    # smaller sizes, a few seconds
    python benchmarks/overhead.py --only step --decoder both   # whole steps, both stn-lstm decoders
    python benchmarks/overhead.py --device cuda

Δ-STN's weight step makes two updates (general weights on the plain network, then the response
weights), so it costs more than STN's one; its rows show by how much, linearized by forward-mode
``torch.func.jvp``, by the double-backward trick, and not linearized (the plain forward at λ̃).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from stnkit.data import Batch, DataInfo
from stnkit.hyper.kinds import HyperKind, PositiveKind, UnitKind
from stnkit.hyper.space import HyperSpace
from stnkit.model import StnModel
from stnkit.nn import BRLSTM, BRConv2d, BRLinear, embedding_dropout, locked_dropout
from stnkit.objective import LossObjective
from stnkit.optim import make_optimizer
from stnkit.response import DeltaSTNResponse, STNResponse
from stnkit.response.base import ResponseModel, TrainingParts
from stnkit.settings import OptimizerSettings, PerturbationSettings, TrainSettings
from stnkit.task import LanguageModelTask

H = 7  # hypernetwork input width: the paper's LSTM tunes 7 hyperparameters


@dataclass
class Case:
    name: str
    plain: Callable[[], torch.Tensor]
    response: Callable[[], torch.Tensor]
    no_response: Callable[[], torch.Tensor]
    #: the plain layer with twice the output width: the cost of doubling the weight FLOPs here
    double: Callable[[], torch.Tensor] | None = None


def _fb(module: nn.Module, x: torch.Tensor, *args: object) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        out = module(x, *args)
        if isinstance(out, tuple):
            out = out[0]
        out.sum().backward()
        return out

    return step


def cases(quick: bool) -> list[Case]:
    torch.manual_seed(0)
    scale = 4 if quick else 1
    out: list[Case] = []

    b, n = 128 // scale, 4096 // scale
    x = torch.randn(b, n)
    hnet = torch.randn(b, H)
    plain, br, br0 = nn.Linear(n, n), BRLinear(n, n, H), BRLinear(n, n, 0)
    out.append(
        Case(
            f"Linear {n}→{n}, batch {b} (AlexNet FC)",
            _fb(plain, x),
            _fb(br, x, hnet),
            _fb(br0, x, None),
            _fb(nn.Linear(n, 2 * n), x),
        )
    )

    b = 128 // scale
    x = torch.randn(b, 64, 16, 16)
    hnet = torch.randn(b, H)
    plain_c, br_c = nn.Conv2d(64, 192, 5, padding=2), BRConv2d(64, 192, 5, H, padding=2)
    br_c0 = BRConv2d(64, 192, 5, 0, padding=2)
    out.append(
        Case(
            f"Conv2d 64→192 5x5 on 16x16, batch {b} (AlexNet conv2)",
            _fb(plain_c, x),
            _fb(br_c, x, hnet),
            _fb(br_c0, x, None),
            _fb(nn.Conv2d(64, 384, 5, padding=2), x),
        )
    )

    hidden, batch, steps = 650 // scale, 40, 70 // scale
    x = torch.randn(batch, steps, hidden)
    hnet = torch.randn(batch, H)
    plain_l = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True)
    br_l, br_l0 = BRLSTM(hidden, hidden, 2, H), BRLSTM(hidden, hidden, 2, 0)
    out.append(
        Case(
            f"LSTM 2x{hidden}, batch {batch}, bptt {steps} (paper's PTB)",
            _fb(plain_l, x),
            _fb(br_l, x, hnet),
            _fb(br_l0, x, None),
        )
    )
    return out


def _sync() -> None:
    if torch.cuda.is_available() and torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()  # CUDA kernels run asynchronously: time them to completion


def measure(fns: list[Callable[[], torch.Tensor]], repeats: int) -> list[float]:
    for fn in fns:  # warm-up: allocator, lazy init
        fn()
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="quarter sizes")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", choices=["layers", "step"], default=None, help="run one part")
    parser.add_argument(
        "--decoder",
        choices=["plain", "response", "both"],
        default="both",
        help="stn-lstm decoder(s) in the whole-step part: plain tied map (the default, as released) "
        "or the best-response decoder",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where every layer and batch lives")
    args = parser.parse_args()
    torch.set_default_device(args.device)
    cuda = args.device.startswith("cuda")
    where = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, median of {args.repeats}")
    if args.only != "step":
        layers(args.quick, args.repeats)
    if args.only != "layers":
        decoders = ["plain", "response"] if args.decoder == "both" else [args.decoder]
        step_ratio(args.quick, args.repeats, decoders)


def layers(quick: bool, repeats: int) -> None:
    """Forward+backward of each layer: best response vs plain torch."""
    print(
        f"{'layer (forward+backward)':58s} {'plain ms':>9s} {'BR ms':>9s} {'BR/plain':>9s} "
        f"{'2x-width/plain':>15s} {'no-response BR/plain':>21s}"
    )
    for case in cases(quick):
        fns = [case.plain, case.response, case.no_response] + ([case.double] if case.double else [])
        times = measure(fns, repeats)
        plain, response, no_response = times[:3]
        double = f"{times[3] / plain:14.2f}x" if case.double else f"{'n/a':>15s}"
        print(
            f"{case.name:58s} {plain * 1e3:9.2f} {response * 1e3:9.2f} {response / plain:8.2f}x "
            f"{double} {no_response / plain:20.2f}x"
        )


class PlainLM(nn.Module):
    """The same language model in plain torch — nn.Embedding, nn.LSTM, a tied decoder — with the
    same dropouts (at fixed rates) and AR/TAR penalties as stn-lstm."""

    def __init__(self, vocab: int, size: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, size)
        self.rnns = nn.ModuleList(nn.LSTM(size, size, batch_first=True) for _ in range(layers))
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        table = embedding_dropout(self.embedding.weight, 0.1, self.training)  # the lookup only
        x = locked_dropout(nn.functional.embedding(tokens, table), 0.4, self.training)
        raw = x
        for i, rnn in enumerate(self.rnns):
            raw, _ = rnn(x)
            x = locked_dropout(raw, 0.25, self.training) if i < len(self.rnns) - 1 else raw
        out = locked_dropout(raw, 0.4, self.training)
        penalty = 2.0 * out.pow(2).mean() + 1.0 * (raw[:, 1:] - raw[:, :-1]).pow(2).mean()
        return nn.functional.linear(out, self.embedding.weight, self.bias), penalty


def step_ratio(quick: bool, repeats: int, decoders: list[str]) -> None:
    """Whole training steps of the paper's PTB model: STN weight and hyper steps vs plain torch,
    for each stn-lstm ``decoder`` option (measured interleaved in one call)."""
    from stnkit_lstm import STNLSTM

    torch.manual_seed(0)
    vocab, batch = 10_000, 40
    size, bptt = (650 // 4, 70 // 4) if quick else (650, 70)
    task = LanguageModelTask(vocab)
    info = DataInfo(task, (bptt,), 1, 1, 1, output_size=vocab)
    initial = {
        "dropout_output": 0.4,
        "dropout_input": 0.4,
        "dropout_hidden": 0.25,
        "dropout_embedding": 0.1,
        "weight_drop": 0.5,
    }
    kinds: dict[str, HyperKind] = {n: UnitKind(UnitKind.Config(init=v)) for n, v in initial.items()}
    for name in ("dropout_embedding", "weight_drop"):
        kinds[name] = UnitKind(UnitKind.Config(init=initial[name], per_example=False))
    for name, value in (("activation_reg", 2.0), ("temporal_activation_reg", 1.0)):
        kinds[name] = PositiveKind(PositiveKind.Config(init=value, per_example=False))
    train = TrainSettings(
        optimizer=OptimizerSettings(name="sgd", lr=1.0, clip=0.25),
        hyper_optimizer=OptimizerSettings(name="adam", lr=0.01),
        perturbation=PerturbationSettings(init_scale=1.0),
    )

    def stn_parts(
        response_of: Callable[[HyperSpace], ResponseModel], decoder: str
    ) -> tuple[TrainingParts, ResponseModel]:
        """A fresh model, space and response, built as ``stnkit.build`` does."""
        torch.manual_seed(0)
        space = HyperSpace(kinds, default_scale=1.0)
        response = response_of(space)
        model: StnModel = STNLSTM(
            STNLSTM.Config(embedding_size=size, hidden_size=size, layers=2, decoder=decoder),
            info,
            space.size,
        )
        parts = TrainingParts(
            model=model,
            space=space,
            task=task,
            objective=LossObjective(LossObjective.Config(), task),
            augmentations=[],
            weight_optimizer=make_optimizer(train.optimizer, response.weight_parameters(model, train)),
            hyper_optimizer=make_optimizer(train.hyper_optimizer, response.hyper_parameters(space, train)),
            clip=0.25,
            hyper_clip=None,
            perturbation=train.perturbation,
        )
        response.setup(parts, train)
        return parts, response

    def stn(space: HyperSpace) -> ResponseModel:
        return STNResponse(STNResponse.Config(), space)

    def delta(method: str) -> Callable[[HyperSpace], ResponseModel]:
        def make(space: HyperSpace) -> ResponseModel:
            response = DeltaSTNResponse(DeltaSTNResponse.Config(), space)
            response._method = method  # type: ignore[assignment]  # pinned, not found on the first step
            return response

        return make

    # STN with each decoder asked for (the first is the /STN reference), then Δ-STN's three
    # ways of fitting its response, with the default (plain) decoder
    variants: list[tuple[str, Callable[[HyperSpace], ResponseModel], str]] = [
        (f"STN, decoder: {decoder}", stn, decoder) for decoder in decoders
    ]
    variants += [
        (
            "Δ-STN, linearized (jvp)",
            delta("jvp"),
            "plain",
        ),
        (
            "Δ-STN, linearized (double-backward)",
            delta("double-backward"),
            "plain",
        ),
        (
            "Δ-STN, not linearized",
            lambda space: DeltaSTNResponse(DeltaSTNResponse.Config(linearize=False), space),
            "plain",
        ),
    ]
    plain = PlainLM(vocab, size, 2)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=1.0)
    tokens = torch.randint(0, vocab, (batch, bptt + 1))
    data = Batch(tokens[:, :-1], tokens[:, 1:])

    def plain_step() -> torch.Tensor:
        plain.train()
        logits, penalty = plain(data.inputs)
        loss = task.loss(logits, data.targets) + penalty
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.25)
        plain_opt.step()
        return loss

    def steps(parts: TrainingParts, response: ResponseModel) -> list[Callable[[], torch.Tensor]]:
        def weight_step() -> torch.Tensor:
            parts.model.reset_state("train")
            return response.weight_step(parts, data)

        def hyper_step() -> torch.Tensor:
            parts.model.reset_state("hyper")
            return response.hyper_step(parts, data)

        return [weight_step, hyper_step]

    built = [stn_parts(make, decoder) for _, make, decoder in variants]
    fns = [plain_step] + [fn for parts, response in built for fn in steps(parts, response)]
    times = measure(fns, repeats)
    plain_t = times[0]
    stn_weight, stn_hyper = times[1], times[2]
    print(f"\nwhole training step: PTB LSTM LM, 2 x {size} units, vocab {vocab}, batch {batch}, bptt {bptt}")
    print(f"  {'step':52s} {'ms':>9s}  {'/plain':>7s}  {'/STN':>6s}")
    print(f"  {'plain torch step (nn.LSTM, same dropouts, AR/TAR)':52s} {plain_t * 1e3:9.1f}")
    for i, (label, _, _) in enumerate(variants):
        weight_t, hyper_t = times[1 + 2 * i], times[2 + 2 * i]
        for kind, seconds, reference in (("weight", weight_t, stn_weight), ("hyper", hyper_t, stn_hyper)):
            print(
                f"  {label + ' ' + kind + ' step':52s} {seconds * 1e3:9.1f}  {seconds / plain_t:6.2f}x"
                f"  {seconds / reference:5.2f}x"
            )
        cycle = (2 * weight_t + hyper_t) / (2 * plain_t)
        print(f"  {label + ': (2 weight + 1 hyper) / 2 plain':52s} {'':9s}  {cycle:6.2f}x")


if __name__ == "__main__":
    main()
