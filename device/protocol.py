"""The daemon wire protocol, shared by the agent daemon and every client (host included).

Framing: UTF-8 JSON, one object per line (b"\\n"-terminated). Requests are at most
MAX_REQUEST_BYTES (1 MiB), responses at most MAX_RESPONSE_BYTES (64 MiB), newline included.
No pickle, no eval, no shell: messages are plain JSON objects validated field by field here.

Request:  {"id": int >= 0, "op": str, "args": {...}}
Response: {"id": int, "ok": true, "result": {...}}
      or  {"id": int|null, "ok": false, "error": {"type": str, "message": str, "hint": str}}
(`id` is null only when the request was too broken to carry one.) `error.type` is the name
of an EdgeqError subclass (edgeq.device.errors); `AgentClient` raises that class again.

Handshake: the client's first request must be `hello` with its protocol version; on a
mismatch (or when the first request is anything else) the daemon answers an error
(ProtocolVersionError / ProtocolError) and closes the connection. An oversize request is
answered with a ProtocolError and the connection closed (its framing is lost); a line that
is not JSON, an unknown op or bad args get an error response and the connection stays open.

Ops and their args (all args optional unless marked *required*; unknown args are an error):

hello     {"protocol": int *required*}
          -> {"protocol": 1, "agent_version": str, "pid": int,
              "runtime": {"name", "version"} | null}
status    {}
          -> {"agent_version", "protocol", "pid", "uptime_s": float, "home": str,
              "socket": str, "runtime": {"name", "version"} | null, "runtime_error": str|null,
              "busy": bool (a bench/evaluate is running), "worker_pid": int|null,
              "requests_served": int, "python_version": str, "machine": str,
              "store": {"models": [MODEL], "data": [DATA]}, "deployment": current.json|null}
list_models {}
          -> {"models": [MODEL], "data": [DATA], "deployment": current.json|null}
          MODEL = {"sha256", "size_bytes", "path", "kinds": ["float32"|"int8", ...]}
          (kinds: what the current deployment calls it), DATA = {"sha256", "size_bytes", "path"}
verify    {"ref": REF | "all"} (default "all")
          -> {"ok": bool, "files": [{"sha256", "kind": "model"|"data", "size_bytes",
              "ok": bool, "error": str|null}]}
          re-hashes stored files and compares with their sha256 names.
bench     {"model": REF *required*, "data": DATA_REF | null (default null: no accuracy),
           "timeout_s": float 1..86400 (900), and every field of BenchSettings
           (edgeq.device.settings: threads, xnnpack, batch_size, warmup_runs_min, ...),
           with the type, limits and default declared there}
          -> the edgeq.bench/1 document (docs/SCHEMA.md), measured in a fresh worker
             process; bench/evaluate requests run one at a time (a queue), never overlapping.
evaluate  {"model": REF *required*, "data": DATA_REF (default "current"), "timeout_s", and
           the BenchSettings fields that are not `timing` (threads, xnnpack, batch_size, ...)}
          -> {"schema": "edgeq.evaluate/1", "model": {...}, "runtime": {...},
              "settings": {...}, "accuracy": ACCURACY (as in edgeq.bench/1), "eval_ms": float,
              "environment": {...}, "edgeq_version", "time_utc"}
profile   {"models": [SHA256, ...] *required* (1..2048 models of the store's profiles/ directory,
           named by content: the cut models edgeq.host.profile pushed), "warmup_runs_min",
           "runs_min" (timed runs per model, spread over the rounds), "rounds" (1..1000,
           default 10), "seed" (int >= 0, default 0), "threads", "xnnpack", "runtime" (the
           BenchSettings fields, their limits and defaults), "timeout_s"}
          -> the edgeq.profile_run/1 document of edgeq.device.profile (per model: sha256,
             latency_ms_p50, latency_ms_round_p50, runs, delegated_nodes, total_nodes, ...),
             measured in a fresh worker process in the same queue as bench/evaluate (a
             profile never overlaps another measurement).
remove    {"ref": SHA256 *required*, "force": bool (false)}
          -> {"removed": [{"sha256", "kind", "path"}]}
          refuses (StoreError) to remove what the current deployment uses unless force.

REF = a 64-hex sha256 of a stored model, or "float32" / "int8" (from the current deployment).
DATA_REF = a 64-hex sha256 of a stored data set, or "current" (the deployment's eval data).
Errors an op may return: ProtocolError, UnknownOpError, ProtocolVersionError, UsageError,
ModelNotFoundError, IntegrityError, ModelLoadError, InputShapeError, EvalDataError,
RuntimeMissingError, WorkerCrashedError, WorkerTimeoutError, StoreError, AgentInternalError.
The error wire form belongs to edgeq.device.errors (error_to_dict / error_from_wire).
Imports: standard library and edgeq.device (errors, settings, store.MODEL_KINDS).
The profile op was added in protocol 1 without a version bump: it is a new op (an older
daemon answers UnknownOpError, which the host takes as "use the one-shot agent").
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from edgeq.device.errors import (
    EdgeqError,
    ProtocolError,
    ProtocolVersionError,
    UnknownOpError,
    error_to_dict,
)
from edgeq.device.settings import SETTINGS, Setting, inconsistency
from edgeq.device.store import MODEL_KINDS

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20
MAX_RESPONSE_BYTES = 64 << 20
DEFAULT_BENCH_TIMEOUT_S = 900.0

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Request:
    """One request line."""

    id: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "args": self.args}


@dataclass(frozen=True)
class Response:
    """One response line: `result` when ok, else `error` ({type, message, hint})."""

    id: Optional[int]
    ok: bool
    result: Optional[dict[str, Any]] = None
    error: Optional[dict[str, str]] = None

    def to_json(self) -> dict[str, Any]:
        if self.ok:
            return {"id": self.id, "ok": True, "result": self.result}
        return {"id": self.id, "ok": False, "error": self.error}

    @classmethod
    def success(cls, req_id: Optional[int], result: dict[str, Any]) -> "Response":
        return cls(req_id, True, result=result)

    @classmethod
    def failure(cls, req_id: Optional[int], exc: EdgeqError) -> "Response":
        return cls(req_id, False, error=error_to_dict(exc))


# ---------------------------------------------------------------------------------------------
# framing
# ---------------------------------------------------------------------------------------------


def encode(obj: dict[str, Any], limit: int) -> bytes:
    """One JSON line (compact, ASCII-safe UTF-8), or ProtocolError if longer than `limit`."""
    try:
        data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"message cannot be encoded as JSON: {exc}",
                            hint="pass only JSON values (no NaN/inf, no objects)") from None
    if len(data) > limit:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {limit}-byte limit",
                            hint="send less data per request")
    return data


def encode_request(req: Request) -> bytes:
    return encode(req.to_json(), MAX_REQUEST_BYTES)


def encode_response(resp: Response) -> bytes:
    try:
        return encode(resp.to_json(), MAX_RESPONSE_BYTES)
    except ProtocolError as exc:
        return encode(Response.failure(resp.id, exc).to_json(), MAX_RESPONSE_BYTES)


def _load_line(line: bytes, limit: int, what: str) -> dict[str, Any]:
    if len(line) > limit:
        raise ProtocolError(f"{what} of {len(line)} bytes exceeds the {limit}-byte limit",
                            hint=f"keep each {what} under {limit} bytes")
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8", hint="send UTF-8 JSON lines") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})",
                            hint="send one JSON object per line") from None
    except (ValueError, RecursionError) as exc:  # e.g. nesting deeper than the parser allows
        raise ProtocolError(f"{what} is not usable JSON ({type(exc).__name__})",
                            hint="send one flat JSON object per line") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} is a JSON {type(obj).__name__}, not an object",
                            hint="send one JSON object per line")
    return obj


def peek_id(obj: Any) -> Optional[int]:
    """The request's id if it has a usable one (for error responses), else None."""
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            return rid
    return None


