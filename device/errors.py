"""The one error root of edgeq, shared by host and device.

Every error a user can act on is an EdgeqError carrying a one-line message and
a hint that says what to do next. Only the CLIs turn these into exit codes.
This module also owns the errors' wire form, {"type", "message", "hint"}: `error_to_dict`
writes it (for any exception), `error_from_wire` / `raise_from_wire` rebuild the EdgeqError
subclass it names. The daemon, its client and the worker all go through these.
Imports: standard library only.
"""
from __future__ import annotations

from typing import Any, Mapping, NoReturn


class EdgeqError(Exception):
    """A failure the user can act on: `message` says what, `hint` says what to do."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        """The wire form used by the daemon protocol and `--json` outputs."""
        return {"type": type(self).__name__, "message": self.message, "hint": self.hint}


class UsageError(EdgeqError):
    """Bad options or arguments."""

    exit_code = 2


# --- device: runtime and models ------------------------------------------------------------


class RuntimeMissingError(EdgeqError):
    """No TFLite runtime (ai-edge-litert, tflite-runtime, tensorflow) can be imported."""


class ModelLoadError(EdgeqError):
    """A .tflite file that is missing, truncated, corrupt or not a TFLite model."""


class InputShapeError(EdgeqError):
    """Input data that does not fit the model's input tensor."""


class EvalDataError(EdgeqError):
    """An evaluation-set .npz that is missing or malformed."""


# --- device: worker processes ----------------------------------------------------------------


class WorkerCrashedError(EdgeqError):
    """The benchmark worker process died (signal or non-zero exit) without a result."""


class WorkerTimeoutError(EdgeqError):
    """The benchmark worker process did not finish in time and was killed."""


# --- device: store ---------------------------------------------------------------------------


class StoreError(EdgeqError):
    """The device store ($EDGEQ_HOME) cannot be read or written."""


class ModelNotFoundError(EdgeqError):
    """A model or data set (by sha256 or deployment kind) that is not in the store."""


class IntegrityError(EdgeqError):
    """A stored file whose content no longer matches its sha256 name."""


# --- device: daemon protocol -----------------------------------------------------------------


class ProtocolError(EdgeqError):
    """A malformed, oversize or otherwise invalid protocol message."""


class ProtocolVersionError(ProtocolError):
    """Client and daemon speak different protocol versions."""


class UnknownOpError(ProtocolError):
    """A request for an operation the daemon does not know."""


class AgentConnectionError(EdgeqError):
    """The daemon cannot be reached, or the connection broke or timed out."""


class DaemonNotRunningError(AgentConnectionError):
    """No daemon answers on the socket / no live pid in the pidfile (exit status 3)."""

    exit_code = 3


class AgentInternalError(EdgeqError):
    """An unexpected failure inside the daemon (a bug); the daemon keeps serving."""


class RemoteError(EdgeqError):
    """An error response whose type this side does not know; `remote_type` names it."""

    def __init__(self, message: str, hint: str = "", remote_type: str = "") -> None:
        super().__init__(message, hint)
        self.remote_type = remote_type

    def to_dict(self) -> dict[str, str]:
        d = super().to_dict()
        if self.remote_type:
            d["type"] = self.remote_type
        return d


# --- the wire form ---------------------------------------------------------------------------


def _all_subclasses(cls: type) -> list[type]:
    out: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


def error_class(type_name: str) -> type[EdgeqError] | None:
    """The EdgeqError subclass (loaded anywhere in this process) named `type_name`, or None."""
    if type_name == "EdgeqError":
        return EdgeqError
    for sub in _all_subclasses(EdgeqError):
        if sub.__name__ == type_name:
            return sub
    return None


def error_to_dict(exc: BaseException) -> dict[str, str]:
    """The wire form {type, message, hint} of any exception: an EdgeqError's own `to_dict`,
    anything else (a bug) as an AgentInternalError."""
    if isinstance(exc, EdgeqError):
        d = exc.to_dict()
        return {"type": str(d["type"]), "message": str(d["message"]), "hint": str(d["hint"])}
    text = " ".join(str(exc).split())[:500] or type(exc).__name__
    return {
        "type": "AgentInternalError",
        "message": f"the agent failed unexpectedly: {type(exc).__name__}: {text}",
        "hint": "this is a bug in the agent; see $EDGEQ_HOME/logs/agent.log",
    }


def error_from_wire(wire: Mapping[str, Any]) -> EdgeqError:
    """The EdgeqError subclass a wire-form error names, with its message and hint; a name this
    process does not know (or a class with another constructor) becomes a RemoteError."""
    type_name = str(wire.get("type") or "EdgeqError")
    message = str(wire.get("message") or "the agent reported an error")
    hint = str(wire.get("hint") or "")
    cls = error_class(type_name)
    if cls is not None:
        try:
            return cls(message, hint)
        except TypeError:  # a subclass with another constructor
            pass
    return RemoteError(message, hint, remote_type=type_name)


def raise_from_wire(wire: Mapping[str, Any]) -> NoReturn:
    """Raise `error_from_wire(wire)` (without chaining the caller's context)."""
    raise error_from_wire(wire) from None
