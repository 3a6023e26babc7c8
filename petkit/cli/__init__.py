"""The ``petkit`` command: thin Typer wrappers over petkit's Python API."""

from __future__ import annotations

import sys
import warnings

import typer

from petkit import __version__
from petkit.cli.common import err_console, fail
from petkit.errors import PetkitError

app = typer.Typer(
    name="petkit",
    help=(
        "Recognise individual animals and faces from photos.\n\n"
        "The pipeline: prepare -> train -> embed -> evaluate / submit, and export-onnx.\n\n"
        "Example: petkit prepare photos/ -o data/ && petkit train --manifest data/manifest.csv --epochs 5"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"petkit {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    _state["debug"] = debug


def _register_commands() -> None:
    from petkit.cli import calibrate, demo, embed, evaluate, export, index, plugins, prepare, submit, synth, train

    for module in (prepare, train, embed, evaluate, calibrate, submit, export, synth, demo):
        module.register(app)
    index.register_search(app)
    app.add_typer(index.app, name="index")
    app.add_typer(plugins.app, name="plugins")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/] {message}")


def main() -> None:
    warnings.showwarning = _show_warning
    _register_commands()
    try:
        app()
    except PetkitError as error:
        if _state["debug"]:
            raise
        fail(error)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
