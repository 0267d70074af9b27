"""SSHConnection against a real sshd on loopback: commands, quoting, SFTP, streams, host keys,
failures; and the Connection contract (results and errors) over both SSH and local."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from edgeq.host.link import (
    LOCAL_HOST,
    Connection,
    ConnectionLostError,
    HostKeyMismatchError,
    LinkError,
    LinkTimeoutError,
    RemoteNotFoundError,
    SSHAuthError,
    UnknownHostKeyError,
    UnreachableHostError,
    open_connection,
)
from edgeq.host.link.local import LocalConnection
from edgeq.host.link.ssh import SSHConnection
from sshd_helpers import SSHDevice, free_port


def _connect(dev: SSHDevice, **kwargs: object) -> SSHConnection:
    conn = open_connection(dev.alias, ssh_config=dev.ssh_config, **kwargs)  # type: ignore[arg-type]
    assert isinstance(conn, SSHConnection)
    return conn


@pytest.fixture(params=["ssh", "local"])
def link(request: pytest.FixtureRequest) -> Connection:
    """An open Connection of each implementation: to the test sshd, and to this machine."""
    if request.param == "local":
        conn: Connection = open_connection(LOCAL_HOST)
        assert isinstance(conn, LocalConnection) and conn.is_local
    else:
        conn = _connect(request.getfixturevalue("sshd_device"))
        assert not conn.is_local
    with conn:
        yield conn


def test_run_keeps_every_word_intact(link: Connection) -> None:
    words = ["a b", "it's", "$(echo pwned)", ";true", "*", "é"]
    with link as conn:
        result = conn.run(["printf", "%s\\n", *words])
        assert result.ok, result.stderr
        assert result.stdout.decode().splitlines() == words
        failed = conn.run(["sh", "-c", "echo oops >&2; exit 7"])
        assert failed.exit_status == 7 and failed.stderr == b"oops\n"
        echoed = conn.run(["cat"], stdin=b"x" * 300_000)
        assert echoed.stdout == b"x" * 300_000
        with_env = conn.run(["sh", "-c", 'echo "$EDGEQ_T"'], env={"EDGEQ_T": "v w"})
        assert with_env.stdout == b"v w\n"
        assert conn.home() == "/root"


def test_file_round_trip_with_progress(link: Connection, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096
    source = tmp_path / "blob.bin"
    source.write_bytes(payload)
    remote = str(tmp_path / "remote.bin")
    seen: list[tuple[int, int]] = []
    with link as conn:
        conn.put_file(source, remote, progress=lambda done, total: seen.append((done, total)))
        back = io.BytesIO()
        conn.get_file(remote, back)
    assert back.getvalue() == payload
    assert seen and seen[-1] == (len(payload), len(payload))


def test_stream_talks_lines(link: Connection) -> None:
    with link as conn:
        stream = conn.open_stream(["cat"])
        stream.write(b'{"id": 1}\n')
        assert stream.readline(1024) == b'{"id": 1}\n'
        stream.write(b"second line\n")
        assert stream.readline(1024) == b"second line\n"
        stream.close()


def test_missing_remote_paths_are_the_same_error(link: Connection, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    with link as conn:
        with pytest.raises(RemoteNotFoundError, match="does not exist") as info:
            conn.get_file(str(tmp_path / "nope.json"), io.BytesIO())
        assert isinstance(info.value, LinkError) and info.value.hint
        with pytest.raises(RemoteNotFoundError, match="no such directory") as info:
            conn.put_file(src, str(tmp_path / "missing-dir" / "a.txt"))
        assert info.value.hint
        assert not (tmp_path / "missing-dir").exists()  # put_file creates no directories


def test_timeouts_are_the_same_error(link: Connection) -> None:
    with link as conn:
        with pytest.raises(LinkTimeoutError, match="did not finish within 0.5 s") as info:
            conn.run(["sleep", "10"], timeout_s=0.5)
        assert isinstance(info.value, LinkError) and info.value.hint
        assert conn.run(["true"]).ok  # the link survives a timed-out command


def test_missing_command_exits_127_on_both(link: Connection) -> None:
    with link as conn:
        missing = conn.run(["edgeq-no-such-command-here"])
        assert missing.exit_status == 127 and b"not found" in missing.stderr


def test_stream_to_a_process_that_exits_is_connection_lost(link: Connection) -> None:
    with link as conn:
        stream = conn.open_stream(["sh", "-c", "exec 0<&-; exit 0"])
        assert stream.readline(100) == b""
        with pytest.raises(ConnectionLostError):
            for _ in range(200):  # the pipe (or channel) breaks once the process is gone
                stream.write(b"x" * 65536)
        stream.close()


def test_stream_line_over_the_limit_is_a_link_error(link: Connection) -> None:
    with link as conn:
        stream = conn.open_stream(["cat"])
        stream.write(b"x" * 50 + b"\n")
        with pytest.raises(LinkError, match="longer than 10 bytes"):
            stream.readline(10)
        stream.close()


def test_unknown_host_key_is_refused_then_accepted_on_request(
    sshd_device: SSHDevice, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"  # empty: the key is unknown
    with pytest.raises(UnknownHostKeyError) as info:
        SSHConnection(
            sshd_device.target, identity_file=sshd_device.identity, known_hosts=known
        ).run(["true"])
    assert "SHA256:" in str(info.value) and "--accept-new-host-key" in info.value.hint
    assert not known.exists()
    with SSHConnection(
        sshd_device.target,
        identity_file=sshd_device.identity,
        known_hosts=known,
        accept_new_host_key=True,
    ) as conn:
        assert conn.run(["true"]).ok
    offered = sshd_device.host_key_pub.read_text().split()[1]
    assert known.read_text() == f"[127.0.0.1]:{sshd_device.port} ssh-ed25519 {offered}\n"
    # from now on the key is known: no flag needed
    with SSHConnection(
        sshd_device.target, identity_file=sshd_device.identity, known_hosts=known
    ) as conn:
        assert conn.run(["true"]).ok


def test_changed_host_key_is_always_refused(sshd_device: SSHDevice, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{sshd_device.port} "
        + " ".join(Path(f"{other}.pub").read_text().split()[:2])
        + "\n"
    )
    before = known.read_text()
    for accept in (False, True):
        with pytest.raises(HostKeyMismatchError) as info:
            SSHConnection(
                sshd_device.target,
                identity_file=sshd_device.identity,
                known_hosts=known,
                accept_new_host_key=accept,
            ).run(["true"])
        assert "HOST KEY CHANGED" in str(info.value) and "ssh-keygen -R" in info.value.hint
    assert known.read_text() == before


def test_wrong_client_key_is_refused(sshd_device: SSHDevice, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(SSHAuthError) as info:
        _connect(sshd_device, identity_file=stranger).run(["true"])
    assert "authentication failed" in str(info.value)


def test_passphrase_key_is_a_clear_error(sshd_device: SSHDevice, tmp_path: Path) -> None:
    locked = tmp_path / "id_locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(locked)], check=True
    )
    with pytest.raises(SSHAuthError) as info:
        _connect(sshd_device, identity_file=locked).run(["true"])
    assert "passphrase" in str(info.value) and "ssh-add" in info.value.hint
    assert "secret-pass" not in str(info.value) + info.value.hint


def test_unreachable_hosts_are_one_line_errors(tmp_path: Path) -> None:
    closed = free_port()
    with pytest.raises(UnreachableHostError, match="refused"):
        SSHConnection(f"root@127.0.0.1:{closed}", known_hosts=tmp_path / "kh").run(["true"])
    with pytest.raises(UnreachableHostError, match="cannot resolve"):
        SSHConnection("root@no-such-board.invalid", known_hosts=tmp_path / "kh").run(["true"])


def test_cli_unknown_host_key_is_one_line_and_debug_shows_traceback(
    sshd_device: SSHDevice, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        sshd_device.ssh_config.read_text().replace(
            str(sshd_device.known_hosts), str(tmp_path / "empty_kh")
        )
    )
    argv = [
        sys.executable,
        "-m",
        "edgeq.host",
        "bench-remote",
        str(tmp_path),
        "--host",
        "edgeq-test",
        "--ssh-config",
        str(config),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("error: unknown host key for [127.0.0.1]:") and "SHA256:" in lines[0]
    assert lines[1].startswith("hint:") and "--accept-new-host-key" in lines[1]
    assert "Traceback" not in out.stderr
    debug = subprocess.run(
        [*argv[:3], "--debug", *argv[3:]], capture_output=True, text=True, timeout=120
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_proxyjump_from_ssh_config_goes_through_the_jump_host(
    sshd_device: SSHDevice, tmp_path: Path
) -> None:
    import paramiko

    common = (
        f"  HostName 127.0.0.1\n  Port {sshd_device.port}\n  User root\n"
        f"  IdentityFile {sshd_device.identity}\n  UserKnownHostsFile {sshd_device.known_hosts}\n"
    )
    config = tmp_path / "ssh_config"
    config.write_text(f"Host jump\n{common}Host behind\n{common}  ProxyJump jump\n")
    with SSHConnection("behind", ssh_config=config) as conn:
        assert conn.run(["echo", "through"]).stdout == b"through\n"
        # the board's session rides on a direct-tcpip channel of the jump host's session
        assert isinstance(conn._client.get_transport().sock, paramiko.Channel)
        assert conn._jump is not None and conn._jump.target.display == conn.target.display