def decode_request(line: bytes) -> Request:
    """Parse and validate a request line (id, op, and the op's args)."""
    obj = _load_line(line, MAX_REQUEST_BYTES, "request")
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int) or rid < 0:
        raise ProtocolError("request id must be an integer >= 0",
                            hint='send {"id": 1, "op": "...", "args": {...}}')
    extra = set(obj) - {"id", "op", "args"}
    if extra:
        raise ProtocolError(f"unknown request field(s): {', '.join(sorted(extra))}",
                            hint='a request has only "id", "op" and "args"')
    op = obj.get("op")
    if not isinstance(op, str):
        raise ProtocolError("request op must be a string", hint=f"ops: {', '.join(OPS)}")
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError("request args must be a JSON object",
                            hint='send "args": {} when there are none')
    return Request(rid, op, validate_args(op, args))


def decode_response(line: bytes) -> Response:
    """Parse a response line; ProtocolError if it is not a well-formed response."""
    obj = _load_line(line, MAX_RESPONSE_BYTES, "response")
    rid = obj.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int)):
        raise ProtocolError("response id is not an integer", hint="update the agent")
    ok = obj.get("ok")
    if ok is True:
        result = obj.get("result")
        if not isinstance(result, dict):
            raise ProtocolError("response result is not an object", hint="update the agent")
        return Response(rid, True, result=result)
    if ok is False:
        err = obj.get("error")
        if not isinstance(err, dict) or not isinstance(err.get("message"), str):
            raise ProtocolError("error response without a message", hint="update the agent")
        return Response(rid, False, error={
            "type": str(err.get("type") or "EdgeqError"),
            "message": err["message"],
            "hint": str(err.get("hint") or ""),
        })
    raise ProtocolError('response has no boolean "ok"', hint="update the agent")


