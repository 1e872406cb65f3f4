"""The ``stnkit`` command line. One error boundary: :func:`main`."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stnkit.analysis.export import ExportFormat
from stnkit.errors import StnkitError
from stnkit.interrupts import install as install_interrupts
from stnkit.killpoints import signal_point
from stnkit.plugins import Plugins, PluginWarning, load_plugins

__all__ = ["app", "main"]

signal_point("cli-import")

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
_reported_broken = False


def _loaded() -> Plugins:
    global _plugins
    if _plugins is None:
        # tolerant: one broken plugin must not take down --help, plugins, ls or show
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PluginWarning)
            _plugins = load_plugins(tolerant=True)
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        for warning in caught:
            if issubclass(warning.category, PluginWarning):
                console.print(Text(f"warning: {warning.message}", style="yellow"))
            else:
                warnings.showwarning(
                    warning.message, warning.category, warning.filename, warning.lineno, warning.file
                )
    return _plugins


def plugins() -> Plugins:
    """The process's plugin manager, for commands that build components: a broken plugin is
    the clear error such a command stops with (it may be the plugin the recipe needs)."""
    loaded = _loaded()
    loaded.require_healthy()
    return loaded


def reading_plugins() -> Plugins:
    """The process's plugin manager for commands that only read (``plugins``, ``ls``, ``show``,
    ``compare``, ``plot``, ``export``, ``--help``): broken plugins are reported once on standard
    error and left out."""
    global _reported_broken
    loaded = _loaded()
    if loaded.broken and not _reported_broken:
        _reported_broken = True
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        for broken in loaded.broken:
            console.print(Text(f"warning: {broken.message}; it is left out", style="yellow"))
    return loaded


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
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            "--tensorboard",
            help="Also log to TensorBoard event files under DIR (the stnkit-tensorboard plugin; "
            "the same as the recipe section observers: {tensorboard: {dir: DIR}}).",
            metavar="DIR",
        ),
    ] = None,
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
        if recipe is not None or set_ or out is not None or tensorboard is not None:
            # A resumed run continues exactly as recorded: its recipe and file are not to be changed.
            raise UsageError("--resume continues a run as recorded; give no recipe, --set or --out with it")
        if not quiet:
            observers.append(make_progress(console))

        def notice(line: str) -> None:
            Console(stderr=True, highlight=False, soft_wrap=True).print(Text(line, style="yellow"))

        result = resume_run(resume_from, plugins=plugins(), observers=observers, notice=notice)
    else:
        if recipe is None:
            raise UsageError("give a recipe file to run, or --resume RUN.h5 to continue a run")
        parsed = load_recipe(recipe, set_ or [])
        if tensorboard is not None:
            # validated with the rest of the recipe: an unknown observer (plugin not installed)
            # is reported as observers.tensorboard before anything starts
            options = parsed.observers.get("tensorboard") or {}
            parsed.observers["tensorboard"] = {**options, "dir": str(tensorboard)}
        if not quiet:
            observers.append(make_progress(console))
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
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            help="A component (stn-lstm, cutout, integer...) or plugin: show its options and "
            "the hyperparameters it consumes.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List loaded plugins, what each registers and which are broken; or describe one component."""
    if name is not None:
        from stnkit.describe import describe, render_components

        components = describe(plugins(), name)
        if as_json:
            print(json.dumps({"components": components}, indent=2))
        else:
            _out().print(render_components(components))
        return
    loaded = reading_plugins()
    described = loaded.describe()
    broken = [{"name": b.name, "distribution": b.distribution, "message": b.message} for b in loaded.broken]
    if as_json:
        print(json.dumps({"plugins": described, "skipped": loaded.skipped, "broken": broken}, indent=2))
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
    for bad in loaded.broken:
        table.add_row(
            Text(bad.name, style="red"), bad.distribution or "–", Text("broken (see above)", style="red"), "–"
        )
    console = _out()
    console.print(table)
    if loaded.skipped:
        console.print(Text(f"disabled: {', '.join(loaded.skipped)}", style="dim"))


