"""edgeq.host.link: the link to a device, over SSH or on this machine.

    base.py    Connection and Stream (what each call returns and raises), CommandResult,
               quote_argv, resolve_device_dir, and the link's own errors (LinkError and kin)
    ssh.py     SSHConnection: paramiko, ~/.ssh/config, host-key policy, exec, SFTP
    known_hosts.py  OpenSSH's known_hosts format (markers, hashed names, patterns)
    local.py   LocalConnection: `--host local`, subprocesses and file copies
`open_connection(host, ...)` is the one way to get a Connection for a `--host` value.
Imports: standard library, edgeq.host.link.base; ssh/local lazily (paramiko loads only when a
board is really reached).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgeq.host.link.base import (
    BadTargetError,
    CommandResult,
    Connection,
    ConnectionLostError,
    HostKeyMismatchError,
    LinkError,
    LinkTimeoutError,
    ProgressCallback,
    RemoteNotFoundError,
    RevokedHostKeyError,
    SSHAuthError,
    Stream,
    UnknownHostKeyError,
    UnreachableHostError,
    quote_argv,
    resolve_device_dir,
)

__all__ = [
    "LOCAL_HOST", "BadTargetError", "CommandResult", "Connection", "ConnectionLostError",
    "HostKeyMismatchError", "LinkError", "LinkTimeoutError", "ProgressCallback",
    "RemoteNotFoundError", "RevokedHostKeyError", "SSHAuthError", "Stream", "UnknownHostKeyError",
    "UnreachableHostError", "open_connection", "quote_argv", "resolve_device_dir",
]

#: the --host value that means this machine
LOCAL_HOST = "local"


def open_connection(
    host: str,
    *,
    accept_new_host_key: bool = False,
    ssh_config: Optional[Path] = None,
    identity_file: Optional[Path] = None,
    connect_timeout_s: float = 10.0,
    io_timeout_s: Optional[float] = None,
) -> Connection:
    """`local` runs the agent on this machine; anything else is an SSH target (opened lazily).

    `io_timeout_s` bounds each SFTP reply and channel open (default: ssh.DEFAULT_IO_TIMEOUT_S).
    """
    if host == LOCAL_HOST:
        from edgeq.host.link.local import LocalConnection

        return LocalConnection()
    from edgeq.host.link.ssh import SSHConnection

    return SSHConnection(
        host,
        accept_new_host_key=accept_new_host_key,
        ssh_config=ssh_config,
        identity_file=identity_file,
        connect_timeout_s=connect_timeout_s,
        **({} if io_timeout_s is None else {"io_timeout_s": io_timeout_s}),
    )
