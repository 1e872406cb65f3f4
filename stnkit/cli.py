"""The ``stnkit`` command line. One error boundary: :func:`main`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stnkit.analysis.export import ExportFormat
from stnkit.errors import StnkitError
from stnkit.plugins import Plugins, load_plugins

__all__ = ["app", "main"]

app = typer.Typer(
    name="stnkit",
    help="Tune hyperparameters while training, with Self-Tuning Networks.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_plugins: Plugins | None = None
_commands_added = False


def plugins() -> Plugins:
    """The process's plugin manager (loaded once by :func:`main`)."""
    global _plugins
    if _plugins is None:
        _plugins = load_plugins()
    return _plugins


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a recipe value: dotted.key=value (YAML value).", metavar="KEY=VALUE"
    ),
]


_EXIT_CODES = {"completed": 0, "interrupted": 130}


def _exit_for(status: str) -> None:
    """Completed runs exit 0, interrupted ones 130 (the shell's code for Ctrl-C), the rest 1."""
    code = _EXIT_CODES.get(status, 1)
    if code:
        raise typer.Exit(code)


@app.command()
def run(
    recipe: Annotated[
        Path | None, typer.Argument(help="The recipe YAML file (omit with --resume).", show_default=False)
    ] = None,
    set_: SetOption = None,
    resume_from: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue a stopped or crashed run from its latest checkpoint, in the same file.",
            metavar="RUN.h5",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the run file (default: store.dir).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress; print only the run file's path.")
    ] = False,
) -> None:
    """Train with the recipe, tuning its hyperparameters, and record the run.

    Exits 0 when the run completes, 130 when it is interrupted (Ctrl-C, SIGTERM: a checkpoint is
    written first, so `stnkit run --resume RUN.h5` continues it), 1 when it diverges, 2 on bad input.
    """
    from stnkit.errors import UsageError
    from stnkit.progress import make_progress
    from stnkit.recipe import load_recipe
    from stnkit.runner import resume as resume_run
    from stnkit.runner import run as run_recipe

    console = _out()
    observers: list[Any] = []
    if resume_from is not None:
        if recipe is not None or set_ or out is not None:
            # A resumed run continues exactly as recorded: its recipe and file are not to be changed.
            raise UsageError("--resume continues a run as recorded; give no recipe, --set or --out with it")
        if not quiet:
            from stnkit.store.reader import open_run

            recorded_train = open_run(resume_from).recipe.get("train") or {}
            observers.append(make_progress(console, recorded_train.get("max_steps")))

        def notice(line: str) -> None:
            Console(stderr=True, highlight=False, soft_wrap=True).print(Text(line, style="yellow"))

        result = resume_run(resume_from, plugins=plugins(), observers=observers, notice=notice)
    else:
        if recipe is None:
            raise UsageError("give a recipe file to run, or --resume RUN.h5 to continue a run")
        parsed = load_recipe(recipe, set_ or [])
        if not quiet:
            observers.append(make_progress(console, parsed.train.max_steps))
        result = run_recipe(parsed, out_dir=out, plugins=plugins(), observers=observers)
    if quiet and result.path is not None:
        console.print(str(result.path))
    _exit_for(result.status)


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    set_: SetOption = None,
) -> None:
    """Check a recipe completely without running it."""
    from stnkit.runner import validate as validate_recipe

    parsed = validate_recipe(recipe, set_ or [], plugins())
    hyper = ", ".join(parsed.hyperparameters) or "none"
    _out().print(
        f"{recipe}: valid — data {parsed.data.name!r}, model {parsed.model.name!r}, "
        f"response {parsed.response.name!r}, tuning: {hyper}"
    )


@app.command("plugins")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List loaded plugins and the components each registers."""
    described = plugins().describe()
    if as_json:
        print(json.dumps({"plugins": described, "skipped": plugins().skipped}, indent=2))
        return
    table = Table(header_style="bold")
    for column in ("plugin", "distribution", "registers", "hooks"):
        table.add_column(column)
    for entry in described:
        registers = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in entry["registers"].items())
        dist = f"{entry['distribution']} {entry['version']}" if entry["distribution"] else "–"
        lifecycle = [
            h.removeprefix("stnkit_") for h in entry["hooks"] if not h.startswith("stnkit_register_")
        ]
        table.add_row(entry["name"], dist, registers or "–", ", ".join(lifecycle) or "–")
    console = _out()
    console.print(table)
    if plugins().skipped:
        console.print(Text(f"disabled: {', '.join(plugins().skipped)}", style="dim"))


@app.command()
def show(
    run_file: Annotated[Path, typer.Argument(metavar="RUN", help="A run file (.h5).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Summarise a run: status, metrics and the hyperparameters it found."""
    from stnkit.analysis.show import render_run
    from stnkit.store.reader import open_run

    record = open_run(run_file)
    if as_json:
        print(json.dumps(record.summary(), indent=2))
        return
    _out().print(render_run(record))