@app.command()
def show(
    run_file: Annotated[Path, typer.Argument(metavar="RUN", help="A run file (.h5) or a study folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Summarise a run (status, metrics, the hyperparameters it found) or a study (its trials, best)."""
    from stnkit.analysis.kinds import Presentation
    from stnkit.analysis.show import render_run
    from stnkit.store.reader import open_run

    if run_file.is_dir():
        from stnkit.tune.analysis import open_study, render_study

        study = open_study(run_file)
        if as_json:
            print(json.dumps(study.summary(), indent=2))
        else:
            _out().print(render_study(study))
        return
    record = open_run(run_file)
    present = Presentation.of(record, reading_plugins())
    if as_json:
        print(json.dumps(present.summary(record.summary()), indent=2))
        return
    _out().print(render_run(record, present))


RunsArgument = Annotated[list[Path], typer.Argument(metavar="RUN", help="Run files (.h5).")]


@app.command("ls")
def list_runs(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder searched for *.h5 run files.")] = Path(
        "runs"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the run files in a folder (recursively), newest first, and the studies beside them."""
    from stnkit.analysis.listing import list_runs as find_runs
    from stnkit.analysis.listing import list_studies, render_listing, render_studies

    entries = find_runs(folder)
    found = list_studies(folder)
    if as_json:
        print(json.dumps([entry.to_json() for entry in entries] + [s.to_json() for s in found], indent=2))
        return
    console = _out()
    if not entries and not found:
        console.print(f"no run files in {folder}")
        return
    if entries:
        console.print(render_listing(entries, folder))
    if found:
        console.print(render_studies(found, folder))


@app.command()
def compare(
    run_files: RunsArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare runs side by side: final metrics and each hyperparameter's final value.

    A study folder stands for its best trial's run file: `stnkit compare STN_RUN STUDY_DIR`.
    """
    from stnkit.analysis.compare import compare_runs, render_comparison
    from stnkit.analysis.kinds import Presentation
    from stnkit.store.reader import open_run

    paths = []
    for path in run_files:
        if path.is_dir():
            from stnkit.tune.analysis import open_study

            path = open_study(path).best_run()
        paths.append(path)
    records = [open_run(path) for path in paths]
    comparison = compare_runs(records, [Presentation.of(r, reading_plugins()) for r in records])
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
    """Plot hyperparameter trajectories (with σ bands) and loss curves of one or more runs.

    With a study folder first (`stnkit plot STUDY_DIR [STN_RUN] -o F.png`): the search's best
    validation loss so far against wall time, the STN run's wall time and result marked.
    """
    from stnkit.analysis.plot import plot_runs
    from stnkit.store.reader import open_run

    if run_files and run_files[0].is_dir():
        from stnkit.errors import UsageError
        from stnkit.tune.analysis import open_study, plot_study

        if len(run_files) > 2 or any(p.is_dir() for p in run_files[1:]):
            raise UsageError("plot a study as: stnkit plot STUDY_DIR [STN_RUN] -o FILE")
        stn = open_run(run_files[1]) if len(run_files) == 2 else None
        written = plot_study(open_study(run_files[0]), output, stn=stn, title=title)
        _out().print(f"wrote {written}")
        return
    records = [open_run(path) for path in run_files]
    written = plot_runs(records, output, plugins=reading_plugins(), title=title)
    _out().print(f"wrote {written}")


@app.command()
def export(
    run_file: Annotated[Path, typer.Argument(metavar="RUN", help="A run file (.h5) or a study folder.")],
    target: Annotated[
        Path | None,
        typer.Argument(metavar="PATH", help="Where to write (the same as -o).", show_default=False),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="json: the whole record; csv: a file per table; or an observer plugin's format "
            "(tensorboard: event files under a folder).",
        ),
    ] = ExportFormat.json.value,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="json: a file (default: standard output); csv: a folder (default: the current one); "
            "plugin formats: a folder.",
            metavar="PATH",
        ),
    ] = None,
) -> None:
    """Export a run's record and trajectories as JSON, CSV or a plugin's format (tensorboard), or a
    study's trials table."""
    from stnkit.analysis.export import export_with_observer, record_to_json, write_export
    from stnkit.analysis.kinds import Presentation
    from stnkit.errors import UsageError
    from stnkit.store.reader import open_run

    if target is not None and output is not None:
        raise UsageError("give the output path once: as PATH or as -o, not both")
    output = output if output is not None else target
    if run_file.is_dir():
        from stnkit.tune.analysis import open_study

        study = open_study(run_file)
        if fmt == ExportFormat.json:
            text = json.dumps(study.summary(), indent=1)
            if output is None:
                print(text)
                return
            output.write_text(text + "\n", encoding="utf-8")
            _out().print(f"wrote {output}")
            return
        if fmt != ExportFormat.csv:
            raise UsageError(f"a study exports as csv or json, not {fmt!r}")
        _out().print(f"wrote {study.write_csv((output or Path('.')) / 'trials.csv')}")
        return
    record = open_run(run_file)
    if fmt not in {f.value for f in ExportFormat}:
        console = _out()
        for path in export_with_observer(record, fmt, output, plugins()):
            console.print(f"wrote {path}")
        return
    present = Presentation.of(record, reading_plugins())
    if fmt == ExportFormat.json and output is None:
        print(json.dumps(record_to_json(record, present), indent=1, allow_nan=False))
        return
    console = _out()
    for path in write_export(record, fmt, output, present):
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
        observers.append(make_progress(console))
    result = run_recipe(
        plan.recipe, out_dir=plan.out_dir, plugins=plugins(), observers=observers, metadata=plan.metadata
    )
    if quiet and result.path is not None:
        console.print(str(result.path))
    elif result.path is not None:
        console.print(f"{plan.mode} replay of {run_file} recorded in {result.path}")
    _exit_for(result.status)


@app.command()
def tune(
    recipe: Annotated[
        Path | None, typer.Argument(help="The recipe YAML file (omit with --resume).", show_default=False)
    ] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="random, tpe, gp or grid.")] = "tpe",
    trials: Annotated[
        int | None, typer.Option("--trials", "-n", help="Trials to finish (default 20; grid: its size).")
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget", help="Start no trial after this much wall time: 90s, 20m, 1h.", metavar="DURATION"
        ),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Trials run in parallel processes.")] = 1,
    prune: Annotated[
        str, typer.Option("--prune", help="median: stop trials whose epoch losses trail the median; none.")
    ] = "none",
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the sampler.")] = None,
    grid_points: Annotated[
        int, typer.Option("--grid-points", help="Grid values per continuous hyperparameter.")
    ] = 5,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage", help="An Optuna storage URL instead of the journal file in the study folder."
        ),
    ] = None,
    set_: SetOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder the study folder goes in (default: store.dir).")
    ] = None,
    resume_from: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue a stopped or killed study.", metavar="DIR"),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress; print only the study folder's path.")
    ] = False,
) -> None:
    """Search the recipe's hyperparameters with Optuna (random, TPE, GP or grid): one plain run per trial.

    Each trial trains the recipe with `response: fixed` at sampled values; all trials and the Optuna
    journal go in one study folder. Exits 0 when the study is done, 130 when interrupted (continue
    it with `stnkit tune --resume DIR`), 2 on bad input.
    """
    from stnkit.errors import UsageError
    from stnkit.tune.driver import TuneOptions, create_study, drive
    from stnkit.tune.progress import StudyView
    from stnkit.tune.study import parse_duration

    console = _out()
    view = StudyView(console, quiet=quiet)
    if resume_from is not None:
        given = [recipe, set_, out, budget, trials, storage]
        if any(v is not None and v != [] for v in given) or method != "tpe" or jobs != 1 or prune != "none":
            raise UsageError(
                "--resume continues a study as recorded; give no recipe or other options with it"
            )
        result = drive(resume_from, view, resumed=True)
    else:
        if recipe is None:
            raise UsageError("give a recipe file to tune, or --resume DIR to continue a study")
        options = TuneOptions(
            method=method,
            trials=trials,
            budget=None if budget is None else parse_duration(budget),
            jobs=jobs,
            prune=prune,
            seed=seed,
            grid_points=grid_points,
            storage=storage,
        )
        folder = create_study(recipe, options, set_ or [], out, plugins())
        result = drive(folder, view)
    if quiet:
        console.print(str(result.folder))
    else:
        console.print(f"study folder: {result.folder}")
    if result.status == "interrupted":
        console.print(f"interrupted; continue with: stnkit tune --resume {result.folder}")
        raise typer.Exit(130)
    if result.status != "completed":
        Console(stderr=True).print(Text(result.status, style="red"))
        raise typer.Exit(1)


