"""How the host talks to a device: one interface, two implementations.

`Connection` is what deploy and bench-remote are written against. `SSHConnection`
(edgeq.host.ssh, paramiko) reaches a board; `LocalConnection` (edgeq.host.local)
runs the same agent on this machine without SSH (`--host local`), like TVM's
LocalSession. Both are context managers and open lazily.
Imports: standard library only (implementations import their own libraries).
"""
from __future__ import annotations

import abc
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Sequence

# (bytes_done, bytes_total) -> None; the CLI turns it into a rich progress bar.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def quote_argv(argv: Sequence[str]) -> str:
    """The one way a remote command line is built: every word shell-quoted."""
    return " ".join(shlex.quote(str(word)) for word in argv)


class Stream(abc.ABC):
    """A bidirectional byte stream to a process on the device (the daemon bridge)."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def readline(self, limit: int) -> bytes:
        """One line including b'\\n', b'' at end of stream; error if longer than `limit`."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Connection(abc.ABC):
    """A device reachable for commands and file transfer."""

    #: printable name of the device (e.g. "pi@pi.local:22" or "local")
    name: str

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        timeout_s: Optional[float] = None,
        env: Optional[dict[str, str]] = None,
    ) -> CommandResult:
        """Run a command (argv, never a shell string) and wait for it."""

    @abc.abstractmethod
    def open_stream(self, argv: Sequence[str]) -> Stream:
        """Start a command and talk to its stdin/stdout (used for the daemon bridge)."""

    @abc.abstractmethod
    def home(self) -> str:
        """The device user's home directory (absolute path)."""

    @abc.abstractmethod
    def put_file(
        self,
        local_path: Path,
        remote_path: str,
        *,
        progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Copy a file to exactly `remote_path` (the caller handles temp names and renames)."""

    @abc.abstractmethod
    def get_file(self, remote_path: str, local_file: BinaryIO) -> None:
        """Copy a remote file into an open local file."""

    @abc.abstractmethod
    def close(self) -> None: ...
