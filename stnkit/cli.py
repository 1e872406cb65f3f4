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


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML file.")],
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the run file (default: store.dir).")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress; print only the run file's path.")
    ] = False,
) -> None:
    """Train with the recipe, tuning its hyperparameters, and record the run."""
    from stnkit.progress import make_progress
    from stnkit.recipe import load_recipe
    from stnkit.runner import run as run_recipe

    parsed = load_recipe(recipe, set_ or [])
    observers: list[Any] = []
    console = _out()
    if not quiet:
        observers.append(make_progress(console, parsed.train.max_steps))
    result = run_recipe(parsed, out_dir=out, plugins=plugins(), observers=observers)
    if quiet and result.path is not None:
        console.print(str(result.path))
    if result.status != "completed":
        raise typer.Exit(1)


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
