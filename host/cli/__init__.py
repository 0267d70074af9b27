"""The `edgeq` command line: a thin layer over the library.

Each command parses options, calls one library function and renders the result
(presentation: edgeq.host.cli.ui and .render). Command modules register themselves on `app`;
they import heavy libraries (TensorFlow, paramiko, matplotlib) only inside the command body
so that `edgeq --help` answers fast. This is the only place where errors become exit codes,
and the one place TF_CPP_MIN_LOG_LEVEL is set.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Optional

import typer
from edgeq.device import __version__
from edgeq.device.errors import EdgeqError
from edgeq.host.cli.ui import console, err_console, escape, setup_logging, state

__all__ = ["app", "console", "err_console", "main"]

app = typer.Typer(
    name="edgeq",
    help="Train, int8-quantize, deploy and benchmark TFLite models on Raspberry Pi / ARM boards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, each registering its commands on `app` when imported.
_COMMAND_MODULES = ("pipeline", "deploy", "bench", "report", "profile")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"edgeq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug",
                               help="Show tracebacks, debug logs and native (C++) log lines."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show info logs."),
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """edgeq: float32 vs int8 on the board where the model runs."""
    state.debug = debug
    setup_logging(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


def _register_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:  # a room not built yet must not break the others
            if exc.name != f"{__name__}.{name}":
                raise


def _print_error(label: str, message: str, hint: str = "") -> None:
    err_console.print(f"[bold red]{label}:[/] {escape(message)}", highlight=False,
                      soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False, soft_wrap=True)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of the `edgeq` script: run the app, map errors to exit codes."""
    _register_commands()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    state.debug = debug
    if not debug:  # TensorFlow's C++ info logs drown the CLI's own output
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app(args=argv, standalone_mode=False)
    except EdgeqError as exc:
        if debug:
            err_console.print_exception()
        _print_error("error", exc.message, exc.hint or "")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("[bold red]aborted[/]")
        sys.exit(1)
    except Exception as exc:  # click usage errors and the unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        if state.native_log_on_failure.strip():
            err_console.print("[dim]native log of the failed step:[/]")
            err_console.print(escape(state.native_log_on_failure.rstrip()), style="dim",
                              highlight=False, soft_wrap=True)
        _print_error("internal error", f"{type(exc).__name__}: {exc}",
                     "rerun with --debug for the traceback and report it")
        sys.exit(1)
