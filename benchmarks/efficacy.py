"""Does tuning pay? Every method on one recipe, several seeds, mean ± std with every seed shown.

For each seed (the recipe's ``seed`` overridden) this runs, one after another:

- every registered *tuning* response (``stn``, ``delta-stn``, ...), each the recipe with
  ``response: {name: ...}``;
- ``fixed``: the fixed twin — the same recipe trained plainly at its initial values;
- ``final``: the plain network at the recipe's tuning response's final values (``replay --final``);
- ``replay``: the plain network on that response's schedule, from scratch (``replay``);
- ``hand``: the plain network at a hand reference (``--hand FILE``, a YAML mapping name → value;
  by default ``benchmarks/hand/<recipe name>.yaml`` if it exists);
- ``random`` / ``tpe``: ``stnkit tune`` over the fixed model with a wall-clock budget of
  ``K ×`` the default tuning run's (``--search-factor K``; reported at every K up to the largest,
  from one study per seed and method).

``--tuned-from JSON`` takes the tuning runs of an earlier ``--json`` instead of running them again,
so that one seed's searches can run in parallel processes after a single tuning run.

It prints a per-seed table and mean ± std of the test metric, test loss and best validation loss,
with wall time, and writes a JSON summary (``--json``). Every run is an ordinary run file, so
``stnkit compare`` works on them.

    python benchmarks/efficacy.py recipes/cifar10-small.yaml --seeds 0 1 2
    python benchmarks/efficacy.py recipes/toy-ridge.yaml --seeds 0 --methods stn fixed --set train.epochs=20
    python benchmarks/efficacy.py recipes/ptb-transformer.yaml --methods stn fixed hand --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

import stnkit
from stnkit.analysis.replay import replay
from stnkit.plugins import load_plugins
from stnkit.tune.analysis import StudyRecord, best_of, open_study

SEARCH_METHODS = ("random", "tpe")
REPLAY_METHODS = ("final", "replay")


@dataclass
class Row:
    """One method on one seed."""

    method: str
    seed: int
    status: str
    test: dict[str, float]
    best_val_loss: float | None
    seconds: float
    runs: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    note: str = ""


def tuning_responses() -> list[str]:
    """Registered responses that take hyper steps, ``stn`` first."""
    plugins = load_plugins()
    names = [name for name in plugins.responses if plugins.responses.get(name).tunes]
    return sorted(names, key=lambda name: (name != "stn", name))


def _row(method: str, seed: int, path: Path, seconds: float) -> Row:
    summary = stnkit.open_run(path).summary()
    return Row(
        method=method,
        seed=seed,
        status=summary["status"],
        test={k: float(v) for k, v in summary["test"].items()},
        best_val_loss=summary["best_val_loss"],
        seconds=seconds,
        runs=[str(path)],
        values={k: v["final"] for k, v in summary["hyperparameters"].items() if v["final"] is not None},
    )


def run_recipe(recipe: Path, method: str, seed: int, overrides: Sequence[str], out: Path) -> Row:
    start = time.perf_counter()
    result = stnkit.run(recipe, overrides=[*overrides, f"seed={seed}"], out_dir=out)
    assert result.path is not None
    return _row(method, seed, result.path, time.perf_counter() - start)


def run_replay(source: Row, mode: str, out: Path) -> Row:
    start = time.perf_counter()
    result = replay(source.runs[0], final=mode == "final", out_dir=out)
    assert result.path is not None
    return _row(mode, source.seed, result.path, time.perf_counter() - start)


def hand_overrides(values: dict[str, float]) -> list[str]:
    return [f"hyperparameters.{name}.init={value!r}" for name, value in values.items()]


def run_search(
    recipe: Path, method: str, seed: int, overrides: Sequence[str], out: Path, budget: float
) -> StudyRecord:
    """One ``stnkit tune`` study of ``budget`` seconds (``benchmarks/stn_vs_search.py``'s
    :func:`search`)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from stn_vs_search import search

    return open_study(search(recipe, method, seed, budget, list(overrides), out, jobs=1))


def search_rows(
    study: StudyRecord, method: str, seed: int, reference: float, factors: list[float]
) -> list[Row]:
    """The best trial finished within each factor × ``reference`` seconds of the study's start."""
    rows = []
    for factor in factors:
        limit = factor * reference
        inside = study.finished_within(limit)
        best = best_of(inside)
        rows.append(
            Row(
                method=f"{method} {factor:g}x",
                seed=seed,
                status="completed" if best else "no trial",
                test={} if best is None else dict(best.test),
                best_val_loss=None if best is None else best.value,
                seconds=limit,
                runs=[] if best is None or best.run is None else [str(best.run)],
                values={} if best is None else dict(best.params),
                note=f"{len(inside)} trials",
            )
        )
    return rows


