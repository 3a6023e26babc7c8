"""The ``petkit`` command: thin Typer wrappers over petkit's Python API."""

from __future__ import annotations

import importlib
import sys
import warnings

import typer
from rich.markup import escape

from petkit import __version__
from petkit.cli.common import err_console, fail
from petkit.errors import PetkitError, from_os_error

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
    if _state.get("registered"):
        return  # main() may run more than once in one process (tests, notebooks)
    _state["registered"] = True
    from petkit.cli import audit, calibrate, demo, embed, evaluate, export, index, plugins, prepare, report, serve, submit, synth, train

    for module in (prepare, train, embed, evaluate, report, audit, calibrate, submit, export, serve, synth, demo):
        module.register(app)
    index.register_search(app)
    app.add_typer(index.app, name="index")
    app.add_typer(plugins.app, name="plugins")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}")


def _click_exceptions(name: str) -> tuple[type, ...]:
    """The exception class ``name`` of click and of the click copy typer carries (typer >= 0.24 vendors it)."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions", "typer.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_USAGE_ERRORS = _click_exceptions("UsageError")
_ABORTS = _click_exceptions("Abort")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Every failure ends as one ``error:`` line (and a hint), never a traceback unless
    ``--debug``: exit 2 for what the user can fix (bad input, a usage mistake, a full disk), 1 for a
    bug in petkit, 130 when interrupted."""
    warnings.showwarning = _show_warning
    _register_commands()
    try:
        code = app(args=argv, standalone_mode=False)
    except _USAGE_ERRORS as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            print(error.ctx.get_help())
        else:
            command = error.ctx.command_path if error.ctx else "petkit"
            fail(PetkitError(error.format_message().strip().splitlines()[0], f"see '{command} --help'"))
        code = 2
    except _ABORTS:
        err_console.print("interrupted")
        code = 130
    except PetkitError as error:
        if _state["debug"]:
            raise
        fail(error)
        code = 2
    except OSError as error:
        if _state["debug"]:
            raise
        fail(from_os_error(error))
        code = 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        code = 130
    except Exception as error:  # a bug: one line, the traceback behind --debug
        if _state["debug"]:
            raise
        fail(PetkitError(f"internal error: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
                         "run again with --debug for the traceback and report it (docs/security.md says how)"))
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
