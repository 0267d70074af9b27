"""What the sshd fixture hands to tests (import in test modules: `from sshd_helpers import ...`)."""

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


class FreezableProxy:
    """A TCP forwarder on loopback in front of a real server; `freeze()` stops moving bytes
    both ways while keeping the sockets open (a network that silently drops everything)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        import time

        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            while self.frozen.is_set():  # hold the bytes: nothing gets through
                if self.closed.is_set():
                    return
                time.sleep(0.05)
            try:
                dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closed.set()
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
