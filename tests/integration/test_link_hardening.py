"""The link's hardening against a real sshd on loopback (and this machine for `local`):
no unbounded waits, commands the host gives up on are stopped on the device, known_hosts
read as OpenSSH reads it, ProxyJump chains. Each test prints the time to the error."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from edgeq.host.link import (
    LOCAL_HOST,
    Connection,
    HostKeyMismatchError,
    LinkError,
    LinkTimeoutError,
    RevokedHostKeyError,
    UnknownHostKeyError,
    open_connection,
)
from edgeq.host.link import known_hosts as kh
from edgeq.host.link.ssh import SSHConnection
from sshd_helpers import FreezableProxy, SSHDevice

pytestmark = pytest.mark.sshd


@pytest.fixture(params=["ssh", "local"])
def link(request: pytest.FixtureRequest) -> Iterator[Connection]:
    if request.param == "local":
        conn: Connection = open_connection(LOCAL_HOST)
    else:
        dev = request.getfixturevalue("sshd_device")
        conn = open_connection(dev.alias, ssh_config=dev.ssh_config)
    with conn:
        yield conn


def _procs_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in word for word in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            pass
    return [p for p in found if p.pid != os.getpid()]


def _running(proc: psutil.Process) -> bool:
    """Still there and not a zombie (a process that exits while we look is gone)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(marker: str, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not [p for p in _procs_with(marker) if _running(p)]:
            return True
        time.sleep(0.1)
    return False


def test_a_timed_out_command_is_stopped_with_its_children(link: Connection) -> None:
    marker = f"4{os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"  # a unique sleep length
    with link as conn:
        t0 = time.monotonic()
        with pytest.raises(LinkTimeoutError, match="stopped"):
            # a child in the background and one in the foreground: both must go
            conn.run(["sh", "-c", f"sleep {marker} & sleep {marker}; wait"], timeout_s=1.0)
        took = time.monotonic() - t0
        print(f"\n{conn.name}: run(timeout_s=1) gave up after {took:.2f} s")
        assert took < 10
        assert _gone(marker), [p.info["cmdline"] for p in _procs_with(marker)]
        assert conn.run(["true"]).ok  # the link survives


def test_ctrl_c_stops_the_remote_command(link: Connection) -> None:
    marker = f"5{os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"
    main = threading.main_thread().ident
    assert main is not None
    with link as conn:
        timer = threading.Timer(1.0, signal.pthread_kill, args=(main, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                conn.run(["sh", "-c", f"sleep {marker}"], timeout_s=60)
        finally:
            timer.cancel()
        assert _procs_with(marker) == [] or _gone(marker)


def test_a_dropped_link_stops_the_remote_command(sshd_device: SSHDevice) -> None:
    """The host cannot send a kill over a link that is gone; when the sshd session serving a
    command dies (the link dropped and sshd noticed, or it was killed), the command goes with
    it, and the host sees no exit status (which deploy reports as a lost connection)."""
    marker = f"6{os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"
    conn = open_connection(sshd_device.alias, ssh_config=sshd_device.ssh_config)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(conn.run(["sh", "-c", f"sleep {marker} & sleep {marker}; wait"],
                                    timeout_s=120))
        except BaseException as exc:  # the link drops under it
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    while len(_procs_with(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    sleeps = _procs_with(marker)
    assert sleeps, "the remote command did not start"
    # the sshd process holding this connection: the child of the per-connection monitor,
    # whose title still shows the listener's `-D -e -f CONFIG`
    chain = sleeps[0].parents()
    listener = next(i for i, p in enumerate(chain) if str(sshd_device.dir) in " ".join(
        p.cmdline()))
    assert listener >= 1, [p.cmdline() for p in chain]
    session = chain[listener - 1]
    t0 = time.monotonic()
    session.kill()
    assert _gone(marker, within_s=15), [p.info["cmdline"] for p in _procs_with(marker)]
    took = time.monotonic() - t0
    print(f"\nsshd session killed: the remote command was gone after {took:.2f} s")
    worker.join(timeout=60)
    print(f"the host saw: {outcome!r}")
    assert outcome and (isinstance(outcome[0], Exception) or outcome[0].exit_status == -1)
    conn.close()


def test_stream_reads_time_out(link: Connection) -> None:
    with link as conn:
        stream = conn.open_stream(["sleep", "30"])
        stream.set_timeout(0.5)
        t0 = time.monotonic()
        with pytest.raises(LinkTimeoutError, match="within 0.5 s"):
            stream.readline(1024)
        took = time.monotonic() - t0
        print(f"\n{conn.name}: stream readline(timeout 0.5 s) gave up after {took:.2f} s")
        assert 0.4 < took < 5
        stream.close()


@pytest.fixture()
def frozen_link(sshd_device: SSHDevice, tmp_path: Path) -> Iterator[tuple[SSHConnection,
                                                                          FreezableProxy]]:
    """An SSH connection through a TCP proxy that can stop forwarding (a silent network)."""
    proxy = FreezableProxy(sshd_device.port)
    known = tmp_path / "known_hosts"
    key = " ".join(sshd_device.host_key_pub.read_text().split()[:2])
    known.write_text(f"[127.0.0.1]:{proxy.port} {key}\n")
    conn = SSHConnection(f"root@127.0.0.1:{proxy.port}", identity_file=sshd_device.identity,
                         known_hosts=known, io_timeout_s=1.5)
    try:
        yield conn, proxy
    finally:
        proxy.close()
        conn.close()


def test_sftp_and_exec_waits_are_bounded_on_a_silent_network(
        frozen_link: tuple[SSHConnection, FreezableProxy], tmp_path: Path) -> None:
    conn, proxy = frozen_link
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(3 << 20))
    assert conn.run(["true"]).ok  # connected, SFTP not yet opened
    conn.put_file(blob, str(tmp_path / "first.bin"))  # SFTP open and working
    proxy.freeze()
    timings = {}
    for what, call in (
        ("put_file", lambda: conn.put_file(blob, str(tmp_path / "copy.bin"))),
        ("get_file", lambda: conn.get_file(str(tmp_path / "first.bin"), io.BytesIO())),
        ("home (normalize)", conn.home),
        ("run (exec request)", lambda: conn.run(["true"], timeout_s=2.0)),
        ("stream (exec request)", lambda: conn.open_stream(["cat"])),
    ):
        t0 = time.monotonic()
        with pytest.raises(LinkTimeoutError) as info:
            call()
        timings[what] = time.monotonic() - t0
        assert info.value.hint
    print("\nsilent network, io_timeout_s=1.5: " +
          ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    assert all(t < 8 for t in timings.values()), timings


# ------------------------------------------------------------------ known_hosts


def _host_key(dev: SSHDevice) -> str:
    return " ".join(dev.host_key_pub.read_text().split()[:2])


def _other_key(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def _conn(dev: SSHDevice, known: Path, system: Path, **kw: object) -> SSHConnection:
    return SSHConnection(dev.target, identity_file=dev.identity, known_hosts=known,
                         system_known_hosts=[system], **kw)  # type: ignore[arg-type]


def test_marker_lines_anywhere_do_not_break_connections(sshd_device: SSHDevice,
                                                        tmp_path: Path) -> None:
    name = f"[127.0.0.1]:{sshd_device.port}"
    other = _other_key(tmp_path, "other")
    system = tmp_path / "ssh_known_hosts"
    system.write_text(f"@revoked * {other}\n@cert-authority *.example.org {other}\n")
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority *.lab {other}\n# a comment\n"
                     f"{name} {_host_key(sshd_device)}\n@revoked other.lab {other}\n")
    with _conn(sshd_device, known, system) as conn:
        assert conn.run(["true"]).ok


def test_revoked_key_is_refused_even_with_accept_new(sshd_device: SSHDevice,
                                                     tmp_path: Path) -> None:
    system = tmp_path / "ssh_known_hosts"
    system.write_text(f"@revoked * {_host_key(sshd_device)}\n")
    for known_text in ("", f"[127.0.0.1]:{sshd_device.port} {_host_key(sshd_device)}\n"):
        known = tmp_path / "known_hosts"
        known.write_text(known_text)
        for accept in (False, True):
            with pytest.raises(RevokedHostKeyError, match="@revoked") as info:
                _conn(sshd_device, known, system, accept_new_host_key=accept).run(["true"])
            assert "never accepted" in info.value.hint
            assert known.read_text() == known_text  # nothing added


def test_cert_authority_only_is_a_clear_unknown_key(sshd_device: SSHDevice,
                                                    tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority * {_other_key(tmp_path, 'ca')}\n")
    with pytest.raises(UnknownHostKeyError, match="cert-authority.*certificates"):
        _conn(sshd_device, known, tmp_path / "none").run(["true"])


def test_several_keys_of_one_type_are_all_accepted(sshd_device: SSHDevice,
                                                   tmp_path: Path) -> None:
    name = f"[127.0.0.1]:{sshd_device.port}"
    known = tmp_path / "known_hosts"
    # the board's real key second: a table of one key per type would see a changed key
    known.write_text(f"{name} {_other_key(tmp_path, 'k1')}\n{name} {_host_key(sshd_device)}\n"
                     f"{name} {_other_key(tmp_path, 'k2')}\n")
    with _conn(sshd_device, known, tmp_path / "none") as conn:
        assert conn.run(["true"]).ok
    known.write_text(f"{name} {_other_key(tmp_path, 'k3')}\n")
    with pytest.raises(HostKeyMismatchError, match="HOST KEY CHANGED"):
        _conn(sshd_device, known, tmp_path / "none", accept_new_host_key=True).run(["true"])


def test_added_lines_are_hashed_when_the_file_is(sshd_device: SSHDevice, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    hashed_other = f"{kh.hash_name('other.lab')} {_other_key(tmp_path, 'o')}"
    known.write_text(hashed_other + "\n")
    with _conn(sshd_device, known, tmp_path / "none", accept_new_host_key=True) as conn:
        assert conn.run(["true"]).ok
    lines = known.read_text().splitlines()
    assert lines[0] == hashed_other and len(lines) == 2
    assert lines[1].startswith("|1|") and str(sshd_device.port) not in lines[1]
    entry = kh.parse_lines(lines[1])[0]
    assert entry.matches(f"[127.0.0.1]:{sshd_device.port}")
    # OpenSSH itself finds it
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd_device.port}", "-f",
                            str(known)], capture_output=True, text=True)
    assert found.returncode == 0 and _host_key(sshd_device).split()[1] in found.stdout
    with _conn(sshd_device, known, tmp_path / "none") as conn:  # and so does edgeq, next time
        assert conn.run(["true"]).ok


# ------------------------------------------------------------------ ProxyJump


def _host_block(dev: SSHDevice, alias: str, identity: bool = True) -> str:
    return (f"Host {alias}\n  HostName 127.0.0.1\n  Port {dev.port}\n  User root\n"
            + (f"  IdentityFile {dev.identity}\n" if identity else "")
            + f"  UserKnownHostsFile {dev.known_hosts}\n")


def _depth(conn: SSHConnection) -> int:
    n = 0
    while conn._jump is not None:
        conn, n = conn._jump, n + 1
    return n


def test_proxyjump_with_two_hops(sshd_device: SSHDevice, tmp_path: Path) -> None:
    import paramiko

    config = tmp_path / "ssh_config"
    config.write_text(_host_block(sshd_device, "hop1") + _host_block(sshd_device, "hop2")
                      + _host_block(sshd_device, "board") + "  ProxyJump hop1,hop2\n")
    with SSHConnection("board", ssh_config=config) as conn:
        assert conn.run(["echo", "through"]).stdout == b"through\n"
        assert _depth(conn) == 2 and conn._jump.target.alias == "hop2"
        assert conn._jump._jump.target.alias == "hop1"
        assert isinstance(conn._client.get_transport().sock, paramiko.Channel)
        assert isinstance(conn._jump._client.get_transport().sock, paramiko.Channel)


def test_host_star_proxyjump_bastion(sshd_device: SSHDevice, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(_host_block(sshd_device, "bastion") + _host_block(sshd_device, "board")
                      + "Host *\n  ProxyJump bastion\n")
    with SSHConnection("board", ssh_config=config) as conn:
        assert conn.run(["echo", "ok"]).stdout == b"ok\n"
        assert _depth(conn) == 1 and conn._jump.target.alias == "bastion"
    with SSHConnection("bastion", ssh_config=config) as conn:  # the bastion itself: direct
        assert conn.run(["true"]).ok and _depth(conn) == 0


def test_identity_file_is_used_for_the_jump_host(sshd_device: SSHDevice, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(_host_block(sshd_device, "jump", identity=False)
                      + _host_block(sshd_device, "board", identity=False)
                      + "  ProxyJump jump\n")
    env_home = tmp_path / "home"  # no ~/.ssh keys to fall back on
    env_home.mkdir()
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(env_home)
    try:
        with SSHConnection("board", ssh_config=config,
                           identity_file=sshd_device.identity) as conn:
            assert conn.run(["true"]).ok and _depth(conn) == 1
    finally:
        os.environ["HOME"] = old or "/root"


def test_a_full_device_disk_is_said_alike_over_both(link: Connection, tmp_path: Path) -> None:
    """put_file onto a full disk (a 256 KiB tmpfs of our own; root only) is one clear
    LinkError naming the full disk, over SSH and local alike."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    try:
        with link as conn, pytest.raises(LinkError, match="disk is full") as info:
            conn.put_file(big, str(mnt / "big.bin"))
        assert "free space" in info.value.hint
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
