"""`--host local`: the same agent on this machine, without SSH.

`LocalConnection` implements the `Connection` interface of edgeq.host.link.base with
subprocesses (argv lists, never a shell) and plain file copies, so deploy and
bench-remote run unchanged on a laptop with no board attached, like TVM's LocalSession.
It behaves like the SSH implementation where it matters: the same errors for the same
failures (a missing file is RemoteNotFoundError, a time-out LinkTimeoutError, a stream
whose process went away ConnectionLostError), `put_file` does not create parent
directories (SFTP does not either), a missing command exits 127 as it would through a
remote shell, and remote paths may start with `~`. A command runs in its own process
group; when the host gives up on it (time-out, Ctrl-C) the whole group is stopped, as the
SSH implementation stops it on the device.
Imports: standard library and edgeq.host.link.base only.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Optional, Sequence

from edgeq.host.link.base import (
    CommandResult,
    Connection,
    ConnectionLostError,
    LinkError,
    LinkTimeoutError,
    ProgressCallback,
    RemoteNotFoundError,
    Stream,
)

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
#: how long a stopped process group gets between TERM and KILL
_TERM_GRACE_S = 5.0


def stop_group(proc: subprocess.Popen) -> None:
    """TERM the process group `proc` leads, KILL what is left after a grace period; reap."""
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + _TERM_GRACE_S
    while time.monotonic() < deadline and _group_alive(proc.pid):
        proc.poll()  # reap the leader, or the group looks alive forever
        time.sleep(0.05)
    if _group_alive(proc.pid):
        _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        logger.warning("process %d did not exit after SIGKILL", proc.pid)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _expand(path: str) -> str:
    """Remote paths may be given relative to the device user's home (`~/...`)."""
    return os.path.expanduser(path)


class LocalStream(Stream):
    """stdin/stdout of a local subprocess; stderr goes to a temp file (no pipe deadlock)."""

    def __init__(self, argv: Sequence[str], env: Optional[dict[str, str]] = None) -> None:
        self.argv = tuple(str(a) for a in argv)
        self._timeout_s: Optional[float] = None
        self._buffer = b""
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            self._stderr.close()
            raise LinkError(
                f"cannot start {self.argv[0]}: {exc.strerror or exc}",
                hint="check that the agent is deployed (edgeq deploy --host local)",
            ) from exc

    def write(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise ConnectionLostError(
                f"{self.argv[0]} closed its input: {self.stderr_text() or exc}",
                hint="is the agent daemon running? (edgeq deploy starts it)",
            ) from exc

    def set_timeout(self, timeout_s: Optional[float]) -> None:
        self._timeout_s = timeout_s

    def readline(self, limit: int) -> bytes:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = None if self._timeout_s is None else time.monotonic() + self._timeout_s
        while b"\n" not in self._buffer[:limit + 1] and len(self._buffer) <= limit:
            wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([fd], [], [], wait_s)
                chunk = os.read(fd, 1 << 16) if ready else None
            except (OSError, ValueError) as exc:
                raise ConnectionLostError(f"{self.argv[0]} went away: {exc}",
                                          hint="is the agent daemon running?") from exc
            if chunk is None:
                raise LinkTimeoutError(
                    f"{self.argv[0]} did not answer within {self._timeout_s:g} s",
                    hint="is the machine overloaded, or the agent stuck?",
                )
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += chunk
        line, sep, rest = self._buffer.partition(b"\n")
        if len(line) + len(sep) > limit:
            raise LinkError(
                f"a line from {self.argv[0]} is longer than {limit} bytes",
                hint="the device answered with more than the protocol allows; update the agent",
            )
        self._buffer = rest
        return line + sep

    def stderr_text(self) -> str:
        """What the process wrote to stderr so far (for error messages)."""
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll()

    def close(self) -> None:
        proc = self._proc
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:  # a bridge to a stuck daemon never sees its end: do not wait for it long
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._stderr.close()


class LocalConnection(Connection):
    """This machine as the device: the agent runs in local subprocesses."""

    name = "local"
    is_local = True

    def __init__(self) -> None:
        self._streams: list[LocalStream] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        timeout_s: Optional[float] = None,
        env: Optional[dict[str, str]] = None,
    ) -> CommandResult:
        words = tuple(str(a) for a in argv)
        full_env = {**os.environ, **env} if env else None
        logger.debug("local run: %s", words)
        try:
            proc = subprocess.Popen(list(words), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=full_env,
                                    start_new_session=True)  # its own group, stopped as one
        except FileNotFoundError:
            return CommandResult(words, 127, b"", f"{words[0]}: command not found\n".encode())
        except PermissionError:
            return CommandResult(words, 126, b"", f"{words[0]}: permission denied\n".encode())
        finished = False
        try:
            out, err = proc.communicate(input=stdin if stdin is not None else b"",
                                        timeout=timeout_s)
            finished = True
        except subprocess.TimeoutExpired as exc:
            raise LinkTimeoutError(
                f"{words[0]} did not finish within {timeout_s:g} s (stopped)",
                hint="use smaller --eval-limit / run counts, or check the machine's load",
            ) from exc
        finally:
            if not finished:  # time-out or Ctrl-C: the command and all it started stop too
                stop_group(proc)
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
        return CommandResult(words, proc.returncode, out, err)

    def open_stream(self, argv: Sequence[str]) -> Stream:
        stream = LocalStream(argv)
        self._streams.append(stream)
        return stream

    def home(self) -> str:
        return str(Path.home())

    def put_file(
        self,
        local_path: Path,
        remote_path: str,
        *,
        progress: Optional[ProgressCallback] = None,
    ) -> None:
        target = _expand(remote_path)
        try:
            total = os.path.getsize(local_path)
            done = 0
            if progress is not None:
                progress(0, total)
            with open(local_path, "rb") as src, open(target, "wb") as dst:
                while True:
                    chunk = src.read(_CHUNK_BYTES)
                    if not chunk:
                        break
                    dst.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                dst.flush()
                os.fsync(dst.fileno())
        except FileNotFoundError as exc:
            if not os.path.isfile(local_path):
                raise
            raise RemoteNotFoundError(
                f"cannot write {target}: no such directory",
                hint="redeploy: the device directory is incomplete",
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:  # worded as the SSH connection words it
                raise LinkError(f"the device's disk is full writing {target}",
                                hint="free space on the board and rerun") from exc
            raise LinkError(
                f"cannot copy {local_path} to {target}: {exc.strerror or exc}",
                hint="check that the directory exists and is writable",
            ) from exc

    def get_file(self, remote_path: str, local_file: BinaryIO) -> None:
        path = _expand(remote_path)
        try:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, local_file, _CHUNK_BYTES)
        except FileNotFoundError as exc:
            raise RemoteNotFoundError(f"{path} does not exist", hint="deploy first") from exc
        except OSError as exc:
            raise LinkError(f"cannot read {path}: {exc.strerror or exc}",
                            hint="check --device-dir and its owner") from exc

    def close(self) -> None:
        while self._streams:
            self._streams.pop().close()
