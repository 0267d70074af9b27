"""A real OpenSSH server on loopback, with throwaway keys, for the SSH tests.

The fixture starts `/usr/sbin/sshd -D` on a free 127.0.0.1 port with its own host key,
its own authorized_keys, an ssh_config with the alias `edgeq-test` and a known_hosts file
that already trusts the host key. Nothing touches the real ~/.ssh or ~/.edgeq: devices
live in tmp directories passed as `--device-dir`. Needs root (sshd privilege separation)
and Debian's openssh-server (installed by .ci/run).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from sshd_helpers import SSHDevice, free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeq-test", "-f", str(path)],
        check=True,
    )


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("sshd did not answer")


@pytest.fixture(scope="session")
def sshd_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHDevice]:
    """A running sshd on loopback that accepts a throwaway key for the current user."""
    if not os.path.exists(SSHD):
        pytest.fail("sshd is missing: apt-get install openssh-server (.ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("the test sshd needs root (privilege separation); run the suite as root")
    base = tmp_path_factory.mktemp("sshd")
    host_key, client_key = base / "ssh_host_ed25519_key", base / "id_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    (base / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    user = "root"
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {base}/sshd.pid",
                f"AuthorizedKeysFile {base}/authorized_keys",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp internal-sftp",
                "MaxSessions 50",
                "MaxStartups 50",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    log = open(base / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    try:
        _wait_for_port(port, proc)
        known_hosts = base / "known_hosts"
        host_pub = Path(f"{host_key}.pub")
        key_type, key_b64 = host_pub.read_text().split()[:2]
        known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_b64}\n")
        ssh_config = base / "ssh_config"
        ssh_config.write_text(
            "Host edgeq-test\n"
            "  HostName 127.0.0.1\n"
            f"  Port {port}\n"
            f"  User {user}\n"
            f"  IdentityFile {client_key}\n"
            f"  UserKnownHostsFile {known_hosts}\n"
        )
        yield SSHDevice(
            "edgeq-test", port, user, base, ssh_config, known_hosts, client_key, host_pub
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
