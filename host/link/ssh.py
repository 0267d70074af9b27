"""SSH to a board with paramiko: target parsing, ~/.ssh/config, host-key policy, exec, SFTP.

`SSHConnection` implements edgeq.host.link.base.Connection and raises its errors. It opens
lazily (the first call connects), is a context manager, and never disables host-key
checking: an unknown key is refused unless the user asked for `--accept-new-host-key`
(OpenSSH's accept-new: the key is appended to known_hosts), and a changed key is always
refused. known_hosts is read as OpenSSH reads it (edgeq.host.link.known_hosts: @revoked
refuses a key even with --accept-new-host-key, several keys of a type are all accepted,
lines edgeq adds are hashed when the file uses hashed names; the system file is
GlobalKnownHostsFile, default /etc/ssh/ssh_known_hosts). ProxyJump takes several hops
(`a,b`); a jump host whose own ProxyJump names itself (`Host *` + `ProxyJump bastion`) is
reached directly, as OpenSSH does; `--identity-file` is offered to the jump hosts too.
Remote commands are built only with `quote_argv`; passwords are never asked for or taken.
No wait is unbounded: channel opens, exec requests and each SFTP reply are bounded by
`io_timeout_s`; `run` by its `timeout_s`; stream reads by `set_timeout`. `run` starts the
command in a tiny `sh` wrapper that reports its process group, so when the host gives up
(time-out, Ctrl-C) the group is stopped on the device (TERM, then KILL): closing an SSH
channel alone leaves a non-pty command running. When the link itself is lost, the wrapper's
watchdog stops the group on the device once sshd notices (the session process exits).
Imports: standard library, paramiko (at use), edgeq.host.link.{base,known_hosts},
edgeq.device.errors.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import posixpath
import select
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional, Sequence

from edgeq.device.errors import EdgeqError
from edgeq.host.link import known_hosts as kh
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
)

if TYPE_CHECKING:
    import paramiko

logger = logging.getLogger(__name__)

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
DEFAULT_SYSTEM_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"),)
#: bound on each SFTP reply, channel open and exec request
DEFAULT_IO_TIMEOUT_S = 60.0
#: how long stopping a remote process group may take (TERM, wait, KILL)
STOP_TIMEOUT_S = 15.0
_RECV_BYTES = 1 << 16
_CHUNK_BYTES = 1 << 15
# Runs "$@" after reporting its process group on stderr (field 5 of /proc/self/stat; sshd
# made the command a session leader, so the group holds everything the command starts), with
# a watchdog: when the sshd session that started it goes away (the link dropped, sshd was
# killed), the wrapper is re-parented and the watchdog stops the group, as the host would.
# stdin goes through fd 3 (a background job's own stdin is /dev/null); the watchdog polls
# field 4 (ppid) of the wrapper's own /proc entry every WATCHDOG_S seconds.
WATCHDOG_S = 1
_GROUP_WRAPPER = ('read -r _p _c _s pp g _r 2>/dev/null </proc/$$/stat; '
                  'printf "EDGEQ_PGID %s\\n" "$g" >&2; '
                  'exec 3<&0; "$@" <&3 3<&- & c=$!; exec 3<&-; '
                  '( while kill -0 "$c" 2>/dev/null; do '
                  f'sleep {WATCHDOG_S}; read -r _p _c _s now _r 2>/dev/null </proc/$$/stat; '
                  'if [ "$now" != "$pp" ]; then kill -TERM "-$g" 2>/dev/null; exit 0; fi; '
                  'done ) </dev/null >/dev/null 2>&1 & '
                  'wait "$c"')
_PGID_MARK = b"EDGEQ_PGID "
# TERM the group, wait up to ~5 s, then KILL it.
# (no `--`: dash's kill does not take it; a negative pid after the signal is a group)
_STOP_GROUP = ('kill -TERM "-$1" 2>/dev/null || exit 0; n=0; '
               'while kill -0 "-$1" 2>/dev/null; do n=$((n+1)); '
               'if [ $n -gt 50 ]; then kill -KILL "-$1" 2>/dev/null; exit 0; fi; '
               'sleep 0.1 2>/dev/null || sleep 1; done')


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
    global_known_hosts_files: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{user}{host}:{self.port}"


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
    system = options.get("globalknownhostsfile")
    system_files = tuple(os.path.expanduser(p) for p in system.split()) if system else ()
    return SSHTarget(
        alias=host,
        hostname=options.get("hostname", host),
        port=port or int(options.get("port", 22)),
        user=user or options.get("user") or _local_user(),
        identity_files=tuple(os.path.expanduser(p) for p in options.get("identityfile", [])),
        known_hosts_files=known_files,
        proxy_jump=options.get("proxyjump"),
        global_known_hosts_files=system_files,
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


def _make_policy(conn: "SSHConnection", entries: list[kh.Entry]) -> Any:
    import paramiko

    target = conn.target

    class _Policy(paramiko.MissingHostKeyPolicy):
        """Every key is checked here against known_hosts as OpenSSH reads it (paramiko's own
        table is left empty): known -> accept; revoked or changed -> refuse; unknown ->
        refuse, or record it when the user asked for accept-new."""

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            name = kh.host_key_name(target.hostname, target.port)
            fp = fingerprint(key)
            verdict = kh.check(entries, name, key.get_name(), key.asbytes())
            if verdict.status == "known":
                return
            if verdict.status == "revoked":
                where = verdict.revoked_by
                raise RevokedHostKeyError(
                    f"the host key of {name} ({key.get_name()} {fp}) is marked @revoked in "
                    f"{where.path if where else 'known_hosts'}"
                    + (f" line {where.line_no}" if where else ""),
                    hint="a revoked key is never accepted (not even with "
                         "--accept-new-host-key); ask who runs the board for its new key",
                )
            if verdict.status == "changed":
                first = verdict.expected[0]
                raise HostKeyMismatchError(
                    f"HOST KEY CHANGED for {name}: the device offers {fp}, {first.path} "
                    f"line {first.line_no} has {_entry_fingerprint(first)}",
                    hint=(
                        "someone may be intercepting the connection, or the board was "
                        "reinstalled; if you are sure, remove the old key: "
                        f"ssh-keygen -R '{name}'"
                    ),
                )
            if not conn._accept_new:
                ca = (" (known_hosts trusts a @cert-authority for it, but edgeq checks plain "
                      "host keys only, not host certificates)") if verdict.ca_only else ""
                raise UnknownHostKeyError(
                    f"unknown host key for {name} ({key.get_name()} {fp}){ca}",
                    hint=(
                        "check the fingerprint on the device (ssh-keygen -lf "
                        "/etc/ssh/ssh_host_ed25519_key.pub), then rerun with "
                        "--accept-new-host-key"
                    ),
                )
            kh.add_line(conn._known_hosts, name, key.get_name(), key.get_base64())
            logger.warning("added %s key %s for %s to %s", key.get_name(), fp, name,
                           conn._known_hosts)

    return _Policy()


def _entry_fingerprint(entry: kh.Entry) -> str:
    try:
        digest = hashlib.sha256(entry.blob()).digest()
    except ValueError:
        return "?"
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class SSHStream(Stream):
    """stdin/stdout of a remote command over one exec channel."""

    def __init__(self, channel: Any, argv: Sequence[str]) -> None:
        self._channel = channel
        self._argv = tuple(argv)
        self._buffer = b""
        self._timeout_s: Optional[float] = None

    def write(self, data: bytes) -> None:
        try:
            self._channel.sendall(data)
        except (OSError, EOFError) as exc:
            raise ConnectionLostError(
                f"the connection to the device dropped while sending: {exc}",
                hint="check the network and rerun",
            ) from exc

    def set_timeout(self, timeout_s: Optional[float]) -> None:
        self._timeout_s = timeout_s

    def readline(self, limit: int) -> bytes:
        deadline = None if self._timeout_s is None else time.monotonic() + self._timeout_s
        while b"\n" not in self._buffer:
            if len(self._buffer) > limit:
                raise LinkError(
                    f"a line from {self._argv[0]} is longer than {limit} bytes",
                    hint="the device answered with more than the protocol allows; redeploy",
                )
            try:
                if deadline is not None:
                    self._channel.settimeout(max(0.0, deadline - time.monotonic()))
                chunk = self._channel.recv(_RECV_BYTES)
            except socket.timeout as exc:
                raise LinkTimeoutError(
                    f"the device did not answer within {self._timeout_s:g} s",
                    hint="is the board overloaded, or its agent stuck?",
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
        try:
            while self._channel.recv_stderr_ready():
                data += self._channel.recv_stderr(_RECV_BYTES)
        except Exception:  # for messages only
            pass
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
        system_known_hosts: Optional[Sequence[Path]] = None,
        connect_timeout_s: float = 10.0,
        io_timeout_s: float = DEFAULT_IO_TIMEOUT_S,
        proxy_jump: Optional[str] = None,
        _jump_path: tuple[str, ...] = (),
    ) -> None:
        self.target = resolve_target(host, ssh_config)
        if proxy_jump is not None:  # a hop of a chain: the chain says how to reach it
            self.target = replace(self.target, proxy_jump=proxy_jump)
        self._identity_file: Optional[Path] = None
        if identity_file is not None:
            if not identity_file.expanduser().is_file():
                raise LinkError(
                    f"identity file {identity_file} does not exist", hint="check --identity-file"
                )
            self._identity_file = identity_file.expanduser()
            self.target = replace(self.target, identity_files=(str(self._identity_file),))
        self.name = self.target.display
        self._ssh_config = ssh_config
        self._accept_new = accept_new_host_key
        self._explicit_known_hosts = known_hosts
        self._known_hosts = (
            known_hosts.expanduser()
            if known_hosts is not None
            else Path(self.target.known_hosts_files[0])
            if self.target.known_hosts_files
            else DEFAULT_KNOWN_HOSTS.expanduser()
        )
        self._system_known_hosts = (
            tuple(system_known_hosts) if system_known_hosts is not None
            else tuple(Path(p) for p in self.target.global_known_hosts_files)
            or DEFAULT_SYSTEM_KNOWN_HOSTS
        )
        self._timeout_s = connect_timeout_s
        self._io_timeout_s = io_timeout_s
        self._jump_path = _jump_path
        self._client: Any = None
        self._jump: Optional[SSHConnection] = None
        self._sftp: Any = None
        self._home: Optional[str] = None

    # -- connecting ---------------------------------------------------------------------------

    def known_hosts_entries(self) -> list[kh.Entry]:
        """Every entry of the system and user known_hosts files this connection reads."""
        return kh.load([*self._system_known_hosts, self._known_hosts,
                        *(Path(p) for p in self.target.known_hosts_files[1:])])

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        import paramiko

        target = self.target
        entries = self.known_hosts_entries()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_make_policy(self, entries))
        # offer only host key types known_hosts lists for this host, when it lists any
        # (paramiko would otherwise pick its own first choice, and a known host would look
        # unknown); with none listed, any type may be accepted (or refused) by the policy
        name = kh.host_key_name(target.hostname, target.port)
        known_types = kh.known_key_types(entries, name)
        disabled = {}
        if known_types:
            offered = [t for t in paramiko.Transport._preferred_keys
                       if kh.base_key_type(t) not in known_types]
            disabled = {"keys": offered}
        sock = None
        jump = (target.proxy_jump or "").strip()
        if jump and jump.lower() != "none":
            sock = self._open_jump_channel(jump)
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
                channel_timeout=self._io_timeout_s,
                sock=sock,
                disabled_algorithms=disabled or None,
            )
        except EdgeqError:
            client.close()
            raise
        except BaseException as exc:
            client.close()
            raise self._map_connect_error(exc, known_types) from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._client = client
        return client

    def _open_jump_channel(self, jump_spec: str) -> Any:
        """A direct-tcpip channel to the target through the last hop of `jump_spec` (`a,b`:
        a, then b through a). A hop whose own ProxyJump names itself is reached directly."""
        hops = [h.strip() for h in jump_spec.split(",") if h.strip()]
        last, before = hops[-1], ",".join(hops[:-1])
        if last in self._jump_path or last == self.target.alias:
            # `Host *` + `ProxyJump bastion`: bastion's own lookup names bastion again
            if last == self.target.alias and not before:
                return None
            raise BadTargetError(
                f"ProxyJump loops: {' -> '.join([*self._jump_path, self.target.alias, last])}",
                hint="check ProxyJump in your ssh config",
            )
        self._jump = SSHConnection(
            last,
            accept_new_host_key=self._accept_new,
            ssh_config=self._ssh_config,
            known_hosts=self._explicit_known_hosts,
            system_known_hosts=self._system_known_hosts,
            connect_timeout_s=self._timeout_s,
            io_timeout_s=self._io_timeout_s,
            proxy_jump=before or None,
            _jump_path=(*self._jump_path, self.target.alias),
        )
        if self._identity_file is not None:  # --identity-file is offered to the hops too
            own = self._jump.target.identity_files
            self._jump.target = replace(
                self._jump.target,
                identity_files=(*own, *(() if str(self._identity_file) in own
                                        else (str(self._identity_file),))))
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
                f"jump host {last} cannot reach {self.target.display}: {exc}",
                hint="check ProxyJump and the board's address as the jump host sees it",
            ) from exc

    def _map_connect_error(self, exc: BaseException, known_types: set[str]) -> EdgeqError:
        import paramiko

        where = self.target.display
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
        if known_types and isinstance(exc, paramiko.SSHException) \
                and "host key" in str(exc).lower():
            name = kh.host_key_name(self.target.hostname, self.target.port)
            return HostKeyMismatchError(
                f"{where} offers none of the host key types known_hosts lists for {name} "
                f"({', '.join(sorted(known_types))})",
                hint="the board's keys changed; if you are sure, remove the old ones: "
                     f"ssh-keygen -R '{name}'",
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

    def _timed_out(self, what: str) -> LinkTimeoutError:
        return LinkTimeoutError(
            f"{self.name} did not answer within {self._io_timeout_s:g} s during {what}",
            hint="check the network and the board (overloaded? sshd stuck?), then rerun",
        )

    def _transport(self) -> Any:
        transport = self._connect().get_transport()
        if transport is None or not transport.is_active():
            raise self._lost("the session", EOFError("transport closed"))
        return transport

    def _bounded(self, channel: Any, what: str, call: Callable[[], Any]) -> Any:
        """`call()` (a channel request paramiko waits for without a limit), given up after
        io_timeout_s: the channel is then closed, which releases the wait."""
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            channel.event.set()  # wakes paramiko's wait
            try:
                channel.close()
            except Exception:  # best effort
                pass

        timer = threading.Timer(self._io_timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            return call()
        except EdgeqError:
            raise
        except Exception as exc:
            if expired.is_set():
                raise self._timed_out(what) from exc
            raise
        finally:
            timer.cancel()

    def _open_session(self, what: str) -> Any:
        """A new session channel; LinkTimeoutError when the device does not open it in time."""
        try:
            return self._transport().open_session(timeout=self._io_timeout_s)
        except EdgeqError:
            raise
        except Exception as exc:
            if "timeout" in str(exc).lower():
                raise self._timed_out(what) from exc
            raise

    # -- Connection interface ----------------------------------------------------------------

    def _open_exec(self, argv: Sequence[str], env: Optional[dict[str, str]],
                   wrap: bool = False) -> Any:
        words = [str(a) for a in argv]
        if env:
            words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
        if wrap:
            words = ["sh", "-c", _GROUP_WRAPPER, "edgeq", *words]
        command = quote_argv(words)
        logger.debug("ssh %s: %s", self.name, command)
        try:
            channel = self._open_session(f"starting {argv[0]}")
            self._bounded(channel, f"starting {argv[0]}", lambda: channel.exec_command(command))
        except EdgeqError:
            raise
        except Exception as exc:
            raise self._lost(f"starting {argv[0]}", exc) from exc
        return channel

    def _stop_group(self, pgid: Optional[int], what: str) -> None:
        """TERM (then KILL) the remote process group `pgid`; best effort, bounded."""
        if pgid is None or pgid <= 1:  # never `kill -- -1`
            return
        try:
            channel = self._open_exec(["sh", "-c", _STOP_GROUP, "edgeq-stop", str(pgid)], None)
            channel.shutdown_write()
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while not channel.exit_status_ready() and time.monotonic() < deadline:
                select.select([channel], [], [], 0.2)
                while channel.recv_ready():
                    channel.recv(_RECV_BYTES)
            channel.close()
            logger.info("stopped %s on %s (process group %d)", what, self.name, pgid)
        except BaseException as exc:  # the link may be gone: nothing more can be done
            logger.warning("could not stop %s on %s (process group %s): %s",
                           what, self.name, pgid, exc)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        timeout_s: Optional[float] = None,
        env: Optional[dict[str, str]] = None,
    ) -> CommandResult:
        channel = self._open_exec(argv, env, wrap=True)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stdout, stderr = bytearray(), bytearray()
        pgid: Optional[int] = None
        marked = False  # the wrapper's first stderr line has been taken off
        finished = False
        try:
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            while True:
                while channel.recv_ready():
                    stdout += channel.recv(_RECV_BYTES)
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(_RECV_BYTES)
                if not marked and (b"\n" in stderr or not stderr.startswith(
                        _PGID_MARK[:len(stderr)]) or channel.exit_status_ready()):
                    marked = True
                    pgid, stderr = _take_pgid(stderr)
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
                        f"{argv[0]} on {self.name} did not finish within {timeout_s:g} s "
                        "(stopped on the device)",
                        hint="the board may be slow (emulated?) or stuck; raise the timeout",
                    )
                select.select([channel], [], [], 0.2)
            status = channel.recv_exit_status()
            finished = True
        except EdgeqError:
            raise
        except Exception as exc:
            raise self._lost(f"running {argv[0]}", exc) from exc
        finally:
            channel.close()
            if not finished:  # time-out, Ctrl-C, a lost link: stop it on the device too
                self._stop_group(pgid, argv[0])
        if not marked:
            pgid, stderr = _take_pgid(stderr)
        return CommandResult(tuple(str(a) for a in argv), status, bytes(stdout), bytes(stderr))

    def open_stream(self, argv: Sequence[str]) -> SSHStream:
        return SSHStream(self._open_exec(argv, None), argv)

    def _sftp_client(self) -> Any:
        if self._sftp is None:
            import paramiko

            try:
                channel = self._open_session("opening SFTP")
                channel.settimeout(self._io_timeout_s)
                self._bounded(channel, "opening SFTP",
                              lambda: channel.invoke_subsystem("sftp"))
                self._sftp = paramiko.SFTPClient(channel)
            except EdgeqError:
                raise
            except socket.timeout as exc:
                raise self._timed_out("opening SFTP") from exc
            except Exception as exc:
                raise LinkError(
                    f"cannot open SFTP on {self.name}: {exc}",
                    hint="enable the sftp subsystem in the board's sshd_config",
                ) from exc
        return self._sftp

    def _drop_sftp(self) -> None:
        """Forget an SFTP session that timed out or broke (its replies are out of step)."""
        sftp, self._sftp = self._sftp, None
        if sftp is not None:
            try:
                sftp.get_channel().close()
            except Exception:  # best effort
                pass

    def home(self) -> str:
        if self._home is None:
            try:
                self._home = self._sftp_client().normalize(".")
            except EdgeqError:
                raise
            except socket.timeout as exc:
                self._drop_sftp()
                raise self._timed_out("finding the home directory") from exc
            except Exception as exc:
                self._drop_sftp()
                raise self._lost("finding the home directory", exc) from exc
        return self._home

    def _free_bytes(self, remote_dir: str) -> int:
        """Bytes free for this user in `remote_dir`'s file system (`df -Pk`); a large number
        when that cannot be told."""
        try:
            res = self.run(["df", "-Pk", remote_dir], timeout_s=30)
            return int(res.stdout.decode().splitlines()[1].split()[3]) * 1024
        except (EdgeqError, IndexError, ValueError):
            return 1 << 62

    def put_file(
        self, local_path: Path, remote_path: str, *, progress: Optional[ProgressCallback] = None
    ) -> None:
        sftp = self._sftp_client()
        try:
            total = os.path.getsize(local_path)
            done = 0
            with open(local_path, "rb") as src:
                remote = sftp.open(remote_path, "wb")
                remote.set_pipelined(True)
                if progress is not None:
                    progress(0, total)
                while True:
                    chunk = src.read(_CHUNK_BYTES)
                    if not chunk:
                        break
                    remote.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                remote.close()  # waits for every write's acknowledgement
            size = sftp.stat(remote_path).st_size
            if size != total:  # OpenSSH's sftp-server can drop pipelined writes on ENOSPC
                if self._free_bytes(posixpath.dirname(remote_path)) < total - size:
                    raise LinkError(f"the device's disk is full writing {remote_path}",
                                    hint="free space on the board and rerun")
                raise LinkError(f"{remote_path} on {self.name} has {size} bytes, not {total}",
                                hint="the device's disk may be full; free space and rerun")
        except EdgeqError:
            raise
        except socket.timeout as exc:
            self._drop_sftp()
            raise self._timed_out(f"sending {local_path.name}") from exc
        except FileNotFoundError as exc:
            if not os.path.isfile(local_path):
                raise
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
            self._drop_sftp()
            raise self._lost(f"sending {local_path.name}", exc) from exc
        except Exception as exc:
            self._drop_sftp()
            raise self._lost(f"sending {local_path.name}", exc) from exc

    def get_file(self, remote_path: str, local_file: BinaryIO) -> None:
        sftp = self._sftp_client()
        try:
            with sftp.open(remote_path, "rb") as remote:
                remote.prefetch()
                while True:
                    chunk = remote.read(_CHUNK_BYTES)
                    if not chunk:
                        break
                    local_file.write(chunk)
        except socket.timeout as exc:
            self._drop_sftp()
            raise self._timed_out(f"fetching {remote_path}") from exc
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
            self._drop_sftp()
            raise self._lost(f"fetching {remote_path}", exc) from exc

    def close(self) -> None:
        for closer in (self._sftp, self._client, self._jump):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # closing is best effort
                    logger.debug("close failed", exc_info=True)
        self._sftp = self._client = self._jump = None


def _take_pgid(stderr: bytearray) -> tuple[Optional[int], bytearray]:
    """The process group the run wrapper reported, and stderr without that line."""
    if not stderr.startswith(_PGID_MARK):
        return None, stderr
    line, _, rest = bytes(stderr).partition(b"\n")
    text = line[len(_PGID_MARK):].strip()
    pgid = int(text) if text.isdigit() else None
    return pgid, bytearray(rest)
