"""The CLI stays thin: every registered command function, and every function in host/cli/,
is at most 40 lines (decorators not counted), so a command is parse -> one library call ->
render and each render function does one thing."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import typer
from edgeq.host import cli

MAX_LINES = 40
CLI_DIR = Path(cli.__file__).parent


def _command_callbacks() -> dict[str, object]:
    """Every function typer calls for a command, a group callback or a sub-command."""
    cli._register_commands()
    found: dict[str, object] = {}

    def walk(prefix: str, app: typer.Typer) -> None:
        if app.registered_callback is not None and app.registered_callback.callback:
            found[f"{prefix} (callback)".strip()] = app.registered_callback.callback
        for command in app.registered_commands:
            assert command.callback is not None
            found[f"{prefix} {command.name or command.callback.__name__}".strip()] = (
                command.callback)
        for group in app.registered_groups:
            assert group.typer_instance is not None
            walk(f"{prefix} {group.name}", group.typer_instance)

    walk("", cli.app)
    return found


def _length(fn: object) -> int:
    lines, _ = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    body = [ln for ln in lines if not ln.lstrip().startswith("@")]
    return len(body)


def test_every_command_function_is_short() -> None:
    callbacks = _command_callbacks()
    assert {"run", "quantize", "deploy", "bench-remote", "history show"} <= set(callbacks)
    long = {name: _length(fn) for name, fn in callbacks.items() if _length(fn) > MAX_LINES}
    assert not long, f"command functions over {MAX_LINES} lines: {long}"


def _long_functions(source: str) -> dict[str, int]:
    """name -> lines of every function (at any depth) in `source` over MAX_LINES."""
    long = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if n > MAX_LINES:
                long[node.name] = n
    return long


def test_every_function_in_the_cli_package_is_short() -> None:
    paths = sorted(CLI_DIR.glob("*.py"))
    assert {"ui.py", "render.py", "pipeline.py", "bench.py"} <= {p.name for p in paths}
    long = {f"{p.name}:{name}": n for p in paths
            for name, n in _long_functions(p.read_text(encoding="utf-8")).items()}
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def test_the_length_check_can_fail() -> None:
    body = "    x = 1\n" * MAX_LINES
    assert _long_functions(f"def too_long():\n{body}") == {"too_long": MAX_LINES + 1}
    assert _long_functions(f"def fits():\n{body[:-10]}") == {}
