"""A client of the agent daemon over any byte stream (Unix socket, SSH channel, pipes).

`AgentClient(write, readline)` takes two callables: `write(bytes)` and `readline(limit)`
(or a zero-argument `readline()` that already enforces a limit) returning one line with its
b"\\n", or b"" at end of stream. `AgentClient.connect_unix(path, timeout_s)` opens the
daemon's socket directly. Error responses are raised as the EdgeqError subclass they name
(edgeq.device.errors.raise_from_wire: message and hint preserved; unknown names become
RemoteError). `query_status(socket_path)` is the agent's `status` command.
Every read is bounded where the stream allows it (`set_timeout`): the handshake by
`hello_timeout_s`, a measurement (protocol.MEASURE_OPS: bench, evaluate, profile) by
`measure_budget_s(its timeout_s)` = twice its time-out plus a margin (its own run, and as
long again queued behind another client's measurement: the daemon runs one at a time), any
other op by `timeout_s`.
`measure(op, args, alive=...)` waits for a measurement in slices of `poll_s` and asks
`alive()` (the daemon's status on another connection) between slices, so a daemon that
stopped answering (SIGSTOP, a hung board) is reported within a slice, not at the budget.
Imports: standard library and edgeq.device (protocol, errors).
"""
from __future__ import annotations

import inspect
import itertools
import logging
import os
import socket
import time
from typing import Any, Callable, Optional, Union

from edgeq.device.errors import (
    AgentConnectionError,
    DaemonNotRunningError,
    EdgeqError,
    ProtocolError,
    raise_from_wire,
)
from edgeq.device.protocol import (
    DEFAULT_BENCH_TIMEOUT_S,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    MEASURE_OPS,
    PROTOCOL_VERSION,
    Request,
    Response,
    decode_response,
    encode,
)

logger = logging.getLogger(__name__)

#: the handshake's bound (the daemon waits up to 15 s for its runtime probe)
HELLO_TIMEOUT_S = 30.0
#: any op but a measurement
OP_TIMEOUT_S = 60.0
#: added to a measurement's own time-out (worker start, result transfer)
MEASURE_MARGIN_S = 60.0
#: while a measurement runs, how often the host checks that the daemon still answers
LIVENESS_POLL_S = 20.0


def measure_budget_s(timeout_s: float, margin_s: float = MEASURE_MARGIN_S) -> float:
    """How long a host waits for a measurement asked with `timeout_s`: its run, as long
    again in the daemon's queue (one measurement at a time), and a margin."""
    return 2.0 * float(timeout_s) + margin_s

WriteFn = Callable[[bytes], Any]
ReadlineFn = Callable[..., bytes]


