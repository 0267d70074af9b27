"""What the sshd fixture hands to tests (importable by test modules: `from sshd_helpers import ...`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SSHDevice:
    """How to reach the test sshd."""

    alias: str
    port: int
    user: str
    dir: Path
    ssh_config: Path
    known_hosts: Path
    identity: Path
    host_key_pub: Path

    @property
    def target(self) -> str:
        """user@host:port form (bypasses the ssh_config alias)."""
        return f"{self.user}@127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
