"""The agent daemon: the device store served on a Unix socket (never a TCP port).

`serve()` binds $EDGEQ_HOME/agent.sock (mode 0600; a stale socket left by a crash is
replaced, a live one is an error), writes $EDGEQ_HOME/agent.pid atomically, and answers the
line-delimited JSON protocol of edgeq.device.protocol, one thread per connection. Bench
and evaluate requests run one at a time (a lock: two measurements never overlap), each in a
fresh worker process (edgeq.device.worker), so a model that crashes or hangs the interpreter
only costs that request an error. SIGTERM/SIGINT shut down cleanly: the running worker is
killed (its client is told the daemon stopped, not that the model crashed), the socket and
pidfile removed.
Limits: at most `max_clients` connections at once (the next one gets an AgentConnectionError
and is closed); a connection must say hello within `hello_timeout_s` seconds; a client that
disconnects while its measurement runs or waits gets its worker killed and its place in the
queue dropped. One daemon per home: `run_server` holds an fcntl lock on agent.lock for its
whole life, so two `serve` started at once leave one daemon, never an orphan.
`--detach` double-forks and logs to $EDGEQ_HOME/logs/agent.log; under systemd it runs in the
foreground (edgeq-agent.service).
`bridge()` relays stdin/stdout to the socket, which is how the host reaches the daemon over
SSH; `stop()` and `format_status()` are the other command-line helpers (the `status`
command asks through edgeq.device.client.query_status).
Imports: standard library and edgeq.device, but not its client (errors come back from the
worker through edgeq.device.errors), and never numpy or a TFLite runtime: those live in the
worker processes, which keeps the long-running daemon small.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import platform
import select
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from edgeq.device import __version__
from edgeq.device.errors import (
    AgentConnectionError,
    DaemonNotRunningError,
    EdgeqError,
    ModelLoadError,
    ModelNotFoundError,
    ProtocolError,
    StoreError,
    WorkerCrashedError,
    error_to_dict,
)
from edgeq.device.protocol import (
    MAX_REQUEST_BYTES,
    MEASURE_OPS,
    PROTOCOL_VERSION,
    Request,
    Response,
    check_hello,
    decode_request,
    encode_response,
    peek_id,
)
from edgeq.device.settings import BenchSettings
from edgeq.device.store import Store, atomic_write_bytes
from edgeq.device.worker import AGENT_RELEASE, WorkerCancelledError, run_in_worker, worker_env

logger = logging.getLogger(__name__)

#: a connection that sends nothing for this long (after its hello) is closed
IDLE_TIMEOUT_S = 3600.0
#: a connection must say hello within this many seconds
HELLO_TIMEOUT_S = 10.0
#: connections served at once; the next one is refused with an error
MAX_CLIENTS = 16
#: on shutdown, how long requests in flight get to send their answer
SHUTDOWN_ANSWER_S = 3.0
#: how often a waiting or measuring request checks that its client is still connected
CLIENT_CHECK_S = 0.2
LOG_ROTATE_BYTES = 5 * 1024 * 1024
READY_TIMEOUT_S = 30.0
#: how long `status` waits for the first runtime probe (slow under emulation)
RUNTIME_PROBE_TIMEOUT_S = 60.0
HELLO_RUNTIME_WAIT_S = 15.0
#: an oversize request is read (and dropped) up to this size before the error is sent
DISCARD_MAX_BYTES = 64 * 1024 * 1024


class DaemonRunningError(EdgeqError):
    """Another daemon already serves this socket."""


class DaemonStoppedError(EdgeqError):
    """The daemon was stopped (a deploy restarting it, `stop`, SIGTERM) during a request."""


class ClientGoneError(EdgeqError):
    """The client disconnected while its measurement waited or ran (nobody reads this)."""


def _socket_alive(path: Path, timeout_s: float = 2.0) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------------------------


class Agent:
    """What the daemon knows and does, independent of sockets (one instance per daemon)."""

    def __init__(self, store: Store, socket_path: Path,
                 worker_timeout_s: Optional[float] = None) -> None:
        self.store = store
        self.socket_path = socket_path
        self.worker_timeout_s = worker_timeout_s
        self.started = time.monotonic()
        self.measure_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.worker_pid: Optional[int] = None
        self.requests_served = 0
        #: open connections that have asked for a measurement (a run in progress)
        self.active_runs = 0
        self.clients = 0
        #: requests being answered now (shutdown lets them send their answer, briefly)
        self.inflight = 0
        self.stopping = False
        self.runtime: Optional[dict[str, str]] = None
        self.runtime_error: Optional[str] = None
        # The daemon itself never imports numpy or a runtime (it stays small); a short-lived
        # process tells which runtime the workers will use.
        self.runtime_known = threading.Event()
        threading.Thread(target=self._probe_runtime, name="runtime-probe", daemon=True).start()

    def _probe_runtime(self) -> None:
        argv = [sys.executable, "-m", "edgeq.device", "runtime", "--json"]
        try:
            out = subprocess.run(argv, capture_output=True, timeout=RUNTIME_PROBE_TIMEOUT_S,
                                 env=worker_env(), stdin=subprocess.DEVNULL)
            doc = json.loads(out.stdout.decode("utf-8") or "{}")
            if isinstance(doc.get("error"), dict):
                self.runtime_error = str(doc["error"].get("message"))
            elif isinstance(doc.get("name"), str):
                self.runtime = {"name": doc["name"], "version": str(doc.get("version"))}
            else:
                self.runtime_error = f"the runtime probe failed (exit {out.returncode})"
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self.runtime_error = f"the runtime probe failed: {exc}"
        finally:
            self.runtime_known.set()
            logger.info("runtime: %s", self.runtime or self.runtime_error)

    def runtime_info(self, wait_s: float = 0.0) -> Optional[dict[str, str]]:
        self.runtime_known.wait(wait_s)
        return self.runtime

    # -- ops ------------------------------------------------------------------------------

    def dispatch(self, req: Request,
                 client_gone: Optional[Callable[[], bool]] = None) -> dict[str, Any]:
        """Run one request; `client_gone()` says whether its client disconnected (a
        measurement then stops waiting or running)."""
        with self._state_lock:
            self.requests_served += 1
        if req.op == "profile":
            return self._profile(req.args, client_gone)
        if req.op in MEASURE_OPS:
            return self._measure(req.op, req.args, client_gone)
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"op_{req.op}")
        return handler(req.args)

    def op_hello(self, args: dict[str, Any]) -> dict[str, Any]:
        check_hello(args)
        return {"protocol": PROTOCOL_VERSION, "agent_version": __version__, "pid": os.getpid(),
                "runtime": self.runtime_info(wait_s=HELLO_RUNTIME_WAIT_S)}

    def op_status(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            deployment = self.store.current_deployment()
        except StoreError as exc:
            deployment = {"error": exc.message}
        return {
            "agent_version": __version__,
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "home": str(self.store.home),
            "socket": str(self.socket_path),
            "runtime": self.runtime_info(wait_s=RUNTIME_PROBE_TIMEOUT_S),
            "runtime_error": self.runtime_error,
            "busy": self.measure_lock.locked(),
            "worker_pid": self.worker_pid,
            "active_runs": self.active_runs,
            "clients": self.clients,
            "agent_release": AGENT_RELEASE,
            "python_executable": sys.executable,
            "requests_served": self.requests_served,
            "python_version": platform.python_version(),
            "machine": platform.machine(),
            "store": self.store.summary(),
            "deployment": deployment,
        }

    def op_list_models(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"models": self.store.list_models(), "data": self.store.list_data(),
                "deployment": self.store.current_deployment()}

    def op_verify(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.store.verify(args["ref"])

    def op_remove(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.measure_lock:  # never delete a file a worker is measuring
            return {"removed": self.store.remove(args["ref"], force=args["force"])}

    def _acquire_measure_lock(self, client_gone: Optional[Callable[[], bool]]) -> None:
        """Wait for the measurement lock; give up (ClientGoneError) if the client leaves."""
        while not self.measure_lock.acquire(timeout=CLIENT_CHECK_S):
            if client_gone is not None and client_gone():
                raise ClientGoneError("the client disconnected while queued", hint="")
            if self.stopping:
                raise self._stopped_error()

    @staticmethod
    def _stopped_error() -> DaemonStoppedError:
        return DaemonStoppedError(
            "the agent daemon was stopped during the run (a deploy that changed the agent "
            "restarts it, or someone ran `stop`); the measurement was not finished",
            hint="run it again; the models were not at fault")

    def _measure(self, kind: str, args: dict[str, Any],
                 client_gone: Optional[Callable[[], bool]] = None) -> dict[str, Any]:
        sha, model_path = self.store.model(args["model"])
        data_path: Optional[Path] = None
        if args.get("data") is not None:
            _, data_path = self.store.data(args["data"])
        settings = BenchSettings.from_dict(args, strict=False)  # the request's settings
        timeout_s = float(args["timeout_s"])
        if self.worker_timeout_s:
            timeout_s = min(timeout_s, self.worker_timeout_s)

        def started(pid: int) -> None:
            self.worker_pid = pid

        def ended(pid: int) -> None:
            self.worker_pid = None

        queued = time.time()
        self._acquire_measure_lock(client_gone)
        try:
            logger.info("%s %s (%s) settings=%s", kind, sha[:12], args["model"],
                        settings.to_dict())
            started_s = time.time()
            try:
                result = run_in_worker(kind, model_path, data_path=data_path,
                                       settings=settings, timeout_s=timeout_s, sha256=sha,
                                       on_start=started, on_exit=ended, cancel=client_gone)
            except WorkerCancelledError:
                logger.info("%s %s: the client left; its worker was stopped", kind, sha[:12])
                raise
            except WorkerCrashedError:
                if self.stopping:  # we killed it on shutdown: not the model's fault
                    raise self._stopped_error() from None
                raise
            finished_s = time.time()
            logger.info("%s %s done in %.1f s", kind, sha[:12], finished_s - started_s)
        finally:
            self.measure_lock.release()
        # how the daemon ran it: queueing, and the worker's wall-clock interval
        result["agent"] = {"path": "daemon", "agent_pid": os.getpid(),
                           "worker_pid": result.get("pid"),
                           "queued_s": round(started_s - queued, 6),
                           "worker_started_unix_s": started_s,
                           "worker_finished_unix_s": finished_s,
                           "timeout_s": timeout_s}
        got = (result.get("model") or {}).get("sha256")
        if got != sha:
            raise ModelLoadError(f"the worker measured {got} instead of {sha}",
                                 hint="the store changed during the run; deploy again")
        return result

    def _profile(self, args: dict[str, Any],
                 client_gone: Optional[Callable[[], bool]] = None) -> dict[str, Any]:
        """The `profile` op: the cut models of the store's profiles/ directory (verified by
        their sha256 names) timed by edgeq.device.profile in a worker, under the same lock as
        bench and evaluate."""
        from edgeq.device.profile import (
            make_plan,
            profile_dir,
            profile_model_path,
            write_plan_file,
        )

        home = self.store.layout.home
        models = []
        for sha in args["models"]:
            path = profile_model_path(home, sha)
            if not Path(path).is_file():
                raise ModelNotFoundError(
                    f"profile model {sha[:12]} is not in {profile_dir(home)}",
                    hint="run edgeq profile from the host: it pushes the cut models first")
            self.store.verify_file(Path(path), sha, "profile model")
            models.append((sha, path))
        plan = make_plan(models, warmup_runs_min=args["warmup_runs_min"],
                         runs_min=args["runs_min"], rounds=args["rounds"], seed=args["seed"])
        settings = BenchSettings(threads=args["threads"], xnnpack=args["xnnpack"],
                                 runtime=args["runtime"])
        timeout_s = float(args["timeout_s"])
        if self.worker_timeout_s:
            timeout_s = min(timeout_s, self.worker_timeout_s)
        try:
            plan_path = write_plan_file(plan, profile_dir(home))
        except OSError as exc:
            raise StoreError(f"cannot write the profile plan in {profile_dir(home)}: "
                             f"{exc.strerror or exc}", hint="free space on the device") from None
        queued = time.time()
        try:
            self._acquire_measure_lock(client_gone)
            try:
                logger.info("profile of %d models settings=%s", len(models),
                            settings.to_dict())
                started_s = time.time()
                try:
                    result = run_in_worker(
                        "profile", plan_path, settings=settings, timeout_s=timeout_s,
                        on_start=lambda pid: setattr(self, "worker_pid", pid),
                        on_exit=lambda pid: setattr(self, "worker_pid", None),
                        cancel=client_gone)
                except WorkerCrashedError:
                    if self.stopping:
                        raise self._stopped_error() from None
                    raise
                finished_s = time.time()
            finally:
                self.measure_lock.release()
        finally:
            plan_path.unlink(missing_ok=True)
        got = [m.get("sha256") for m in result.get("models") or []]
        if got != list(args["models"]):
            raise ModelLoadError("the profile worker measured other models than asked",
                                 hint="the store changed during the run; run it again")
        result["agent"] = {"path": "daemon", "agent_pid": os.getpid(),
                           "worker_pid": result.get("pid"),
                           "queued_s": round(started_s - queued, 6),
                           "worker_started_unix_s": started_s,
                           "worker_finished_unix_s": finished_s, "timeout_s": timeout_s}
        return result

    def op_bench(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._measure("bench", args)

    def op_evaluate(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._measure("evaluate", args)

    def kill_worker(self, stopping: bool = True) -> None:
        self.stopping = self.stopping or stopping
        pid = self.worker_pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                logger.info("killed worker %d on shutdown", pid)
            except OSError:
                pass


class _Handler(socketserver.StreamRequestHandler):
    """One client connection: handshake, then requests until EOF."""

    server: "_Server"

    def _send(self, resp: Response) -> bool:
        try:
            self.wfile.write(encode_response(resp))
            self.wfile.flush()
            return True
        except OSError as exc:
            logger.info("client went away: %s", exc)
            return False

    def _discard_line(self, head: bytes) -> None:
        """Read and drop the rest of an oversize line (at most DISCARD_MAX_BYTES, 5 s)."""
        if head.endswith(b"\n"):
            return
        self.connection.settimeout(5.0)
        dropped = len(head)
        try:
            while dropped < DISCARD_MAX_BYTES:
                chunk = self.rfile.readline(1 << 20)
                if not chunk or chunk.endswith(b"\n"):
                    break
                dropped += len(chunk)
        except (OSError, ValueError):
            pass

    def client_gone(self) -> bool:
        """Whether the client closed its end entirely (POLLHUP/POLLERR; a half-close, i.e. a
        client that sent everything and waits for answers, does not count)."""
        p = select.poll()
        p.register(self.connection.fileno(), select.POLLHUP | select.POLLERR)
        try:
            return any(ev & (select.POLLHUP | select.POLLERR) for _, ev in p.poll(0))
        except OSError:
            return True

    def handle(self) -> None:
        agent = self.server.agent
        self._in_run = False
        try:
            self._serve(agent)
        finally:
            if self._in_run:
                with agent._state_lock:
                    agent.active_runs -= 1

    def _mark_run(self, agent: Agent) -> None:
        """Count this connection as a run in progress (deploy waits for those to end)."""
        if not self._in_run:
            self._in_run = True
            with agent._state_lock:
                agent.active_runs += 1

    def _serve(self, agent: Agent) -> None:
        self.connection.settimeout(self.server.hello_timeout_s)
        greeted = False
        while True:
            try:
                line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            except socket.timeout:  # TimeoutError from Python 3.10 on
                if not greeted:
                    logger.info("no hello within %g s; closing", self.server.hello_timeout_s)
                    self._send(Response.failure(None, ProtocolError(
                        f"no hello within {self.server.hello_timeout_s:g} s; closing",
                        hint="send hello first, right after connecting")))
                return
            except (OSError, ValueError) as exc:
                logger.info("connection closed: %s", exc)
                return
            if not line:
                return
            if len(line) > MAX_REQUEST_BYTES:
                # read the rest of the oversize line first: closing a socket with unread
                # input resets it, and the client would lose this error response
                self._discard_line(line)
                self._send(Response.failure(None, ProtocolError(
                    f"request longer than {MAX_REQUEST_BYTES} bytes; closing the connection",
                    hint="keep each request line under 1 MiB")))
                return
            if not line.strip():
                continue
            with agent._state_lock:
                agent.inflight += 1
            try:
                if not self._answer(agent, line, greeted):
                    return
                greeted = True
            finally:
                with agent._state_lock:
                    agent.inflight -= 1

    def _answer(self, agent: Agent, line: bytes, greeted: bool) -> bool:
        """Answer one request line; False when the connection must close."""
        rid: Optional[int] = None
        try:
            try:
                rid = peek_id(json.loads(line))
            except (ValueError, RecursionError):
                rid = None
            req = decode_request(line)
            if not greeted:
                if req.op != "hello":
                    self._send(Response.failure(rid, ProtocolError(
                        f"the first request must be hello, not {req.op!r}",
                        hint='start with {"id": 0, "op": "hello", "args": {"protocol": 1}}'
                    )))
                    return False
                check_hello(req.args)
                self.connection.settimeout(IDLE_TIMEOUT_S)
            if req.op in MEASURE_OPS:
                self._mark_run(agent)
            resp = Response.success(req.id, agent.dispatch(req, self.client_gone))
        except EdgeqError as exc:
            logger.info("request %s failed: %s: %s", rid, type(exc).__name__, exc.message)
            resp = Response.failure(rid, exc)
            if not self._send(resp):
                return False
            return greeted  # a failed handshake closes the connection
        except Exception as exc:  # a bug: report it, keep serving
            logger.exception("request %s crashed", rid)
            resp = Response(rid, False, error=error_to_dict(exc))
        return self._send(resp)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, path: Path, agent: Agent, *, max_clients: int = MAX_CLIENTS,
                 hello_timeout_s: float = HELLO_TIMEOUT_S) -> None:
        self.agent = agent
        self.max_clients = max_clients
        self.hello_timeout_s = hello_timeout_s
        old_umask = os.umask(0o177)  # the socket is born 0600
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old_umask)
        os.chmod(str(path), 0o600)
        self.bound_inode = os.stat(str(path)).st_ino

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("unhandled error in a connection")

    def process_request(self, request: Any, client_address: Any) -> None:
        agent = self.agent
        with agent._state_lock:
            full = agent.clients >= self.max_clients
            if not full:
                agent.clients += 1
        if full:
            threading.Thread(target=self._refuse, args=(request,), daemon=True).start()
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with agent._state_lock:
                agent.clients -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.agent._state_lock:
                self.agent.clients -= 1

    def _refuse(self, request: socket.socket) -> None:
        """Tell an extra client why it is turned away, then close (reading what it sent
        first, for at most the hello time-out: closing with unread input would reset the
        connection and lose the error)."""
        logger.info("refusing a connection: %d clients already", self.max_clients)
        err = AgentConnectionError(
            f"the agent daemon already serves {self.max_clients} connections",
            hint="wait for the other runs to finish, or start the daemon with a higher "
                 "serve --max-clients")
        try:
            request.settimeout(min(self.hello_timeout_s, 2.0))
            request.sendall(encode_response(Response.failure(None, err)))
            request.shutdown(socket.SHUT_WR)
            while request.recv(65536):
                pass
        except OSError:
            pass
        finally:
            request.close()


def _prepare_socket(path: Path) -> None:
    if len(os.fsencode(str(path))) > 100:
        raise StoreError(f"the socket path {path} is too long for a Unix socket",
                         hint="use a shorter --home or --socket path")
    if path.exists() or path.is_symlink():
        if _socket_alive(path):
            raise DaemonRunningError(f"an agent daemon already serves {path}",
                                     hint="stop it first: python -m edgeq.device stop")
        logger.info("removing stale socket %s", path)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)


def _remove_if_ours(pid_path: Path, socket_path: Path, server: Optional[_Server]) -> None:
    try:
        if server is not None and os.stat(str(socket_path)).st_ino == server.bound_inode:
            socket_path.unlink()
    except OSError:
        pass
    try:
        if pid_path.read_text().strip() == str(os.getpid()):
            pid_path.unlink()
    except OSError:
        pass


def _take_lock(store: Store) -> int:
    """The fd of agent.lock, locked (fcntl, released when the process ends); a
    DaemonRunningError if another daemon of this home holds it."""
    path = store.layout.lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DaemonRunningError(f"an agent daemon already serves {store.home} or is starting "
                                 f"(it holds {path})",
                                 hint="stop it first: python -m edgeq.device stop") from None
    return fd


def run_server(store: Store, socket_path: Path, *, worker_timeout_s: Optional[float] = None,
               ready: Optional[Callable[[], None]] = None, max_clients: int = MAX_CLIENTS,
               hello_timeout_s: float = HELLO_TIMEOUT_S) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    store.ensure_dirs()
    lock_fd = _take_lock(store)
    try:
        return _run_locked(store, socket_path, worker_timeout_s=worker_timeout_s, ready=ready,
                           max_clients=max_clients, hello_timeout_s=hello_timeout_s)
    finally:
        os.close(lock_fd)


def _run_locked(store: Store, socket_path: Path, *, worker_timeout_s: Optional[float],
                ready: Optional[Callable[[], None]], max_clients: int,
                hello_timeout_s: float) -> int:
    _prepare_socket(socket_path)
    agent = Agent(store, socket_path, worker_timeout_s)
    server = _Server(socket_path, agent, max_clients=max_clients,
                     hello_timeout_s=hello_timeout_s)
    atomic_write_bytes(store.pid_path, f"{os.getpid()}\n".encode())
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        logger.info("got %s; shutting down", signal.Signals(signum).name)
        agent.kill_worker()
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logger.info("edgeq agent %s (pid %d) serving %s", __version__, os.getpid(), socket_path)
    try:
        if ready is not None:
            ready()
        server.serve_forever(poll_interval=0.5)
    finally:
        agent.kill_worker()
        deadline = time.monotonic() + SHUTDOWN_ANSWER_S
        while agent.inflight and time.monotonic() < deadline:  # let them say why they end
            time.sleep(0.05)
        server.server_close()
        _remove_if_ours(store.pid_path, socket_path, server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("edgeq agent stopped")
    return 0


def _rotate_log(path: Path) -> None:
    try:
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except OSError:
        pass


def serve(*, home: Optional[str] = None, socket_path: Optional[str] = None,
          detach: bool = False, worker_timeout_s: Optional[float] = None,
          max_clients: int = MAX_CLIENTS, hello_timeout_s: float = HELLO_TIMEOUT_S) -> int:
    """`serve [--detach]`: run the daemon in the foreground (returns its exit code when it
    stops), or start it in the background and return the daemon's pid once it is ready."""
    store = Store(home)
    store.ensure_dirs()
    sock = Path(socket_path).absolute() if socket_path else store.socket_path
    logging.getLogger("edgeq.device").setLevel(logging.INFO)
    limits = {"max_clients": max_clients, "hello_timeout_s": hello_timeout_s}
    if not detach:
        return run_server(store, sock, worker_timeout_s=worker_timeout_s, **limits)
    # refuse early, in the caller's terminal, when one already runs
    if (sock.exists() or sock.is_symlink()) and _socket_alive(sock):
        raise DaemonRunningError(f"an agent daemon already serves {sock}",
                                 hint="stop it first: python -m edgeq.device stop")
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:  # the caller: wait for the grandchild to say it is ready
        os.close(w)
        os.waitpid(pid, 0)
        msg = _read_ready(r, READY_TIMEOUT_S)
        os.close(r)
        if msg.startswith("ok "):
            return int(msg[3:].strip())
        raise EdgeqError(f"the daemon did not start: {msg or 'no answer'}",
                         hint=f"see {store.log_path}")
    # first child
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    # the daemon
    code = 1
    try:
        os.chdir("/")
        _rotate_log(store.log_path)
        log_fd = os.open(str(store.log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null_fd)
        os.close(log_fd)
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)

        def ready() -> None:
            os.write(w, f"ok {os.getpid()}\n".encode())
            os.close(w)

        code = run_server(store, sock, worker_timeout_s=worker_timeout_s, ready=ready,
                          **limits)
    except EdgeqError as exc:
        logger.error("%s (%s)", exc.message, exc.hint)
        try:
            os.write(w, f"{exc.message}\n".encode())
        except OSError:
            pass
    except BaseException:
        logger.exception("the daemon crashed")
        try:
            os.write(w, b"crashed, see the log\n")
        except OSError:
            pass
    finally:
        os._exit(code)


