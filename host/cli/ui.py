"""CLI presentation, in one place: the consoles, the progress bar, the JSON printer, escaping,
logging setup, the quieting of native log lines, and the options every command shares.

- `task(description)` is the one progress bar factory: rich on stderr, hidden when stderr is
  not a terminal, and, around the library call it wraps, native log lines kept out of sight
  (`native_logs_captured`). Use it as `with task("training") as t: train(..., progress=t)`.
- `print_json(obj)` is the one JSON printer (plain stdout, so the output stays parseable).
- `escape(text)` must wrap any text from outside (file names, host names, device messages)
  before rich renders it as markup: `[pi.local]:2222` would otherwise be eaten as a tag.
- The shared options (`--json`, `--data-dir`) and the artifacts-dir argument are `Annotated`
  typer types; the device options (SSH, `--device-dir`, bench settings) live in
  edgeq.host.cli.common.

Native logs: TensorFlow's converter and LiteRT write from C++ straight to file descriptor 2
(`fully_quantize: 0, ...`, `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`), which
no environment variable fully silences. While a library call runs, fd 2 points at a temp file
and Python's `sys.stderr` (so rich, logging, warnings) writes to a duplicate of the original
fd 2; the captured text is dropped on success, kept for the error handler on an unexpected
failure, and not captured at all with `--debug` (rerun with it when native code kills the
process outright, e.g. a C++ check failure: the captured text dies with the process).
Imports: standard library, typer and rich only (edgeq --help must stay fast).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from edgeq.host.artifacts import DEFAULT_ARTIFACTS_DIR
from rich.console import Console
from rich.markup import escape as _rich_escape

__all__ = [
    "console", "err_console", "state", "escape", "print_json", "setup_logging", "task", "Task",
    "native_logs_captured", "JsonOption", "DataDirOption", "ArtifactsDirArgument",
    "DEFAULT_ARTIFACTS_DIR",
]

console = Console()
err_console = Console(stderr=True)  # follows sys.stderr, so it writes past a native capture


class _State:
    debug: bool = False
    #: native log text captured during a call that failed unexpectedly (for the error handler)
    native_log_on_failure: str = ""


state = _State()


def escape(text: object) -> str:
    """`text` safe to embed in rich markup (brackets kept literally)."""
    return _rich_escape(str(text))


def print_json(obj: Any) -> None:
    """`obj` as indented JSON on stdout; plain write, rich would wrap lines and add markup."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


class _CurrentStderr(io.TextIOBase):
    """Writes to whatever `sys.stderr` is now (so log lines follow a native capture and print
    above a live progress bar)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup_logging(level: int) -> None:
    """The CLI's log lines: `LEVEL name: message` on the current stderr."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=_CurrentStderr(), force=True)


def _stderr_is_fd2() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO, closed
        return False


@contextmanager
def native_logs_captured() -> Iterator[None]:
    """Keep what native code writes to fd 2 out of the terminal for the duration of the block.

    A no-op with --debug, or when `sys.stderr` is not fd 2 (tests capturing output). On an
    exception other than an EdgeqError the captured text is left in
    `state.native_log_on_failure` for the error handler to replay.
    """
    if state.debug or not _stderr_is_fd2():
        yield
        return
    from edgeq.device.errors import EdgeqError

    original = sys.stderr
    original.flush()
    saved_fd = os.dup(2)
    human = io.TextIOWrapper(io.FileIO(saved_fd, "w", closefd=True),
                             encoding=original.encoding, errors="backslashreplace",
                             line_buffering=True)
    log = tempfile.TemporaryFile()
    os.dup2(log.fileno(), 2)
    sys.stderr = human
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, (EdgeqError, KeyboardInterrupt, typer.Exit)):
            state.native_log_on_failure = _read(log)
        raise
    finally:
        human.flush()
        os.dup2(saved_fd, 2)
        sys.stderr = original
        log.close()
        # `human` stays open: a logger created during the call may hold it; it still reaches
        # the terminal and closes its fd when nothing refers to it any more.


def _read(log: Any) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")


