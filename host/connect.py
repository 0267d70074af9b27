"""One way to get a Connection for a `--host` value: "local" or an SSH target.

Imports: standard library; edgeq.host.local and edgeq.host.ssh lazily (paramiko loads only
when a board is really reached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgeq.host.transport import Connection

LOCAL_HOST = "local"


def open_connection(
    host: str,
    *,
    accept_new_host_key: bool = False,
    ssh_config: Optional[Path] = None,
    identity_file: Optional[Path] = None,
    connect_timeout_s: float = 10.0,
) -> Connection:
    """`local` runs the agent on this machine; anything else is an SSH target (opened lazily)."""
    if host == LOCAL_HOST:
        from edgeq.host.local import LocalConnection

        return LocalConnection()
    from edgeq.host.ssh import SSHConnection

    return SSHConnection(
        host,
        accept_new_host_key=accept_new_host_key,
        ssh_config=ssh_config,
        identity_file=identity_file,
        connect_timeout_s=connect_timeout_s,
    )