def write_json(path: Path | None, recipe: Path, rows: list[Row]) -> None:
    """The summary so far, rewritten after every method: a benchmark stopped part-way (hours
    into a PTB search) keeps every row it finished, and ``--tuned-from`` can pick up from it."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"recipe": str(recipe), "rows": [asdict(r) for r in rows]}, indent=2))
    tmp.replace(path)


def _primary(rows: list[Row]) -> tuple[str, bool]:
    """The test metric to report first and whether higher is better: perplexity for a language
    model (which also reports next-token accuracy), else accuracy, else the first other one."""
    if any("perplexity" in row.test for row in rows):
        return "perplexity", False
    for row in rows:
        for key in row.test:
            if key == "accuracy":
                return key, True
        for key in row.test:
            if key != "loss":
                return key, False
    return "loss", False


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4g} (1 seed)"  # no spread to report: not "± 0"
    return f"{mean:.4g} ± {statistics.stdev(values):.2g}"


def merge_rows(paths: list[Path], seeds: list[int] | None) -> list[Row]:
    """The rows of earlier ``--json`` files, in file order; where two files hold the same method
    and seed the later one wins, and says so (a merge must not hide which run a cell is)."""
    merged: dict[tuple[str, int], Row] = {}
    for path in paths:
        for data in json.loads(path.read_text())["rows"]:
            row = Row(**data)
            if seeds is not None and row.seed not in seeds:
                continue
            if (row.method, row.seed) in merged:
                print(
                    f"note: {row.method!r} seed {row.seed} is in more than one file; using {path}'s",
                    file=sys.stderr,
                )
            merged[(row.method, row.seed)] = row
    return list(merged.values())


def print_table(recipe: Path, rows: list[Row], seeds: list[int]) -> None:
    metric, higher = _primary(rows)
    methods = list(dict.fromkeys(r.method for r in rows))
    by = {(r.method, r.seed): r for r in rows}
    scale = 100.0 if metric == "accuracy" else 1.0
    print(f"\n{recipe}  — test {metric}{' (%)' if scale == 100 else ''}, test loss, best validation loss")
    width = max([14, *(len(m) + 1 for m in methods)])
    header = f"{'method':{width}s}" + "".join(f" {'seed ' + str(s):>22s}" for s in seeds)
    header += f" {'mean ± std':>34s}"
    print(header)
    for method in methods:
        cells, metric_values, loss_values, val_values, secs = [], [], [], [], []
        for seed in seeds:
            row = by.get((method, seed))
            if row is None:
                cells.append(f" {'':>22s}")
                continue
            m = row.test.get(metric)
            loss = row.test.get("loss")
            cell = f"{_fmt(None if m is None else m * scale)} / {_fmt(loss)} / {_fmt(row.best_val_loss)}"
            if row.status != "completed":
                cell = row.status
            cells.append(f" {cell:>22s}")
            if row.status == "completed":
                if m is not None:
                    metric_values.append(m * scale)
                if loss is not None:
                    loss_values.append(loss)
                if row.best_val_loss is not None:
                    val_values.append(row.best_val_loss)
                secs.append(row.seconds)
        summary = f"{_mean_std(metric_values)} / {_mean_std(val_values)}"
        print(
            f"{method:{width}s}"
            + "".join(cells)
            + f" {summary:>34s}  {statistics.fmean(secs) if secs else 0:6.0f} s"
        )
    print(
        f"(cells: test {metric} / test loss / best validation loss; "
        f"{'higher' if higher else 'lower'} is better)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", type=Path)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="default: 0 1 2 (with --merge: the files' seeds)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=None, help="default: every tuning response and baseline"
    )
    parser.add_argument("--hand", type=Path, default=None, help="YAML mapping hyperparameter name → value")
    parser.add_argument("--search-factor", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/efficacy"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (runs go one after another)")
    parser.add_argument(
        "--label", default="", help="appended to each method's name in the rows (e.g. a sweep setting)"
    )
    parser.add_argument(
        "--tuned-from",
        type=Path,
        nargs="+",
        default=[],
        metavar="JSON",
        help="take the tuning runs of these earlier --json files instead of running them again "
        "(their run files must still exist), so that one seed's searches and replays can run "
        "in separate processes after one tuning run",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="run nothing: print one table from the rows of earlier --json files (seeds run apart)",
    )
    args = parser.parse_args()
    if args.merge is not None:
        merged = merge_rows(args.merge, args.seeds)
        seeds = args.seeds or sorted({row.seed for row in merged})
        print_table(args.recipe, merged, seeds)
        write_json(args.json, args.recipe, merged)
        return
    args.seeds = args.seeds or [0, 1, 2]
    torch.set_num_threads(args.threads)
    # search trials run in `stnkit tune` worker processes, which take their thread count from
    # OMP_NUM_THREADS: give them the same threads as the runs their wall-clock is compared with
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    tuners = tuning_responses()
    methods = args.methods or [*tuners, "fixed", *REPLAY_METHODS, "hand", *SEARCH_METHODS]
    recipe_data = yaml.safe_load(args.recipe.read_text())
    recipe_name = str(recipe_data.get("name", args.recipe.stem))
    # replays and search budgets follow the recipe's own tuning response (else the first one run)
    own = str((recipe_data.get("response") or {}).get("name", ""))
    default_tuner = (
        own if own in methods and own in tuners else next((m for m in methods if m in tuners), None)
    )
    if default_tuner is None and args.tuned_from and own in tuners:
        default_tuner = own
    hand_file = args.hand or Path(__file__).parent / "hand" / f"{recipe_name}.yaml"
    hand: dict[str, float] | None = None
    if "hand" in methods:
        if not hand_file.is_file():
            parser.error(f"method 'hand' needs --hand FILE (no {hand_file})")
        hand = {str(k): float(v) for k, v in yaml.safe_load(hand_file.read_text()).items()}
    args.out.mkdir(parents=True, exist_ok=True)

    earlier = [Row(**row) for path in args.tuned_from for row in json.loads(path.read_text())["rows"]]
    rows: list[Row] = []
    for seed in args.seeds:
        # an earlier tuning run stands in for this one: its wall-clock sets the search budgets
        # (an earlier --label run's rows carry that label: match them when the label is the same)
        tuned = {
            name: r
            for r in earlier
            for name in tuners
            if r.seed == seed and r.method in (name, name + args.label)
        }
        for method in methods:
            if method in tuners and method in tuned:
                continue  # taken from --tuned-from; its row is in that file
            if method in tuners:
                # the method's response first, so that --set response.OPTION=... applies to it;
                # the recipe's own response keeps the recipe's options for it (another response
                # starts from its defaults: one response's options are not another's)
                response = f"response.name={method}" if method == own else f"response={{name: {method}}}"
                row = run_recipe(args.recipe, method, seed, [response, *args.overrides], args.out)
                tuned[method] = row
            elif method == "fixed":
                row = run_recipe(
                    args.recipe, method, seed, [*args.overrides, "response={name: fixed}"], args.out
                )
            elif method == "hand":
                assert hand is not None
                extra = [*args.overrides, "response={name: fixed}", *hand_overrides(hand)]
                row = run_recipe(args.recipe, method, seed, extra, args.out)
            elif method in REPLAY_METHODS:
                if default_tuner is None or default_tuner not in tuned:
                    continue
                row = run_replay(tuned[default_tuner], method, args.out)
            elif method in SEARCH_METHODS:
                if default_tuner is None or default_tuner not in tuned:
                    continue
                reference = tuned[default_tuner].seconds
                budget = max(args.search_factor) * reference
                study = run_search(args.recipe, method, seed, args.overrides, args.out, budget)
                for search_row in search_rows(study, method, seed, reference, sorted(args.search_factor)):
                    search_row.method += args.label
                    rows.append(search_row)
                    print(
                        f"seed {seed} {search_row.method}: {search_row.test} val {search_row.best_val_loss}"
                    )
                write_json(args.json, args.recipe, rows)
                continue
            else:
                parser.error(f"unknown method {method!r}; tuning responses: {', '.join(tuners)}")
            row.method += args.label
            rows.append(row)
            write_json(args.json, args.recipe, rows)
            print(
                f"seed {seed} {method}: {row.status} test {row.test} best val {_fmt(row.best_val_loss)} "
                f"in {row.seconds:.0f} s",
                flush=True,
            )
        print_table(args.recipe, rows, args.seeds)


if __name__ == "__main__":
    main()
