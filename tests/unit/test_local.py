"""LocalConnection: `--host local` runs real processes and copies real files."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from edgeq.host.link import (
    Connection,
    ConnectionLostError,
    LinkError,
    LinkTimeoutError,
    RemoteNotFoundError,
)
from edgeq.host.link.local import LocalConnection


def test_is_a_connection_named_local() -> None:
    with LocalConnection() as conn:
        assert isinstance(conn, Connection)
        assert conn.name == "local" and conn.is_local
        assert conn.home() == str(Path.home())


def test_run_passes_argv_without_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "should-not-exist"
    with LocalConnection() as conn:
        tricky = f"$(touch {marker}); `touch {marker}` ; echo pwned"
        result = conn.run([sys.executable, "-c", "import sys; print(sys.argv[1])", tricky])
        assert result.ok
        assert result.stdout.decode().strip() == tricky
        assert not marker.exists()


def test_run_reports_status_stdin_env_and_missing_commands() -> None:
    with LocalConnection() as conn:
        code = ("import os, sys; d = sys.stdin.read(); print(d.upper() + os.environ['EDGEQ_X']); "
                "sys.exit(3)")
        result = conn.run([sys.executable, "-c", code], stdin=b"abc", env={"EDGEQ_X": "!"})
        assert result.exit_status == 3 and not result.ok
        assert result.stdout == b"ABC!\n"
        missing = conn.run(["edgeq-no-such-command-here"])
        assert missing.exit_status == 127
        assert b"not found" in missing.stderr


def test_run_timeout_is_a_clear_error() -> None:
    with LocalConnection() as conn, pytest.raises(LinkTimeoutError, match="did not finish"):
        conn.run([sys.executable, "-c", "import time; time.sleep(10)"], timeout_s=0.5)


def test_put_file_copies_with_progress(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    payload = os.urandom(3 * (1 << 20) + 123)
    src.write_bytes(payload)
    seen: list[tuple[int, int]] = []
    with LocalConnection() as conn:
        conn.put_file(src, str(tmp_path / "copy.bin"), progress=lambda d, t: seen.append((d, t)))
    assert (tmp_path / "copy.bin").read_bytes() == payload
    assert seen[0] == (0, len(payload)) and seen[-1] == (len(payload), len(payload))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 4


def test_put_file_does_not_create_directories_like_sftp(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    with LocalConnection() as conn, pytest.raises(RemoteNotFoundError, match="no such directory"):
        conn.put_file(src, str(tmp_path / "missing-dir" / "a.txt"))
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with LocalConnection() as conn, pytest.raises(LinkError, match="cannot copy"):
            conn.put_file(src, str(tmp_path / "ro" / "a.txt"))


def test_get_file_and_tilde_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "f.json").write_text('{"a": 1}')
    buf = io.BytesIO()
    with LocalConnection() as conn:
        conn.get_file("~/f.json", buf)
        assert buf.getvalue() == b'{"a": 1}'
        with pytest.raises(RemoteNotFoundError, match="does not exist"):
            conn.get_file(str(tmp_path / "nope.json"), io.BytesIO())


def test_stream_talks_lines_and_ends() -> None:
    echo = ("import sys\n"
            "for line in sys.stdin:\n"
            "    sys.stdout.write(line.upper()); sys.stdout.flush()\n")
    with LocalConnection() as conn:
        stream = conn.open_stream([sys.executable, "-c", echo])
        stream.write(b"hello\n")
        assert stream.readline(100) == b"HELLO\n"
        stream.write(b"x" * 50 + b"\n")
        with pytest.raises(LinkError, match="longer than 10 bytes"):
            stream.readline(10)
        stream.close()


def test_stream_to_a_process_that_exits() -> None:
    with LocalConnection() as conn:
        stream = conn.open_stream([sys.executable, "-c",
                                   "import sys; sys.stderr.write('no daemon\\n'); sys.exit(2)"])
        assert stream.readline(100) == b""
        with pytest.raises(ConnectionLostError):
            for _ in range(50):  # the pipe breaks once the process is gone
                stream.write(b"x" * 65536)
        stream.close()


def test_stream_to_a_missing_program_is_a_clear_error() -> None:
    with LocalConnection() as conn, pytest.raises(LinkError, match="cannot start"):
        conn.open_stream(["/nonexistent/edgeq-python"])
