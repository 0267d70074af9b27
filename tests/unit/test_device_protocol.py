"""edgeq.device.protocol framing/validation and AgentClient over a real socketpair."""
from __future__ import annotations

import json
import socket
import threading

import pytest
from edgeq.device.client import AgentClient
from edgeq.device.errors import (
    AgentConnectionError,
    InputShapeError,
    ProtocolError,
    ProtocolVersionError,
    RemoteError,
    UnknownOpError,
)
from edgeq.device.protocol import (
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    OPS,
    PROTOCOL_VERSION,
    Request,
    Response,
    check_hello,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

SHA = "ab" * 32


def test_constants() -> None:
    assert PROTOCOL_VERSION == 1
    assert MAX_REQUEST_BYTES == 1024 * 1024 and MAX_RESPONSE_BYTES == 64 * 1024 * 1024
    assert set(OPS) >= {"hello", "status", "list_models", "verify", "bench", "evaluate",
                        "remove"}


def test_request_roundtrip_fills_defaults() -> None:
    line = encode_request(Request(7, "bench", {"model": "int8", "threads": 2}))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    req = decode_request(line)
    assert req.id == 7 and req.op == "bench"
    assert req.args["threads"] == 2 and req.args["xnnpack"] is True
    assert req.args["runs_min"] == 50 and req.args["data"] is None
    assert decode_request(b'{"id": 1, "op": "status"}\n').args == {}


@pytest.mark.parametrize("line, match", [
    (b"not json\n", "not valid JSON"),
    (b"[1, 2]\n", "not an object"),
    (b"[" * 200_000 + b"\n", "not usable JSON"),
    (b'\xff\xfe{"id": 1}\n', "not UTF-8"),
    (b'{"op": "status"}\n', "id"),
    (b'{"id": -1, "op": "status"}\n', "id"),
    (b'{"id": true, "op": "status"}\n', "id"),
    (b'{"id": 1, "op": 5}\n', "op"),
    (b'{"id": 1, "op": "status", "args": [1]}\n', "args"),
    (b'{"id": 1, "op": "status", "extra": 1}\n', "unknown request field"),
    (b'{"id": 1, "op": "status", "args": {"x": 1}}\n', "unknown argument"),
    (b'{"id": 1, "op": "bench", "args": {}}\n', "needs the argument 'model'"),
    (b'{"id": 1, "op": "bench", "args": {"model": "../../etc/passwd"}}\n', "sha256"),
    (b'{"id": 1, "op": "bench", "args": {"model": "int8", "threads": 0}}\n', "threads"),
    (b'{"id": 1, "op": "bench", "args": {"model": "int8", "threads": 1.0}}\n', "threads"),
    (b'{"id": 1, "op": "bench", "args": {"model": "int8", "xnnpack": 1}}\n', "xnnpack"),
    (b'{"id": 1, "op": "bench", "args": {"model": "int8", "run_s_min": 1e9}}\n', "run_s_min"),
    (b'{"id": 1, "op": "bench", "args": {"model": "int8", "runs_min": 9, "runs_max": 3}}\n',
     "runs_max"),
    (b'{"id": 1, "op": "bench", "args": {"model": "int8", "data": "latest"}}\n', "data"),
    (b'{"id": 1, "op": "remove", "args": {"ref": "int8"}}\n', "sha256"),
    (b'{"id": 1, "op": "hello", "args": {"protocol": "1"}}\n', "protocol"),
])
def test_invalid_requests(line: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_request(line)


def test_unknown_op_and_oversize() -> None:
    with pytest.raises(UnknownOpError):
        decode_request(b'{"id": 1, "op": "shell", "args": {"cmd": "rm -rf /"}}\n')
    big = b'{"id": 1, "op": "status", "pad": "' + b"x" * MAX_REQUEST_BYTES + b'"}\n'
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_request(big)
    with pytest.raises(ProtocolError):
        encode_request(Request(1, "status", {"pad": "x" * MAX_REQUEST_BYTES}))


def test_version_check() -> None:
    check_hello({"protocol": PROTOCOL_VERSION})
    with pytest.raises(ProtocolVersionError):
        check_hello({"protocol": PROTOCOL_VERSION + 1})


def test_response_roundtrip_and_nan_refused() -> None:
    ok = decode_response(encode_response(Response.success(3, {"x": [1, 2.5]})))
    assert ok.ok and ok.id == 3 and ok.result == {"x": [1, 2.5]}
    err = decode_response(encode_response(Response.failure(4, InputShapeError("m", "h"))))
    assert not err.ok and err.error == {"type": "InputShapeError", "message": "m", "hint": "h"}
    # a result that is not strict JSON becomes an error response, never invalid JSON
    bad = decode_response(encode_response(Response.success(5, {"x": float("nan")})))
    assert not bad.ok and bad.error["type"] == "ProtocolError"
    with pytest.raises(ProtocolError):
        decode_response(b'{"id": 1}\n')


# --- the client over a real socket pair, a thread playing the server --------------------------


def _serve(sock: socket.socket, answers: list[bytes]) -> threading.Thread:
    def run() -> None:
        f = sock.makefile("rb")
        for answer in answers:
            line = f.readline()
            if not line:
                break
            req = json.loads(line)
            sock.sendall(answer.replace(b"$ID", str(req["id"]).encode()))
        f.close()
        sock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _client_pair(answers: list[bytes], zero_arg_readline: bool = False) -> AgentClient:
    a, b = socket.socketpair()
    _serve(b, answers)
    a.settimeout(10)
    f = a.makefile("rb")
    if zero_arg_readline:  # what the host does: a readline that already knows its limit
        return AgentClient(a.sendall, lambda: f.readline(MAX_RESPONSE_BYTES), close=a.close)
    return AgentClient(a.sendall, f.readline, close=a.close)


def test_client_hello_and_call() -> None:
    c = _client_pair([
        b'{"id": $ID, "ok": true, "result": {"protocol": 1, "agent_version": "0.1.0"}}\n',
        b'{"id": $ID, "ok": true, "result": {"models": []}}\n',
    ], zero_arg_readline=True)
    assert c.hello()["protocol"] == 1
    assert c.call("list_models") == {"models": []}
    c.close()


def test_client_raises_the_named_error_with_hint() -> None:
    c = _client_pair([
        b'{"id": $ID, "ok": true, "result": {"protocol": 1}}\n',
        b'{"id": $ID, "ok": false, "error": {"type": "InputShapeError", "message": "m1",'
        b' "hint": "h1"}}\n',
        b'{"id": $ID, "ok": false, "error": {"type": "FutureError", "message": "m2",'
        b' "hint": "h2"}}\n',
    ])
    c.hello()
    with pytest.raises(InputShapeError) as e1:
        c.call("status")
    assert (e1.value.message, e1.value.hint) == ("m1", "h1")
    with pytest.raises(RemoteError) as e2:
        c.call("status")
    assert e2.value.remote_type == "FutureError" and e2.value.to_dict()["type"] == "FutureError"


def test_client_detects_closed_stream_and_id_mismatch() -> None:
    c = _client_pair([])
    with pytest.raises(AgentConnectionError):
        c.hello()
    c = _client_pair([b'{"id": 99, "ok": true, "result": {}}\n'])
    with pytest.raises(ProtocolError, match="does not match"):
        c.call("status")
    with pytest.raises(AgentConnectionError, match="unusable"):
        c.call("status")


def test_client_refuses_oversize_response() -> None:
    c = _client_pair([b'{"id": $ID, "ok": true, "result": {"x": "' + b"y" * 2000 + b'"}}\n'])
    c.max_response_bytes = 1000
    with pytest.raises(ProtocolError, match="longer than"):
        c.call("status")


def test_client_refuses_to_send_oversize_request() -> None:
    c = _client_pair([])
    with pytest.raises(ProtocolError):
        c.call("status", pad="x" * MAX_REQUEST_BYTES)


def test_unix_client_timeouts(tmp_path) -> None:
    """A slow answer times out a status call, but a bench call waits for its own budget."""
    path = tmp_path / "s.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)

    def serve() -> None:
        for _ in range(2):
            conn, _ = srv.accept()
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn: socket.socket) -> None:
        f = conn.makefile("rb")
        line = f.readline()
        while line:
            req = json.loads(line)
            if req["op"] != "hello":
                threading.Event().wait(1.5)  # a slow op
            try:
                conn.sendall(b'{"id": %d, "ok": true, "result": {"op": "%s"}}\n'
                             % (req["id"], req["op"].encode()))
            except OSError:
                break
            line = f.readline()
        f.close()
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        c = AgentClient.connect_unix(path, timeout_s=0.5)
        c.hello()
        with pytest.raises(AgentConnectionError, match="did not answer in time"):
            c.call("status")
        c.close()
        c = AgentClient.connect_unix(path, timeout_s=0.5)
        c.hello()
        assert c.call("bench", model="int8", timeout_s=5.0) == {"op": "bench"}
        assert c.timeout_s == 0.5
        c.close()
    finally:
        srv.close()


# --- the profile op ---------------------------------------------------------------------------


def test_profile_request_defaults_and_measure_queue() -> None:
    from edgeq.device.protocol import MEASURE_OPS

    req = decode_request(encode_request(Request(2, "profile", {"models": [SHA, "cd" * 32]})))
    assert req.args["models"] == [SHA, "cd" * 32]
    assert (req.args["rounds"], req.args["seed"], req.args["runs_min"]) == (10, 0, 50)
    assert req.args["xnnpack"] is True and req.args["threads"] == 1
    assert set(req.args) == {"models", "threads", "xnnpack", "runtime", "warmup_runs_min",
                             "runs_min", "rounds", "seed", "timeout_s"}
    assert "profile" in MEASURE_OPS  # queued with bench/evaluate, never beside them


@pytest.mark.parametrize("args, match", [
    ({}, "needs the argument 'models'"),
    ({"models": []}, "models"),
    ({"models": SHA}, "models"),
    ({"models": ["int8"]}, "models"),  # cut models only, by content name
    ({"models": [SHA.upper()]}, "models"),
    ({"models": ["../" + SHA[3:]]}, "models"),
    ({"models": [SHA] * 2049}, "models"),
    ({"models": [SHA], "rounds": 0}, "rounds"),
    ({"models": [SHA], "seed": -1}, "seed"),
    ({"models": [SHA], "run_s_min": 1.0}, "unknown argument"),  # a bench-only setting
    ({"models": [SHA], "data": "current"}, "unknown argument"),
])
def test_profile_request_refused(args: dict, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_request(encode_request(Request(1, "profile", args)))


def test_profile_plan_checks(tmp_path) -> None:
    from edgeq.device.errors import UsageError
    from edgeq.device.profile import make_plan, read_plan, round_order, write_plan_file

    plan = make_plan([(SHA, "/x/a.tflite")], warmup_runs_min=1, runs_min=5, rounds=2, seed=3)
    path = write_plan_file(plan, tmp_path)
    assert read_plan(path) == plan
    path.write_text(json.dumps({**plan, "models": [{"sha256": SHA}]}))
    with pytest.raises(UsageError, match="each model"):
        read_plan(path)
    path.write_text(json.dumps({**plan, "shell": "rm -rf /"}))
    with pytest.raises(UsageError, match="unknown key"):
        read_plan(path)
    orders = {tuple(round_order(8, 3, r)) for r in range(5)}
    assert len(orders) > 1 and all(sorted(o) == list(range(8)) for o in orders)
    assert round_order(8, 3, 1) == round_order(8, 3, 1)  # reproducible from seed and round