def _read_ready(fd: int, timeout_s: float) -> str:
    import select

    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        if b"\n" in buf:
            break
    return buf.decode("utf-8", "replace").strip()


# ---------------------------------------------------------------------------------------------
# the other commands
# ---------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b")")[-1].split()[0] != b"Z"
    except OSError:
        return True


def _is_agent(pid: int) -> bool:
    """Whether pid runs `edgeq.device ... serve` (guards against a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            words = fh.read().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pidfile
    return any(b"edgeq" in w for w in words) and b"serve" in words


def read_pid(store: Store) -> Optional[int]:
    try:
        text = store.pid_path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot read {store.pid_path}: {exc.strerror or exc}",
                         hint="check the permissions of $EDGEQ_HOME") from None
    try:
        return int(text)
    except ValueError:
        return None


def stop(*, home: Optional[str] = None, timeout_s: float = 10.0) -> int:
    """`stop`: SIGTERM the daemon named by the pidfile, wait for it to exit; its pid."""
    store = Store(home)
    pid = read_pid(store)
    if pid is None or not _pid_alive(pid) or not _is_agent(pid):
        if pid is not None:
            try:
                store.pid_path.unlink()
            except OSError:
                pass
        raise DaemonNotRunningError(f"no agent daemon is running (pidfile {store.pid_path} "
                                    f"{'is stale' if pid is not None else 'does not exist'})",
                                    hint="start one with: python -m edgeq.device serve --detach")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return pid
        time.sleep(0.05)
    raise EdgeqError(f"the agent daemon (pid {pid}) did not stop within {timeout_s:g} s",
                     hint=f"kill it by hand: kill -KILL {pid}")


def format_status(doc: dict[str, Any]) -> str:
    rt = doc.get("runtime") or {}
    dep = doc.get("deployment") or {}
    store = doc.get("store") or {}
    lines = [
        f"edgeq agent {doc.get('agent_version')} (pid {doc.get('pid')}), up "
        f"{doc.get('uptime_s', 0):.0f} s, protocol {doc.get('protocol')}",
        f"socket    {doc.get('socket')}",
        f"runtime   {rt.get('name')} {rt.get('version')}" if rt else
        f"runtime   MISSING: {doc.get('runtime_error')}",
        "busy      " + (f"yes (worker pid {doc.get('worker_pid')})" if doc.get("busy")
                            else "no"),
        f"store     {len(store.get('models', []))} models, {len(store.get('data', []))} data sets",
    ]
    if dep:
        lines.append(f"deployed  {dep.get('model_name')}: float32 {str(dep.get('float32'))[:12]}"
                     f"  int8 {str(dep.get('int8'))[:12]}  data {str(dep.get('eval_data'))[:12]}")
    else:
        lines.append("deployed  nothing")
    return "\n".join(lines)


#: how long `bridge` waits for the daemon to accept its connection
BRIDGE_CONNECT_TIMEOUT_S = 10.0


def _connect_unix(path: Path, timeout_s: float) -> Optional[socket.socket]:
    """A connected socket to `path`; None when the daemon's backlog stayed full for
    `timeout_s` (a stopped daemon: Linux answers EAGAIN at once, so retry until then);
    DaemonNotRunningError when nothing listens there."""
    deadline = time.monotonic() + timeout_s
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            sock.connect(str(path))
            sock.settimeout(None)
            return sock
        except (BlockingIOError, socket.timeout):
            sock.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EAGAIN and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            if exc.errno == errno.EAGAIN:
                return None
            raise DaemonNotRunningError(
                f"no edgeq agent daemon is listening on {path} ({exc.strerror or exc})",
                hint="start it with: python -m edgeq.device serve --detach "
                     "(or use the one-shot agent)",
            ) from None


def bridge(*, home: Optional[str] = None, socket_path: Optional[str] = None,
           stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """`bridge`: relay stdin -> socket and socket -> stdout until the daemon closes."""
    store = Store(home)
    path = Path(socket_path) if socket_path else store.socket_path
    sock = _connect_unix(path, BRIDGE_CONNECT_TIMEOUT_S)
    if sock is None:
        raise AgentConnectionError(
            f"the edgeq agent daemon on {path} did not accept the connection within "
            f"{BRIDGE_CONNECT_TIMEOUT_S:g} s",
            hint="it may be stopped or stuck: restart it (edgeq deploy) or use the one-shot "
                 "agent")

    def pump_in() -> None:
        try:
            while True:
                data = os.read(stdin_fd, 65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    threading.Thread(target=pump_in, daemon=True).start()
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            view = memoryview(data)
            while view:
                n = os.write(stdout_fd, view)
                view = view[n:]
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise EdgeqError(f"the bridge broke: {exc.strerror or exc}",
                             hint="reconnect") from None
    finally:
        sock.close()
    return 0
