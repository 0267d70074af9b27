"""edgeq.device.errors owns the errors' wire form: written by error_to_dict, rebuilt by
error_from_wire / raise_from_wire (the client, the worker and the daemon all use these)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from edgeq.device.errors import (
    DaemonNotRunningError,
    EdgeqError,
    IntegrityError,
    RemoteError,
    UsageError,
    error_from_wire,
    error_to_dict,
    raise_from_wire,
)


@pytest.mark.parametrize("exc", [IntegrityError("m", "h"), UsageError("bad", ""),
                                 DaemonNotRunningError("down", "start it"), EdgeqError("x", "y")])
def test_round_trip_keeps_class_message_and_hint(exc: EdgeqError) -> None:
    wire = json.loads(json.dumps(error_to_dict(exc)))
    back = error_from_wire(wire)
    assert type(back) is type(exc)
    assert (back.message, back.hint, back.exit_code) == (exc.message, exc.hint, exc.exit_code)
    with pytest.raises(type(exc)) as info:
        raise_from_wire(wire)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unknown_type_becomes_remote_error_that_keeps_its_name() -> None:
    back = error_from_wire({"type": "FutureError", "message": "m", "hint": "h"})
    assert isinstance(back, RemoteError) and back.remote_type == "FutureError"
    assert error_to_dict(back) == {"type": "FutureError", "message": "m", "hint": "h"}
    partial = error_from_wire({})
    assert type(partial) is EdgeqError and partial.message and partial.hint == ""


def test_a_bug_goes_on_the_wire_as_agent_internal_error() -> None:
    wire = error_to_dict(KeyError("boom\nsecond line"))
    assert wire["type"] == "AgentInternalError" and "KeyError" in wire["message"]
    assert "\n" not in wire["message"] and "agent.log" in wire["hint"]
    assert type(error_from_wire(wire)).__name__ == "AgentInternalError"


def test_daemon_and_worker_do_not_import_the_client() -> None:
    code = ("import sys, edgeq.device.daemon, edgeq.device.worker; "
            "print('edgeq.device.client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
