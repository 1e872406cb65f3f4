"""Forward+backward time of each best-response layer against its plain torch counterpart.

The response branch doubles the weight FLOPs, so 2.0x is the floor to aim at. "2x-width" is the
plain layer with twice the outputs — what doubling the weight FLOPs costs on this machine, the
real floor. The last column
is the same layer built without a response branch (``n_hyper=0``, what the ``fixed`` response
trains) against plain torch: the cost of stnkit's own implementation. Timings are
measured side by side in one process, interleaved (plain, best response, plain, ...), and the
median of each is reported, so machine load affects both alike.

    python benchmarks/overhead.py            # the paper's sizes
    python benchmarks/overhead.py --quick    # smaller sizes, a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from stnkit.nn import BRLSTM, BRConv2d, BRLinear

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


def measure(fns: list[Callable[[], torch.Tensor]], repeats: int) -> list[float]:
    for fn in fns:  # warm-up: allocator, lazy init
        fn()
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="quarter sizes")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"forward+backward, median of {args.repeats}"
    )
    print(
        f"{'layer':58s} {'plain ms':>9s} {'BR ms':>9s} {'BR/plain':>9s} {'2x-width/plain':>15s} "
        f"{'no-response BR/plain':>21s}"
    )
    for case in cases(args.quick):
        fns = [case.plain, case.response, case.no_response] + ([case.double] if case.double else [])
        times = measure(fns, args.repeats)
        plain, response, no_response = times[:3]
        double = f"{times[3] / plain:14.2f}x" if case.double else f"{'n/a':>15s}"
        print(
            f"{case.name:58s} {plain * 1e3:9.2f} {response * 1e3:9.2f} {response / plain:8.2f}x "
            f"{double} {no_response / plain:20.2f}x"
        )


if __name__ == "__main__":
    main()
