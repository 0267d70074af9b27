"""SSH to a board with paramiko: target parsing, ~/.ssh/config, host-key policy, exec, SFTP.

`SSHConnection` implements edgeq.host.link.base.Connection and raises its errors. It opens
lazily (the first call connects), is a context manager, and never disables host-key
checking: an unknown key is refused unless the user asked for `--accept-new-host-key`
(OpenSSH's accept-new: the key is appended to known_hosts), and a changed key is always
refused. Remote commands are built only with `quote_argv`; passwords are never asked for
or taken.
Imports: standard library, paramiko (at use), edgeq.host.link.base, edgeq.device.errors.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import select
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Optional, Sequence

from edgeq.device.errors import EdgeqError
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
    SSHAuthError,
    Stream,
    UnknownHostKeyError,
    UnreachableHostError,
    quote_argv,
)

if TYPE_CHECKING:
    import paramiko

logger = logging.getLogger(__name__)

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
_RECV_BYTES = 1 << 16


@dataclass(frozen=True)
class SSHTarget:
    """Where to connect, after ~/.ssh/config has been applied."""

    alias: str
    hostname: str
    port: int = 22
    user: Optional[str] = None
    identity_files: tuple[str, ...] = ()
    known_hosts_files: tuple[str, ...] = ()
    proxy_jump: Optional[str] = None

    @property
    def display(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.hostname}:{self.port}"


def parse_target(spec: str) -> tuple[Optional[str], str, Optional[int]]:
    """Split `host`, `user@host`, `user@host:port`, `[v6addr]:port` into (user, host, port)."""
    text = spec.strip()
    if not text or any(ch.isspace() for ch in text):
        raise BadTargetError(
            f"invalid --host {spec!r}", hint="use host, user@host, user@host:port or an ssh alias"
        )
    user: Optional[str] = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise BadTargetError(f"invalid --host {spec!r}: empty user name", hint="use user@host")
    port: Optional[int] = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadTargetError(f"invalid --host {spec!r}", hint="IPv6 form is [addr]:port")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:  # a bare IPv6 address or a plain name
        host, port_text = text, ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BadTargetError(f"invalid port in --host {spec!r}", hint="a port is 1-65535")
        port = int(port_text)
    if not host:
        raise BadTargetError(f"invalid --host {spec!r}: no host name", hint="e.g. pi@pi.local")
    return user, host, port


def resolve_target(spec: str, ssh_config: Optional[Path] = None) -> SSHTarget:
    """Apply ~/.ssh/config (HostName, User, Port, IdentityFile, UserKnownHostsFile, ProxyJump)."""
    import paramiko

    user, host, port = parse_target(spec)
    config_path = (ssh_config or DEFAULT_SSH_CONFIG).expanduser()
    options: dict[str, Any] = {"hostname": host}
    if config_path.is_file():
        try:
            options = paramiko.SSHConfig.from_path(str(config_path)).lookup(host)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise LinkError(
                f"cannot read ssh config {config_path}: {exc}",
                hint="fix the file or pass --ssh-config",
            ) from exc
    elif ssh_config is not None:
        raise LinkError(f"ssh config {config_path} does not exist", hint="check --ssh-config")
    known = options.get("userknownhostsfile")
    known_files = tuple(os.path.expanduser(p) for p in known.split()) if known else ()
    return SSHTarget(
        alias=host,
        hostname=options.get("hostname", host),
        port=port or int(options.get("port", 22)),
        user=user or options.get("user") or _local_user(),
        identity_files=tuple(os.path.expanduser(p) for p in options.get("identityfile", [])),
        known_hosts_files=known_files,
        proxy_jump=options.get("proxyjump"),
    )


def _local_user() -> Optional[str]:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no user name known: let the server decide
        return None


def fingerprint(key: "paramiko.PKey") -> str:
    """OpenSSH's SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _known_hosts_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def _make_policy(accept_new: bool, known_hosts_path: Path, target: SSHTarget) -> Any:
    import paramiko

    class _Policy(paramiko.MissingHostKeyPolicy):
        """Refuse unknown keys, or append them to known_hosts when asked (accept-new)."""

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            name = _known_hosts_name(target.hostname, target.port)
            fp = fingerprint(key)
            if not accept_new:
                raise UnknownHostKeyError(
                    f"unknown host key for {name} ({key.get_name()} {fp})",
                    hint=(
                        "check the fingerprint on the device (ssh-keygen -lf "
                        "/etc/ssh/ssh_host_ed25519_key.pub), then rerun with --accept-new-host-key"
                    ),
                )
            known_hosts_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            line = f"{name} {key.get_name()} {key.get_base64()}\n"
            fd = os.open(known_hosts_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            client.get_host_keys().add(name, key.get_name(), key)
            logger.warning(
                "added %s key %s for %s to %s", key.get_name(), fp, name, known_hosts_path
            )

    return _Policy()


class SSHStream(Stream):
    """stdin/stdout of a remote command over one exec channel."""

    def __init__(self, channel: Any, argv: Sequence[str]) -> None:
        self._channel = channel
        self._argv = tuple(argv)
        self._buffer = b""

    def write(self, data: bytes) -> None:
        try:
            self._channel.sendall(data)
        except (OSError, EOFError) as exc:
            raise ConnectionLostError(
                f"the connection to the device dropped while sending: {exc}",
                hint="check the network and rerun",
            ) from exc

    def readline(self, limit: int) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > limit:
                raise LinkError(
                    f"a line from {self._argv[0]} is longer than {limit} bytes",
                    hint="the device answered with more than the protocol allows; redeploy",
                )
            try:
                chunk = self._channel.recv(_RECV_BYTES)
            except socket.timeout as exc:
                raise LinkTimeoutError(
                    "the device did not answer in time", hint="is the board overloaded?"
                ) from exc
            except OSError as exc:
                raise ConnectionLostError(
                    f"the connection to the device dropped: {exc}",
                    hint="check the network and rerun",
                ) from exc
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        if len(line) > limit:
            raise LinkError(
                f"a line from {self._argv[0]} is longer than {limit} bytes",
                hint="the device answered with more than the protocol allows; redeploy",
            )
        return line + b"\n"

    def stderr_text(self) -> str:
        """What the remote command wrote to stderr so far."""
        data = b""
        while self._channel.recv_stderr_ready():
            data += self._channel.recv_stderr(_RECV_BYTES)
        return data.decode("utf-8", "replace").strip()

    def close(self) -> None:
        try:
            self._channel.close()
        except Exception:  # closing is best effort
            logger.debug("closing channel failed", exc_info=True)


class SSHConnection(Connection):
    """A board reached over SSH; connects on first use."""

    def __init__(
        self,
        host: str,
        *,
        accept_new_host_key: bool = False,
        ssh_config: Optional[Path] = None,
        identity_file: Optional[Path] = None,
        known_hosts: Optional[Path] = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.target = resolve_target(host, ssh_config)
        if identity_file is not None:
            if not identity_file.expanduser().is_file():
                raise LinkError(
                    f"identity file {identity_file} does not exist", hint="check --identity-file"
                )
            self.target = replace(self.target, identity_files=(str(identity_file.expanduser()),))
        self.name = self.target.display
        self._ssh_config = ssh_config
        self._accept_new = accept_new_host_key
        self._known_hosts = (
            known_hosts.expanduser()
            if known_hosts is not None
            else Path(self.target.known_hosts_files[0])
            if self.target.known_hosts_files
            else DEFAULT_KNOWN_HOSTS.expanduser()
        )
        self._timeout_s = connect_timeout_s
        self._client: Any = None
        self._jump: Optional[SSHConnection] = None
        self._sftp: Any = None
        self._home: Optional[str] = None

    # -- connecting ---------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        import paramiko

        target = self.target
        client = paramiko.SSHClient()
        for path in (
            Path("/etc/ssh/ssh_known_hosts"),
            self._known_hosts,
            *(Path(p) for p in target.known_hosts_files[1:]),
        ):
            if path.is_file():
                try:
                    client.load_host_keys(str(path))
                except (OSError, paramiko.SSHException, ValueError) as exc:
                    raise LinkError(
                        f"cannot read {path}: {exc}", hint="fix or move the file"
                    ) from exc
        client.set_missing_host_key_policy(
            _make_policy(self._accept_new, self._known_hosts, target)
        )
        sock = None
        if target.proxy_jump and target.proxy_jump.lower() != "none":
            sock = self._open_jump_channel(target.proxy_jump.split(",")[0])
        logger.info("connecting to %s", target.display)
        try:
            client.connect(
                target.hostname,
                port=target.port,
                username=target.user,
                key_filename=list(target.identity_files) or None,
                allow_agent=True,
                look_for_keys=not target.identity_files,
                timeout=self._timeout_s,
                banner_timeout=self._timeout_s,
                auth_timeout=self._timeout_s,
                sock=sock,
            )
        except EdgeqError:
            client.close()
            raise
        except BaseException as exc:
            client.close()
            raise self._map_connect_error(exc) from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._client = client
        return client

    def _open_jump_channel(self, jump_spec: str) -> Any:
        self._jump = SSHConnection(
            jump_spec,
            accept_new_host_key=self._accept_new,
            ssh_config=self._ssh_config,
            known_hosts=self._known_hosts,
            connect_timeout_s=self._timeout_s,
        )
        transport = self._jump._connect().get_transport()
        try:
            return transport.open_channel(
                "direct-tcpip",
                (self.target.hostname, self.target.port),
                ("127.0.0.1", 0),
                timeout=self._timeout_s,
            )
        except Exception as exc:
            raise UnreachableHostError(
                f"jump host {jump_spec} cannot reach {self.target.display}: {exc}",
                hint="check ProxyJump and the board's address as the jump host sees it",
            ) from exc

    def _map_connect_error(self, exc: BaseException) -> EdgeqError:
        import paramiko

        where = self.target.display
        if isinstance(exc, paramiko.BadHostKeyException):
            name = _known_hosts_name(self.target.hostname, self.target.port)
            return HostKeyMismatchError(
                f"HOST KEY CHANGED for {name}: the device offers {fingerprint(exc.key)}, "
                f"{self._known_hosts} has {fingerprint(exc.expected_key)}",
                hint=(
                    "someone may be intercepting the connection, or the board was reinstalled; "
                    f"if you are sure, remove the old key: ssh-keygen -R '{name}'"
                ),
            )
        if isinstance(exc, paramiko.PasswordRequiredException):
            return SSHAuthError(
                f"the private key for {where} is protected by a passphrase",
                hint="add it to your ssh-agent (ssh-add KEY); edgeq never asks for passwords",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return SSHAuthError(
                f"authentication failed for {where}",
                hint="install your public key on the device (ssh-copy-id) or pass --identity-file",
            )
        if isinstance(exc, socket.gaierror):
            return UnreachableHostError(
                f"cannot resolve host {self.target.hostname!r}",
                hint="check the name (is the board on the network? try its IP address)",
            )
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return UnreachableHostError(
                f"cannot connect to {where}: connection refused",
                hint="is the board on and sshd running? check the address and port",
            )
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return UnreachableHostError(
                f"timed out connecting to {where} after {self._timeout_s:g} s",
                hint="check that the board is on the network and reachable",
            )
        if isinstance(exc, OSError):
            return UnreachableHostError(
                f"cannot connect to {where}: {exc.strerror or exc}",
                hint="check the address, the port and the network",
            )
        if isinstance(exc, (paramiko.SSHException, EOFError)):
            return LinkError(f"SSH to {where} failed: {exc}", hint="rerun with --debug for details")
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        return LinkError(
            f"SSH to {where} failed: {type(exc).__name__}: {exc}",
            hint="rerun with --debug for details",
        )

    def _lost(self, what: str, exc: BaseException) -> ConnectionLostError:
        return ConnectionLostError(
            f"the connection to {self.name} dropped during {what}: {exc or type(exc).__name__}",
            hint="check the network and rerun; what was deployed before is still in place",
        )

    def _transport(self) -> Any:
        transport = self._connect().get_transport()
        if transport is None or not transport.is_active():
            raise self._lost("the session", EOFError("transport closed"))
        return transport

    # -- Connection interface ----------------------------------------------------------------

    def _open_exec(self, argv: Sequence[str], env: Optional[dict[str, str]]) -> Any:
        words = [str(a) for a in argv]
        if env:
            words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
        command = quote_argv(words)
        logger.debug("ssh %s: %s", self.name, command)
        try:
            channel = self._transport().open_session(timeout=self._timeout_s)
            channel.exec_command(command)
        except EdgeqError:
            raise
        except Exception as exc:
            raise self._lost(f"starting {words[0]}", exc) from exc
        return channel

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        timeout_s: Optional[float] = None,
        env: Optional[dict[str, str]] = None,
    ) -> CommandResult:
        channel = self._open_exec(argv, env)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stdout, stderr = bytearray(), bytearray()
        try:
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            while True:
                while channel.recv_ready():
                    stdout += channel.recv(_RECV_BYTES)
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(_RECV_BYTES)
                if (
                    channel.exit_status_ready()
                    # sshd may send the exit status before the last output: wait for EOF too
                    and (channel.eof_received or channel.closed)
                    and not channel.recv_ready()
                    and not channel.recv_stderr_ready()
                ):
                    break
                if channel.closed and not channel.exit_status_ready():
                    raise EOFError("channel closed without an exit status")
                if deadline is not None and time.monotonic() > deadline:
                    raise LinkTimeoutError(
                        f"{argv[0]} on {self.name} did not finish within {timeout_s:g} s",
                        hint="the board may be slow (emulated?) or stuck; raise the timeout",
                    )
                select.select([channel], [], [], 0.2)
            status = channel.recv_exit_status()
        except EdgeqError:
            raise
        except Exception as exc:
            raise self._lost(f"running {argv[0]}", exc) from exc
        finally:
            channel.close()
        return CommandResult(tuple(str(a) for a in argv), status, bytes(stdout), bytes(stderr))

    def open_stream(self, argv: Sequence[str]) -> SSHStream:
        return SSHStream(self._open_exec(argv, None), argv)

    def _sftp_client(self) -> Any:
        if self._sftp is None:
            try:
                self._sftp = self._connect().open_sftp()
            except EdgeqError:
                raise
            except Exception as exc:
                raise LinkError(
                    f"cannot open SFTP on {self.name}: {exc}",
                    hint="enable the sftp subsystem in the board's sshd_config",
                ) from exc
        return self._sftp

    def home(self) -> str:
        if self._home is None:
            try:
                self._home = self._sftp_client().normalize(".")
            except EdgeqError:
                raise
            except Exception as exc:
                raise self._lost("finding the home directory", exc) from exc
        return self._home

    def put_file(
        self, local_path: Path, remote_path: str, *, progress: Optional[ProgressCallback] = None
    ) -> None:
        sftp = self._sftp_client()
        try:
            sftp.put(str(local_path), remote_path, callback=progress, confirm=True)
        except FileNotFoundError as exc:
            raise RemoteNotFoundError(
                f"cannot write {remote_path} on {self.name}: no such directory",
                hint="redeploy: the device directory is incomplete",
            ) from exc
        except PermissionError as exc:
            raise LinkError(
                f"permission denied writing {remote_path} on {self.name}",
                hint="check --device-dir and its owner",
            ) from exc
        except OSError as exc:
            if "No space" in str(exc) or getattr(exc, "errno", None) == 28:
                raise LinkError(
                    f"the device's disk is full writing {remote_path}",
                    hint="free space on the board and rerun",
                ) from exc
            raise self._lost(f"sending {local_path.name}", exc) from exc
        except Exception as exc:
            raise self._lost(f"sending {local_path.name}", exc) from exc

    def get_file(self, remote_path: str, local_file: BinaryIO) -> None:
        try:
            self._sftp_client().getfo(remote_path, local_file)
        except FileNotFoundError as exc:
            raise RemoteNotFoundError(
                f"{remote_path} does not exist on {self.name}", hint="deploy first"
            ) from exc
        except PermissionError as exc:
            raise LinkError(
                f"permission denied reading {remote_path} on {self.name}",
                hint="check --device-dir and its owner",
            ) from exc
        except Exception as exc:
            raise self._lost(f"fetching {remote_path}", exc) from exc

    def close(self) -> None:
        for closer in (self._sftp, self._client, self._jump):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # closing is best effort
                    logger.debug("close failed", exc_info=True)
        self._sftp = self._client = self._jump = None