RunsArgument = Annotated[list[Path], typer.Argument(metavar="RUN", help="Run files (.h5).")]


@app.command("ls")
def list_runs(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder searched for *.h5 run files.")] = Path(
        "runs"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the run files in a folder (recursively), newest first."""
    from stnkit.analysis.listing import list_runs as find_runs
    from stnkit.analysis.listing import render_listing

    entries = find_runs(folder)
    if as_json:
        print(json.dumps([entry.to_json() for entry in entries], indent=2))
        return
    console = _out()
    if not entries:
        console.print(f"no run files in {folder}")
        return
    console.print(render_listing(entries, folder))


@app.command()
def compare(
    run_files: RunsArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare runs side by side: final metrics and each hyperparameter's final value."""
    from stnkit.analysis.compare import compare_runs, render_comparison
    from stnkit.store.reader import open_run

    comparison = compare_runs([open_run(path) for path in run_files])
    if as_json:
        print(json.dumps(comparison.to_json(), indent=2))
        return
    _out().print(render_comparison(comparison))


@app.command()
def plot(
    run_files: RunsArgument,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Image file to write (.png, .pdf, .svg).", metavar="FILE")
    ],
    title: Annotated[str | None, typer.Option("--title", help="A title above the panels.")] = None,
) -> None:
    """Plot hyperparameter trajectories (with σ bands) and loss curves of one or more runs."""
    from stnkit.analysis.plot import plot_runs
    from stnkit.store.reader import open_run

    records = [open_run(path) for path in run_files]
    written = plot_runs(records, output, plugins=plugins(), title=title)
    _out().print(f"wrote {written}")


@app.command()
def export(
    run_file: Annotated[Path, typer.Argument(metavar="RUN", help="A run file (.h5).")],
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="json: the whole record; csv: a file per table.")
    ] = ExportFormat.json,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="json: a file (default: standard output); csv: a folder (default: the current one).",
            metavar="PATH",
        ),
    ] = None,
) -> None:
    """Export a run's record and trajectories as JSON or CSV."""
    from stnkit.analysis.export import record_to_json, write_export
    from stnkit.store.reader import open_run

    record = open_run(run_file)
    if fmt is ExportFormat.json and output is None:
        print(json.dumps(record_to_json(record), indent=1, allow_nan=False))
        return
    console = _out()
    for path in write_export(record, fmt, output):
        console.print(f"wrote {path}")


@app.command()
def replay(
    run_file: Annotated[Path, typer.Argument(metavar="RUN", help="A run file (.h5) to replay.")],
    final: Annotated[
        bool, typer.Option("--final", help="Hold the run's final values fixed instead of its schedule.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the replay's run file (default: the source's).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress; print only the run file's path.")
    ] = False,
) -> None:
    """Train the plain network with the run's recipe, following the hyperparameter schedule it found."""
    from stnkit.analysis.replay import plan_replay
    from stnkit.progress import make_progress
    from stnkit.runner import run as run_recipe

    plan = plan_replay(run_file, final=final, out_dir=out, plugins=plugins())
    console = _out()
    observers: list[Any] = []
    if not quiet:
        observers.append(make_progress(console, plan.recipe.train.max_steps))
    result = run_recipe(
        plan.recipe, out_dir=plan.out_dir, plugins=plugins(), observers=observers, metadata=plan.metadata
    )
    if quiet and result.path is not None:
        console.print(str(result.path))
    elif result.path is not None:
        console.print(f"{plan.mode} replay of {run_file} recorded in {result.path}")
    _exit_for(result.status)


def _print_error(error: StnkitError) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for line in str(error).splitlines() or [type(error).__name__]:
        console.print(Text(line, style="red"))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one clear message and return their exit code."""
    args = sys.argv[1:] if argv is None else argv
    global _commands_added
    try:
        if not _commands_added:
            plugins().hook.stnkit_register_commands(app=app)
            _commands_added = True
        # standalone mode: typer prints usage errors itself and always ends with SystemExit
        app(args=args, prog_name="stnkit")
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except StnkitError as error:
        _print_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    return 0