class Task:
    """A progress bar's one task: the library's `progress(done, total)` callback, plus lines
    printed above the bar."""

    def __init__(self, progress: Any, description: str) -> None:
        self._progress = progress
        self._id = progress.add_task(escape(description), total=None)

    def __call__(self, done: int, total: int) -> None:
        self._progress.update(self._id, completed=done, total=total or None)

    def describe(self, text: str) -> None:
        """Change the text next to the bar (escaped)."""
        self._progress.update(self._id, description=escape(text))

    def restart(self, description: str) -> None:
        """Back to an empty bar of unknown length, with a new text."""
        self._progress.reset(self._id, total=None, description=escape(description))

    def note(self, text: str) -> None:
        """A line above the bar (escaped)."""
        self._progress.console.print(escape(text), highlight=False, soft_wrap=True)

    def rule(self, title: str) -> None:
        """A section rule above the bar (escaped, bold)."""
        self._progress.console.rule(f"[bold]{escape(title)}", align="left")


def _progress(transfer: bool) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counts = ((DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()) if transfer
              else (MofNCompleteColumn(), TimeElapsedColumn()))
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), *counts,
                    console=err_console, transient=True, disable=not err_console.is_terminal)


@contextmanager
def task(description: str, *, transfer: bool = False) -> Iterator[Task]:
    """A transient progress bar on stderr around one library call (hidden when stderr is not
    a terminal), with native log lines captured; `transfer` counts bytes instead of items."""
    with native_logs_captured():
        progress = _progress(transfer)
        with progress:
            yield Task(progress, description)


# ------------------------------------------------------------------ shared options

DATA_DIR_HELP = ("MNIST folder (IDX files, gzipped or not, or a Keras mnist.npz) or an .npz "
                 "file; default: the copy shipped with edgeq.")

JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print the result as JSON on stdout (machine-readable) instead of tables.")]
DataDirOption = Annotated[Optional[Path], typer.Option(
    "--data-dir", envvar="EDGEQ_DATA_DIR", help=DATA_DIR_HELP)]
ArtifactsDirArgument = Annotated[Path, typer.Argument(
    help="Artifacts directory from edgeq train + quantize (manifest.json, both .tflite files, "
         f"eval.npz); default {DEFAULT_ARTIFACTS_DIR}.", show_default=False)]
HistoryDbOption = Annotated[Optional[Path], typer.Option(
    "--db", help="History database (default $EDGEQ_HISTORY_DB or the user data directory).")]


# ------------------------------------------------------------------ fleet: a live board table


class BoardsView:
    """The live table of a fleet run: one row per board (its target and what it does now).
    `update` is called from the boards' threads; rich's Live redraws a few times a second."""

    def __init__(self, boards: list[tuple[str, str]]) -> None:
        import threading

        self._lock = threading.Lock()
        self._rows = {name: [target, "queued", ""] for name, target in boards}

    def update(self, board: str, status: Optional[str] = None, step: Optional[str] = None) -> None:
        """Set a board's status ("connecting", "2/4 cells", "ok", "failed") and/or its step."""
        with self._lock:
            row = self._rows.setdefault(board, ["", "", ""])
            if status is not None:
                row[1] = status
            if step is not None:
                row[2] = step

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title="boards", title_justify="left", show_edge=False, pad_edge=False)
        for name in ("board", "target", "status", "now"):
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=60)
        with self._lock:
            for board, (target, status, step) in self._rows.items():
                style = "green" if status == "ok" else "red" if status == "failed" else None
                table.add_row(escape(board), escape(target), escape(status), escape(step),
                              style=style)
        return table


@contextmanager
def boards_view(boards: list[tuple[str, str]]) -> Iterator[BoardsView]:
    """A live board table on stderr for the duration of a fleet call (hidden when stderr is
    not a terminal), with native log lines captured as `task` does."""
    from rich.live import Live

    view = BoardsView(boards)
    with native_logs_captured():
        if not err_console.is_terminal:
            yield view
            return
        with Live(view, console=err_console, refresh_per_second=4, transient=True):
            yield view
