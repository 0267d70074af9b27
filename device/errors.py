"""The one error root of edgeq, shared by host and device.

Every error a user can act on is an EdgeqError carrying a one-line message and
a hint that says what to do next. Only the CLIs turn these into exit codes.
Imports: standard library only.
"""
from __future__ import annotations


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