# ---------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------

Validator = Callable[[str, Any], Any]


def _bad(name: str, what: str, value: Any) -> ProtocolError:
    shown = json.dumps(value)[:60] if _jsonable(value) else type(value).__name__
    return ProtocolError(f"argument {name!r} must be {what}, not {shown}",
                         hint="see the op's arguments in edgeq.device.protocol")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def int_range(lo: int, hi: Optional[int]) -> Validator:
    def check(name: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise _bad(name, f"an integer in [{lo}, {hi if hi is not None else 'inf'}]", v)
        return v
    return check


def float_range(lo: float, hi: float) -> Validator:
    def check(name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < lo or v > hi:
            raise _bad(name, f"a number in [{lo:g}, {hi:g}]", v)
        return float(v)
    return check


def boolean(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _bad(name, "true or false", v)
    return v


def optional(inner: Validator) -> Validator:
    def check(name: str, v: Any) -> Any:
        return None if v is None else inner(name, v)
    return check


_KINDS_SHOWN = "/".join(f'"{k}"' for k in MODEL_KINDS)


def model_ref(name: str, v: Any) -> str:
    if not isinstance(v, str) or not (v in MODEL_KINDS or SHA256_RE.match(v)):
        raise _bad(name, f"a 64-hex sha256 or {_KINDS_SHOWN}", v)
    return v


def data_ref(name: str, v: Any) -> str:
    if not isinstance(v, str) or not (v == "current" or SHA256_RE.match(v)):
        raise _bad(name, 'a 64-hex sha256 or "current"', v)
    return v


def sha256_ref(name: str, v: Any) -> str:
    if not isinstance(v, str) or not SHA256_RE.match(v):
        raise _bad(name, "a 64-hex lowercase sha256", v)
    return v


def sha256_list(lo: int, hi: int) -> Validator:
    def check(name: str, v: Any) -> list[str]:
        if not isinstance(v, list) or not lo <= len(v) <= hi \
                or not all(isinstance(x, str) and SHA256_RE.match(x) for x in v):
            raise _bad(name, f"a list of {lo}..{hi} 64-hex lowercase sha256", v)
        return list(v)
    return check


def verify_ref(name: str, v: Any) -> str:
    if not isinstance(v, str) or not (v == "all" or v in MODEL_KINDS or SHA256_RE.match(v)):
        raise _bad(name, f'a 64-hex sha256, {_KINDS_SHOWN} or "all"', v)
    return v


def from_setting(s: Setting) -> Validator:
    """The validator of a declared bench setting: its type and limits (edgeq.device.settings)."""
    def check(name: str, v: Any) -> Any:
        if not s.is_valid(v):
            raise _bad(name, s.describe(), v)
        return s.normalize(v)
    return check


#: an arg spec: (validator, required, default)
ArgSpec = tuple[Validator, bool, Any]


def _setting_args(*, timing: bool) -> dict[str, ArgSpec]:
    """Arg specs of the declared settings (the `timing` ones only when `timing`)."""
    return {s.name: (from_setting(s), False, s.default) for s in SETTINGS
            if timing or not s.timing}


_TIMEOUT_ARG: ArgSpec = (float_range(1.0, 86400.0), False, DEFAULT_BENCH_TIMEOUT_S)
#: the bench settings a profile request takes (the rest do not apply to it)
PROFILE_SETTINGS = ("threads", "xnnpack", "runtime", "warmup_runs_min", "runs_min")
#: limits of a profile request (edgeq.device.profile checks its plan with the same numbers)
MAX_PROFILE_MODELS = 2048
MAX_PROFILE_ROUNDS = 1000
DEFAULT_PROFILE_ROUNDS = 10

OPS: dict[str, dict[str, ArgSpec]] = {
    "hello": {"protocol": (int_range(0, None), True, None)},
    "status": {},
    "list_models": {},
    "verify": {"ref": (verify_ref, False, "all")},
    "bench": {
        "model": (model_ref, True, None),
        "data": (optional(data_ref), False, None),
        **_setting_args(timing=True),
        "timeout_s": _TIMEOUT_ARG,
    },
    "evaluate": {
        "model": (model_ref, True, None),
        "data": (data_ref, False, "current"),
        **_setting_args(timing=False),
        "timeout_s": _TIMEOUT_ARG,
    },
    "profile": {
        "models": (sha256_list(1, MAX_PROFILE_MODELS), True, None),
        **{name: spec for name, spec in _setting_args(timing=True).items()
           if name in PROFILE_SETTINGS},
        "rounds": (int_range(1, MAX_PROFILE_ROUNDS), False, DEFAULT_PROFILE_ROUNDS),
        "seed": (int_range(0, 2**31 - 1), False, 0),
        "timeout_s": _TIMEOUT_ARG,
    },
    "remove": {"ref": (sha256_ref, True, None), "force": (boolean, False, False)},
}
#: the ops that measure: one at a time in the daemon, each in a worker process (bench and
#: evaluate take bench settings; profile takes PROFILE_SETTINGS of them)
MEASURE_OPS = ("bench", "evaluate", "profile")


def validate_args(op: str, args: dict[str, Any]) -> dict[str, Any]:
    """The op's args checked and completed with defaults; UnknownOpError / ProtocolError."""
    spec = OPS.get(op)
    if spec is None:
        raise UnknownOpError(f"unknown op {op!r}", hint=f"ops: {', '.join(OPS)}")
    unknown = set(args) - set(spec)
    if unknown:
        raise ProtocolError(
            f"unknown argument(s) for {op}: {', '.join(sorted(map(str, unknown)))}",
            hint=f"{op} takes: {', '.join(spec) or 'no arguments'}",
        )
    out: dict[str, Any] = {}
    for name, (check, required, default) in spec.items():
        if name in args:
            out[name] = check(name, args[name])
        elif required:
            raise ProtocolError(f"{op} needs the argument {name!r}",
                                hint="see the op's arguments in edgeq.device.protocol")
        else:
            out[name] = default
    if op in MEASURE_OPS:
        problem = inconsistency(out)
        if problem is not None:
            raise ProtocolError(*problem)
    return out


def check_hello(args: dict[str, Any]) -> None:
    """Raise ProtocolVersionError unless the client speaks our protocol version."""
    theirs = args.get("protocol")
    if theirs != PROTOCOL_VERSION:
        raise ProtocolVersionError(
            f"client speaks protocol {theirs}, this agent speaks {PROTOCOL_VERSION}",
            hint="deploy the same edgeq version to the device as on the host (edgeq deploy)",
        )