def _print_error(error: StnkitError) -> None:
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for line in str(error).splitlines() or [type(error).__name__]:
        console.print(Text(line, style="red"))


def _add_plugin_commands(loaded: Plugins) -> None:
    """Each plugin's ``stnkit_register_commands`` on its own: one that crashes is reported and
    left out, so the other commands (and ``--help``) still work."""
    for impl in loaded.pm.hook.stnkit_register_commands.get_hookimpls():
        try:
            impl.function(**{arg: app for arg in impl.argnames})
        except Exception as error:
            record = loaded.loaded.get(impl.plugin_name)
            dist = f" (from distribution {record.distribution!r})" if record and record.distribution else ""
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                Text(
                    f"warning: plugin {impl.plugin_name!r}{dist} failed to add its commands: "
                    f"{type(error).__name__}: {error}; they are left out",
                    style="yellow",
                )
            )


class _InterruptedError(Exception):
    """Ctrl-C or SIGTERM inside a command, carried past typer (which would exit 130 silently)."""


def _guarded(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            raise _InterruptedError from None
        except EOFError as error:
            # typer would print only "Aborted!": an unexpected end of input is a bug to show
            raise RuntimeError(f"unexpected end of input: {error}") from error

    command.__stnkit_guarded__ = True  # type: ignore[attr-defined]
    return command


def _guard_commands() -> None:
    """Every command (plugins' too) reports an interruption through :func:`main`'s boundary."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "__stnkit_guarded__", False):
            info.callback = _guarded(info.callback)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one clear message and return their exit code."""
    args = sys.argv[1:] if argv is None else argv
    global _commands_added
    # SIGTERM ends the command as Ctrl-C does (exit 130 with one line) in every phase
    restore_signals = install_interrupts()
    try:
        if not _commands_added:
            _add_plugin_commands(reading_plugins())
            _commands_added = True
        _guard_commands()
        # standalone mode: typer prints usage errors itself and always ends with SystemExit
        app(args=args, prog_name="stnkit")
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except StnkitError as error:
        _print_error(error)
        return error.exit_code
    except (KeyboardInterrupt, _InterruptedError):
        Console(stderr=True).print("interrupted")
        return 130
    finally:
        restore_signals()
    return 0