def _takes_limit(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return bool(params)


class AgentClient:
    """Requests with ids, size limits and typed errors over a line-oriented byte stream."""

    def __init__(
        self,
        write: WriteFn,
        readline: ReadlineFn,
        *,
        close: Optional[Callable[[], Any]] = None,
        set_timeout: Optional[Callable[[Optional[float]], Any]] = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        name: str = "agent",
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        op_timeout_s: Optional[float] = None,
        margin_s: float = MEASURE_MARGIN_S,
        timeout_errors: tuple[type[BaseException], ...] = (socket.timeout,),
    ) -> None:
        self._write = write
        self._timeout_errors = timeout_errors
        self._readline = readline
        self._readline_takes_limit = _takes_limit(readline)
        self._close = close
        self._set_timeout = set_timeout
        self.timeout_s: Optional[float] = op_timeout_s
        self.hello_timeout_s = hello_timeout_s
        self.margin_s = margin_s
        if set_timeout is not None and op_timeout_s is not None:
            set_timeout(op_timeout_s)
        self._ids = itertools.count(1)
        self.max_response_bytes = max_response_bytes
        self.name = name
        self.server: Optional[dict[str, Any]] = None
        self._broken: Optional[str] = None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def connect_unix(cls, socket_path: Union[str, os.PathLike],
                     timeout_s: Optional[float] = 30.0) -> "AgentClient":
        """Connect to the daemon's Unix socket; `timeout_s` bounds every read and write."""
        path = os.fspath(socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise DaemonNotRunningError(
                f"no edgeq agent daemon is listening on {path} ({exc.strerror or exc})",
                hint="start it with: python -m edgeq.device serve --detach",
            ) from None
        except OSError as exc:
            sock.close()
            raise AgentConnectionError(f"cannot connect to {path}: {exc.strerror or exc}",
                                       hint="check the socket's path and permissions") from None
        rfile = sock.makefile("rb")

        def write(data: bytes) -> None:
            sock.sendall(data)

        def readline(limit: int) -> bytes:
            return rfile.readline(limit)

        def close() -> None:
            try:
                rfile.close()
            finally:
                sock.close()

        client = cls(write, readline, close=close, set_timeout=sock.settimeout, name=path)
        client.timeout_s = timeout_s
        return client

    def set_timeout(self, timeout_s: Optional[float]) -> None:
        """Bound every later read/write (only where the stream allows, e.g. connect_unix)."""
        self.timeout_s = timeout_s
        if self._set_timeout is not None:
            self._set_timeout(timeout_s)
        else:
            logger.debug("set_timeout(%s) ignored: the stream has no timeouts", timeout_s)

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------

    def _send(self, req: Request) -> None:
        data = encode(req.to_json(), MAX_REQUEST_BYTES)
        try:
            self._write(data)
        except (OSError, ValueError) as exc:
            self._broken = str(exc)
            raise AgentConnectionError(f"cannot send to {self.name}: {exc}",
                                       hint="is the agent daemon still running?") from None

    def _read_line(self) -> bytes:
        limit = self.max_response_bytes
        return self._readline(limit + 1) if self._readline_takes_limit else self._readline()

    def _read_line_watched(self, budget_s: float, poll_s: float,
                           alive: Callable[[], bool]) -> bytes:
        """A line within `budget_s`, read in slices of `poll_s`; between slices `alive()`
        must say the daemon still answers (the stream keeps what it read of a line)."""
        assert self._set_timeout is not None
        deadline = time.monotonic() + budget_s
        while True:
            left = deadline - time.monotonic()
            self._set_timeout(max(0.01, min(poll_s, left)))
            try:
                return self._read_line()
            except self._timeout_errors:
                if time.monotonic() >= deadline:
                    raise
                if not alive():
                    self._broken = "daemon not answering"
                    raise AgentConnectionError(
                        f"{self.name} stopped answering during the measurement (not even its "
                        "status: the daemon is stopped or the board hangs)",
                        hint="check the board (is the agent SIGSTOPped or out of memory?), "
                             "restart the daemon with edgeq deploy, or use --no-daemon") from None

    def _receive(self, read: Optional[Callable[[], bytes]] = None) -> Response:
        limit = self.max_response_bytes
        try:
            line = read() if read is not None else self._read_line()
        except socket.timeout:
            self._broken = "timeout"
            raise AgentConnectionError(f"{self.name} did not answer in time",
                                       hint="raise the timeout, or check the daemon's log"
                                       ) from None
        except EdgeqError:
            self._broken = "stream error"
            raise
        except (OSError, ValueError) as exc:
            self._broken = str(exc)
            raise AgentConnectionError(f"the connection to {self.name} broke: {exc}",
                                       hint="is the agent daemon still running?") from None
        if not line:
            self._broken = "closed"
            raise AgentConnectionError(f"{self.name} closed the connection",
                                       hint="the daemon stopped or refused the request; "
                                            "see $EDGEQ_HOME/logs/agent.log")
        if not line.endswith(b"\n"):
            self._broken = "oversize"
            if len(line) > limit:
                raise ProtocolError(f"a response is longer than {limit} bytes",
                                    hint="request less at once (e.g. a smaller eval_limit)")
            raise AgentConnectionError(f"{self.name} closed the connection mid-response",
                                       hint="see $EDGEQ_HOME/logs/agent.log on the device")
        return decode_response(line)

    def request(self, op: str, args: dict[str, Any], req_id: Optional[int] = None,
                read: Optional[Callable[[], bytes]] = None) -> Response:
        """Send one request and return its response (errors not raised); `read` reads the
        response line (default: one bounded readline)."""
        if self._broken is not None:
            raise AgentConnectionError(f"the connection to {self.name} is unusable "
                                       f"({self._broken})", hint="open a new connection")
        rid = next(self._ids) if req_id is None else req_id
        self._send(Request(rid, op, args))
        resp = self._receive(read)
        if resp.id is not None and resp.id != rid:
            self._broken = "id mismatch"
            raise ProtocolError(f"response id {resp.id} does not match request id {rid}",
                                hint="open a new connection")
        return resp

    def _bounded_request(self, op: str, args: dict[str, Any], budget: Optional[float],
                         req_id: Optional[int] = None) -> Response:
        """`request` with the read bound `budget` for this call (then back to timeout_s)."""
        setter = self._set_timeout
        if setter is None or budget is None:
            return self.request(op, args, req_id)
        setter(budget)
        try:
            return self.request(op, args, req_id)
        finally:
            setter(self.timeout_s)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run `op` with `args`; its result, or the error it returned raised.

        A measurement (bench, evaluate) may take its `timeout_s` on the daemon, and as long
        again queued behind another client's: the read bound is `measure_budget_s` for it.
        """
        budget = self.timeout_s
        if op in MEASURE_OPS:
            raw = args.get("timeout_s", DEFAULT_BENCH_TIMEOUT_S)
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                budget = measure_budget_s(raw, self.margin_s)
        resp = self._bounded_request(op, args, budget)
        if not resp.ok:
            raise_from_wire(resp.error or {})
        assert resp.result is not None
        return resp.result

    def measure(self, op: str, args: dict[str, Any], *, alive: Callable[[], bool],
                poll_s: Optional[float] = None) -> dict[str, Any]:
        """A measurement op (bench, evaluate) bounded by `measure_budget_s` like `call`, but
        waited for in slices of `poll_s` with `alive()` asked between them (see the module
        docstring); its result, or the error it returned raised."""
        if op not in MEASURE_OPS or self._set_timeout is None:
            return self.call(op, **args)
        budget = measure_budget_s(args.get("timeout_s", DEFAULT_BENCH_TIMEOUT_S), self.margin_s)
        try:
            slice_s = LIVENESS_POLL_S if poll_s is None else poll_s
            resp = self.request(op, args, read=lambda: self._read_line_watched(
                budget, slice_s, alive))
        finally:
            self._set_timeout(self.timeout_s)
        if not resp.ok:
            raise_from_wire(resp.error or {})
        assert resp.result is not None
        return resp.result

    def hello(self, protocol: int = PROTOCOL_VERSION) -> dict[str, Any]:
        """The version handshake (request id 0), bounded by hello_timeout_s."""
        resp = self._bounded_request("hello", {"protocol": protocol}, self.hello_timeout_s,
                                     req_id=0)
        if not resp.ok:
            self._broken = "handshake refused"
            raise_from_wire(resp.error or {})
        assert resp.result is not None
        self.server = resp.result
        return resp.result


def query_status(socket_path: Union[str, os.PathLike], timeout_s: float = 10.0) -> dict[str, Any]:
    """The daemon's `status` op, asked on its Unix socket."""
    with AgentClient.connect_unix(socket_path, timeout_s) as client:
        client.hello()
        return client.call("status")
