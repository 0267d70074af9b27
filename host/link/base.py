"""The link to a board: one interface, its results and its own errors.

`Connection` is what deploy and bench-remote are written against. `SSHConnection`
(edgeq.host.link.ssh, paramiko) reaches a board; `LocalConnection` (edgeq.host.link.local)
runs the same agent on this machine without SSH (`--host local`), like TVM's LocalSession.
Both are context managers, open lazily, and raise the same errors for the same failure:
    LinkError              the root: any link failure the user can act on
    RemoteNotFoundError    a remote path that does not exist (get_file, put_file's directory)
    LinkTimeoutError       a command or a stream read over its time-out
    ConnectionLostError    the link dropped (network cut, or the process behind a stream went away)
    BadTargetError, UnknownHostKeyError, HostKeyMismatchError, RevokedHostKeyError,
    SSHAuthError, UnreachableHostError   setting up an SSH connection
A command that runs and fails is not an error: `run` returns its CommandResult (127 when
the program does not exist, as through a remote shell).
No wait is unbounded: commands take `timeout_s`, stream reads `set_timeout`, and the SSH
connection's file transfers and handshakes its `io_timeout_s`. When the host gives up on a
command (its time-out, Ctrl-C), the command's whole process group on the device is
stopped too (TERM, then KILL), so no deploy.sh or one-shot bench is left running.
Imports: standard library and edgeq.device.errors only (implementations import their own).
"""
from __future__ import annotations

import abc
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Sequence

from edgeq.device.errors import EdgeqError, UsageError

# (bytes_done, bytes_total) -> None; the CLI turns it into a rich progress bar.
ProgressCallback = Callable[[int, int], None]


class LinkError(EdgeqError):
    """A failure of the link to a device (SSH or local) that the user can act on."""


class RemoteNotFoundError(LinkError):
    """A remote path (file, or the directory to write into) that does not exist."""


class LinkTimeoutError(LinkError):
    """A command or a stream read did not finish within its time-out."""


class ConnectionLostError(LinkError):
    """The link dropped while a command, stream or transfer was running."""


class BadTargetError(LinkError):
    """A --host value that cannot be parsed."""


class UnknownHostKeyError(LinkError):
    """The device's host key is not in known_hosts."""


class HostKeyMismatchError(LinkError):
    """The device's host key differs from the one in known_hosts."""


class RevokedHostKeyError(LinkError):
    """The device offers a key that known_hosts marks @revoked (refused whatever the flags)."""


class SSHAuthError(LinkError):
    """The device refused our keys."""


class UnreachableHostError(LinkError):
    """The device could not be resolved, reached or did not answer in time."""


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
    def write(self, data: bytes) -> None:
        """Send all of `data`. ConnectionLostError if the process or the link is gone."""

    @abc.abstractmethod
    def readline(self, limit: int) -> bytes:
        """One line including b'\\n', or b'' at the end of the stream.

        LinkError if the line is longer than `limit` bytes, LinkTimeoutError if no line
        comes within the time-out set with `set_timeout`, ConnectionLostError if the link
        drops.
        """

    @abc.abstractmethod
    def set_timeout(self, timeout_s: Optional[float]) -> None:
        """Bound each later `readline` to `timeout_s` seconds (None: wait without limit)."""

    def stderr_text(self) -> str:
        """What the process wrote to stderr so far (for error messages); never raises."""
        return ""

    @abc.abstractmethod
    def close(self) -> None:
        """End the process's input and let it go; never raises."""


class Connection(abc.ABC):
    """A device reachable for commands and file transfer."""

    #: printable name of the device (e.g. "pi@pi.local:22" or "local")
    name: str
    #: True when the "device" is this machine (no SSH, the host's own interpreter)
    is_local: bool = False

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
        """Run a command (argv, never a shell string) with `stdin` and extra `env`; wait for it.

        Returns its CommandResult whatever its exit status (127: no such program).
        Raises LinkTimeoutError past `timeout_s`, ConnectionLostError if the link drops.
        """

    @abc.abstractmethod
    def open_stream(self, argv: Sequence[str]) -> Stream:
        """Start a command and return a Stream to its stdin/stdout (the daemon bridge).

        Raises LinkError if it cannot be started, ConnectionLostError if the link drops.
        """

    @abc.abstractmethod
    def home(self) -> str:
        """The device user's home directory (absolute POSIX path). ConnectionLostError."""

    @abc.abstractmethod
    def put_file(
        self,
        local_path: Path,
        remote_path: str,
        *,
        progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Copy a local file to exactly `remote_path`; `progress(done, total)` as bytes go.

        The caller handles temp names and renames; parent directories are not created.
        Raises RemoteNotFoundError if the remote directory does not exist, LinkError if it
        cannot be written (permission, disk full), ConnectionLostError if the link drops.
        """

    @abc.abstractmethod
    def get_file(self, remote_path: str, local_file: BinaryIO) -> None:
        """Copy the remote file into an open local binary file.

        Raises RemoteNotFoundError if it does not exist, LinkError if it cannot be read,
        ConnectionLostError if the link drops.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the link and every stream opened on it; never raises; idempotent."""


def resolve_device_dir(conn: Connection, device_dir: str) -> str:
    """`device_dir` as an absolute path on the device (`~` is the device user's home)."""
    d = str(device_dir).strip()
    if not d:
        raise UsageError("--device-dir is empty", hint="use the default ~/.edgeq")
    if d == "~" or d.startswith("~/"):
        d = conn.home().rstrip("/") + d[1:]
    elif d.startswith("~"):
        raise UsageError(f"--device-dir {device_dir!r}: only ~ (the device user's home) is "
                         "supported", hint="give an absolute path or one starting with ~/")
    if not d.startswith("/"):
        d = posixpath.join(conn.home(), d)
    return posixpath.normpath(d)
