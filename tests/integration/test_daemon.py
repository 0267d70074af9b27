"""The real agent daemon as a subprocess on a real Unix socket, with real LiteRT and models.

Every bad case (malformed JSON, oversize request, unknown op, unknown model, corrupt and
truncated .tflite, a corrupted store file, input-shape mismatch, a crashed and a hung worker,
protocol version mismatch) must come back as a clear typed error, and the daemon must still
answer `status` afterwards.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from edgeq.device.client import AgentClient  # noqa: E402
from edgeq.device.errors import (  # noqa: E402
    AgentConnectionError,
    DaemonNotRunningError,
    InputShapeError,
    IntegrityError,
    ModelLoadError,
    ModelNotFoundError,
    ProtocolError,
    ProtocolVersionError,
    StoreError,
    UnknownOpError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from edgeq.device.store import Store  # noqa: E402
from test_device_runtime import device_model_paths  # noqa: E402


@pytest.fixture(scope="session")
def dev_models(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real models (see test_device_runtime.device_model_paths)."""
    return device_model_paths(request, tmp_path_factory)


FAST = {"warmup_runs_min": 2, "warmup_s_min": 0.0, "runs_min": 10, "run_s_min": 0.05,
        "runs_max": 1000, "eval_limit": 100}


def _agent_argv(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "edgeq.device", "--home", str(home), *args]


def _wait_for_socket(path: Path, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited early: {proc.stderr.read().decode()[-2000:]}")
        try:
            with AgentClient.connect_unix(path, 5) as c:
                c.hello()
                return
        except (AgentConnectionError, OSError):
            time.sleep(0.05)
    raise AssertionError("daemon did not come up")


class Daemon:
    def __init__(self, home: Path, proc: subprocess.Popen, shas: dict[str, str]) -> None:
        self.home = home
        self.proc = proc
        self.shas = shas
        self.socket = home / "agent.sock"

    def client(self, timeout_s: float = 60.0) -> AgentClient:
        c = AgentClient.connect_unix(self.socket, timeout_s)
        c.hello()
        return c

    def status(self) -> dict[str, Any]:
        with self.client() as c:
            return c.call("status")

    def raw(self, *lines: bytes) -> list[dict[str, Any]]:
        """Send raw lines on a fresh connection; every response line until the daemon closes
        or one response per line arrived."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(str(self.socket))
        f = s.makefile("rb")
        out = []
        try:
            for line in lines:
                try:
                    s.sendall(line)
                    resp = f.readline(1 << 26)
                except (ConnectionResetError, BrokenPipeError):
                    resp = b""
                if not resp:
                    out.append({"closed": True})
                    break
                out.append(json.loads(resp))
            else:
                return out
        finally:
            f.close()
            s.close()
        return out


@pytest.fixture(scope="module")
def daemon(dev_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("edgeq-home")
    store = Store(home)
    store.ensure_dirs()
    shas = {"float32": store.add_model(dev_models["float32"]),
            "int8": store.add_model(dev_models["int8"]),
            "eval": store.add_data(dev_models["eval"])}
    good = dev_models["int8"].read_bytes()
    src = tmp_path_factory.mktemp("bad")
    (src / "garbage.tflite").write_bytes(b"\x00GARBAGE" * 50)
    (src / "truncated.tflite").write_bytes(good[: len(good) // 2])
    (src / "victim.tflite").write_bytes(good + b"")  # same content: same sha as int8
    np.savez(src / "wrong_shape.npz", images=np.zeros((8, 32, 32), np.uint8),
             labels=np.zeros(8, np.uint8))
    shas["garbage"] = store.add_model(src / "garbage.tflite")
    shas["truncated"] = store.add_model(src / "truncated.tflite")
    shas["wrong_shape"] = store.add_data(src / "wrong_shape.npz")
    # a stored file whose bytes no longer match its name (bit rot / a half-finished copy)
    (src / "rot.tflite").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    shas["rot"] = store.add_model(src / "rot.tflite")
    store.model_path(shas["rot"]).write_bytes(good[:100])
    store.write_deployment({"model_name": "tiny", "float32": shas["float32"],
                            "int8": shas["int8"], "eval_data": shas["eval"]})
    proc = subprocess.Popen(_agent_argv(home, "serve"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _wait_for_socket(home / "agent.sock", proc)
        yield Daemon(home, proc, shas)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _still_serving(d: Daemon) -> None:
    st = d.status()
    assert st["pid"] == d.proc.pid and st["busy"] is False and st["worker_pid"] is None


# --- happy path ------------------------------------------------------------------------------


def test_socket_pidfile_and_status(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
    assert (daemon.home / "agent.pid").read_text().strip() == str(daemon.proc.pid)
    with daemon.client() as c:
        assert c.server["protocol"] == 1 and c.server["runtime"]["name"] == "ai-edge-litert"
        st = c.call("status")
    assert st["home"] == str(daemon.home) and st["uptime_s"] >= 0
    assert st["deployment"]["int8"] == daemon.shas["int8"]
    assert {m["sha256"] for m in st["store"]["models"]} >= {daemon.shas["float32"],
                                                            daemon.shas["int8"]}
    # the long-running daemon stays small: numpy and LiteRT live only in the workers
    maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
    assert "numpy" not in maps and "ai_edge_litert" not in maps and "_pywrap" not in maps


def test_list_models_and_verify(daemon: Daemon) -> None:
    with daemon.client() as c:
        listing = c.call("list_models")
        kinds = {m["sha256"]: m["kinds"] for m in listing["models"]}
        assert kinds[daemon.shas["int8"]] == ["int8"]
        assert c.call("verify", ref="int8")["ok"] is True
        report = c.call("verify")
    bad = {f["sha256"] for f in report["files"] if not f["ok"]}
    assert report["ok"] is False and bad == {daemon.shas["rot"]}


def test_bench_by_kind_with_current_data(daemon: Daemon) -> None:
    with daemon.client() as c:
        doc = c.call("bench", model="int8", data="current", **FAST)
    assert doc["schema"] == "edgeq.bench/1"
    assert doc["model"]["sha256"] == daemon.shas["int8"]
    assert doc["accuracy"]["count"] == 100 and doc["timing"]["runs"] >= 10
    assert doc["agent"]["worker_pid"] not in (daemon.proc.pid, os.getpid())
    assert doc["environment"]["runtime"]["name"] == "ai-edge-litert"


def test_evaluate_and_bench_by_sha_without_data(daemon: Daemon) -> None:
    with daemon.client() as c:
        ev = c.call("evaluate", model=daemon.shas["float32"], eval_limit=50)
        doc = c.call("bench", model=daemon.shas["float32"], xnnpack=False, **{
            k: v for k, v in FAST.items() if k != "eval_limit"})
    assert ev["schema"] == "edgeq.evaluate/1" and ev["accuracy"]["count"] == 50
    assert doc["accuracy"] is None and doc["runtime"]["delegated_nodes"] == 0


def test_benches_never_overlap(daemon: Daemon) -> None:
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def one(kind: str) -> None:
        try:
            with daemon.client() as c:
                results.append(c.call("bench", model=kind, runs_min=10, run_s_min=0.3,
                                      warmup_s_min=0.0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in ("float32", "int8", "int8")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 3
    spans = sorted((r["agent"]["worker_started_unix_s"], r["agent"]["worker_finished_unix_s"])
                   for r in results)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end  # one at a time
    assert max(r["agent"]["queued_s"] for r in results) > 0.2  # somebody waited


# --- bad requests ----------------------------------------------------------------------------


def test_malformed_json_keeps_the_connection(daemon: Daemon) -> None:
    out = daemon.raw(b'{"id": 0, "op": "hello", "args": {"protocol": 1}}\n', b"{nope\n",
                     b"[" * 500_000 + b"\n", b'{"id": 3, "op": "status"}\n')
    assert out[0]["ok"] is True
    assert out[1]["ok"] is False and out[1]["error"]["type"] == "ProtocolError"
    assert out[2]["ok"] is False and out[2]["error"]["type"] == "ProtocolError"
    assert out[3]["ok"] is True and out[3]["id"] == 3


def test_oversize_request_closes_only_that_connection(daemon: Daemon) -> None:
    big = b'{"id": 1, "op": "status", "args": {"x": "' + b"a" * (1 << 20) + b'"}}\n'
    out = daemon.raw(b'{"id": 0, "op": "hello", "args": {"protocol": 1}}\n', big,
                     b'{"id": 2, "op": "status"}\n')
    assert out[1]["ok"] is False and out[1]["error"]["type"] == "ProtocolError"
    assert "1048576" in out[1]["error"]["message"]
    assert out[2:] == [] or out[2] == {"closed": True}
    _still_serving(daemon)


def test_unknown_op_and_bad_args(daemon: Daemon) -> None:
    with daemon.client() as c:
        with pytest.raises(UnknownOpError):
            c.call("exec", cmd="id")
        with pytest.raises(ProtocolError, match="threads"):
            c.call("bench", model="int8", threads=-3)
        assert c.call("status")["pid"] == daemon.proc.pid  # same connection still works


def test_protocol_version_mismatch_and_missing_hello(daemon: Daemon) -> None:
    c = AgentClient.connect_unix(daemon.socket, 10)
    with pytest.raises(ProtocolVersionError) as exc:
        c.hello(protocol=2)
    assert "edgeq deploy" in exc.value.hint
    c.close()
    out = daemon.raw(b'{"id": 5, "op": "status"}\n', b'{"id": 6, "op": "status"}\n')
    assert out[0]["ok"] is False and "hello" in out[0]["error"]["message"]
    assert out[1:] == [] or out[1] == {"closed": True}
    _still_serving(daemon)


@pytest.mark.parametrize("case, error", [
    ("unknown", ModelNotFoundError),
    ("garbage", ModelLoadError),
    ("truncated", ModelLoadError),
    ("rot", IntegrityError),
    ("wrong_shape", InputShapeError),
])
def test_bad_models_and_data(daemon: Daemon, case: str, error: type) -> None:
    args: dict[str, Any] = {"model": "int8", **FAST}
    if case == "unknown":
        args["model"] = "0" * 64
    elif case == "wrong_shape":
        args["data"] = daemon.shas["wrong_shape"]
    else:
        args["model"] = daemon.shas[case]
    with daemon.client() as c:
        with pytest.raises(error) as exc:
            c.call("bench", **args)
        assert exc.value.hint
        assert c.call("status")["busy"] is False  # same connection, daemon fine
    _still_serving(daemon)


def _wait_for_worker(daemon: Daemon, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = daemon.status()["worker_pid"]
        if pid:
            return int(pid)
        time.sleep(0.02)
    raise AssertionError("no worker started")


def _bench_in_thread(daemon: Daemon, args: dict[str, Any]) -> tuple[threading.Thread, list]:
    box: list = []

    def run() -> None:
        try:
            with daemon.client(timeout_s=120) as c:
                box.append(c.call("bench", **args))
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            box.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_crashed_worker(daemon: Daemon) -> None:
    t, box = _bench_in_thread(daemon, {"model": "int8", "runs_min": 10, "run_s_min": 60.0,
                                       "runs_max": 10**6})
    pid = _wait_for_worker(daemon)
    os.kill(pid, signal.SIGSEGV)  # what a bad model does to the interpreter
    t.join(60)
    assert isinstance(box[0], WorkerCrashedError) and "SIGSEGV" in box[0].message
    _still_serving(daemon)


def test_hung_worker_times_out(daemon: Daemon) -> None:
    t0 = time.monotonic()
    t, box = _bench_in_thread(daemon, {"model": "int8", "timeout_s": 2.0, **FAST})
    pid = _wait_for_worker(daemon)
    os.kill(pid, signal.SIGSTOP)  # frozen: never finishes on its own
    t.join(60)
    assert isinstance(box[0], WorkerTimeoutError) and "2 s" in box[0].message
    assert time.monotonic() - t0 < 30
    _still_serving(daemon)


def test_remove(daemon: Daemon, dev_models: dict[str, Path]) -> None:
    with daemon.client() as c:
        with pytest.raises(StoreError, match="deployed"):
            c.call("remove", ref=daemon.shas["int8"])
        removed = c.call("remove", ref=daemon.shas["garbage"])
        assert removed["removed"][0]["kind"] == "model"
        with pytest.raises(ModelNotFoundError):
            c.call("bench", model=daemon.shas["garbage"])
    assert not Store(daemon.home).model_path(daemon.shas["garbage"]).exists()


# --- command line: bridge, status, stop, detach, stale socket --------------------------------


def test_bridge_relays_to_the_daemon(daemon: Daemon) -> None:
    proc = subprocess.Popen(_agent_argv(daemon.home, "bridge"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    def write(data: bytes) -> None:
        proc.stdin.write(data)
        proc.stdin.flush()

    c = AgentClient(write, lambda: proc.stdout.readline(1 << 26))
    assert c.hello()["pid"] == daemon.proc.pid
    assert c.call("status")["pid"] == daemon.proc.pid
    with pytest.raises(ModelNotFoundError):
        c.call("bench", model="f" * 64)
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


def test_cli_status_json(daemon: Daemon) -> None:
    r = subprocess.run(_agent_argv(daemon.home, "status", "--json"), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pid"] == daemon.proc.pid


def test_lifecycle_detach_stale_socket_and_stop(tmp_path: Path) -> None:
    home = tmp_path / "h"
    # no daemon: bridge/status/stop say so and exit non-zero
    for cmd in ("bridge", "status", "stop"):
        r = subprocess.run(_agent_argv(home, cmd), capture_output=True, timeout=30)
        assert r.returncode == 3, (cmd, r.stderr)
        assert r.stderr.decode().startswith("error: no ")
    # a stale socket left by a crashed daemon is replaced
    home.mkdir(exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(home / "agent.sock"))
    stale.close()
    r = subprocess.run(_agent_argv(home, "serve", "--detach"), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pid = int((home / "agent.pid").read_text())
    try:
        assert f"pid {pid}" in r.stdout.decode()
        with AgentClient.connect_unix(home / "agent.sock", 10) as c:
            assert c.hello()["pid"] == pid
        # a second daemon on the same socket is refused; the first keeps running
        r2 = subprocess.run(_agent_argv(home, "serve"), capture_output=True, timeout=60)
        assert r2.returncode != 0 and b"already serves" in r2.stderr
        assert (home / "logs" / "agent.log").read_text().count("serving") == 1
        r3 = subprocess.run(_agent_argv(home, "stop"), capture_output=True, timeout=30)
        assert r3.returncode == 0, r3.stderr
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not (home / "agent.sock").exists() and not (home / "agent.pid").exists()
    with pytest.raises(DaemonNotRunningError):
        AgentClient.connect_unix(home / "agent.sock", 5)


def test_sigterm_shuts_down_cleanly(dev_models: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "h2"
    proc = subprocess.Popen(_agent_argv(home, "serve"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _wait_for_socket(home / "agent.sock", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (home / "agent.sock").exists() and not (home / "agent.pid").exists()


# --- limits: connections, handshake, a client that leaves, two serve at once, stop mid-run ---


def _own_daemon(home: Path, dev_models: dict[str, Path], *flags: str) -> subprocess.Popen:
    """A daemon of its own (home with the int8 model deployed), started with `flags`."""
    store = Store(home)
    store.ensure_dirs()
    shas = {k: store.add_model(dev_models[k]) for k in ("float32", "int8")}
    store.write_deployment({"model_name": "tiny", **shas,
                            "eval_data": store.add_data(dev_models["eval"])})
    proc = subprocess.Popen(_agent_argv(home, "serve", *flags), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _wait_for_socket(home / "agent.sock", proc)
    return proc


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_connections_are_capped(dev_models: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "cap"
    proc = _own_daemon(home, dev_models, "--max-clients", "2")
    try:
        a = AgentClient.connect_unix(home / "agent.sock", 10)
        a.hello()
        b = AgentClient.connect_unix(home / "agent.sock", 10)
        b.hello()
        extra = AgentClient.connect_unix(home / "agent.sock", 10)
        with pytest.raises(AgentConnectionError, match="already serves 2 connections") as info:
            extra.hello()
        assert "--max-clients" in info.value.hint
        extra.close()
        assert a.call("status")["clients"] == 2  # the two admitted ones still work
        b.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # its place frees up once it is gone
            try:
                with AgentClient.connect_unix(home / "agent.sock", 10) as c:
                    c.hello()
                    break
            except AgentConnectionError:
                time.sleep(0.1)
        else:
            raise AssertionError("a freed place was not given to a new client")
        a.close()
    finally:
        _end(proc)


def test_a_silent_client_is_dropped_after_the_hello_time_out(daemon: Daemon) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(daemon.socket))
    t0 = time.monotonic()
    data = s.makefile("rb").readline()  # sends nothing: the daemon speaks, then closes
    waited = time.monotonic() - t0
    s.close()
    assert 5 < waited < 20, waited
    doc = json.loads(data)
    assert doc["ok"] is False and "no hello within 10 s" in doc["error"]["message"]
    _still_serving(daemon)


def test_a_client_that_leaves_mid_bench_frees_the_daemon(daemon: Daemon) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(daemon.socket))
    s.sendall(b'{"id": 0, "op": "hello", "args": {"protocol": 1}}\n')
    f = s.makefile("rb")
    assert json.loads(f.readline())["ok"]
    s.sendall(json.dumps({"id": 1, "op": "bench", "args": {
        "model": "int8", "runs_min": 10, "run_s_min": 120.0, "runs_max": 10**6,
        "timeout_s": 600}}).encode() + b"\n")
    pid = _wait_for_worker(daemon)
    assert daemon.status()["active_runs"] == 1
    f.close()
    s.close()  # the client goes away (its host was killed, its SSH link cut)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and _worker_alive(pid):
        time.sleep(0.05)
    assert not _worker_alive(pid), "the worker kept running for a client that left"
    stopped_s = time.monotonic() - t0
    st = daemon.status()
    assert st["busy"] is False and st["worker_pid"] is None and st["active_runs"] == 0
    with daemon.client() as c:  # the measurement lock is free: the next bench runs now
        doc = c.call("bench", model="int8", **FAST)
    assert doc["agent"]["queued_s"] < 1.0
    print(f"\nworker stopped {stopped_s:.2f} s after its client left")


def _worker_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b")")[-1].split()[0] != b"Z"
    except OSError:
        return False


def test_two_serve_at_once_leave_one_daemon(tmp_path: Path) -> None:
    for i in range(4):
        home = tmp_path / f"race{i}"
        home.mkdir()
        procs = [subprocess.Popen(_agent_argv(home, "serve"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for _ in range(2)]
        try:
            time.sleep(3)
            alive = [p for p in procs if p.poll() is None]
            assert len(alive) == 1, [p.stderr.read() for p in procs if p.poll() is not None]
            dead = [p for p in procs if p.poll() is not None][0]
            assert b"already serves" in dead.stderr.read()
            with AgentClient.connect_unix(home / "agent.sock", 10) as c:
                assert c.hello()["pid"] == alive[0].pid
            assert (home / "agent.pid").read_text().strip() == str(alive[0].pid)
        finally:
            for p in procs:
                _end(p)


def test_stopping_the_daemon_mid_bench_blames_the_stop_not_the_model(
        dev_models: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "stop"
    proc = _own_daemon(home, dev_models)
    box: list = []
    try:
        def run() -> None:
            try:
                with AgentClient.connect_unix(home / "agent.sock", 60) as c:
                    c.hello()
                    box.append(c.call("bench", model="int8", runs_min=10, run_s_min=60.0,
                                      runs_max=10**6))
            except BaseException as exc:  # noqa: BLE001 - inspected below
                box.append(exc)

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with AgentClient.connect_unix(home / "agent.sock", 10) as c:
                c.hello()
                if c.call("status")["worker_pid"]:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # what deploy.sh's `agent stop` does
        t.join(30)
        assert proc.wait(timeout=15) == 0
    finally:
        _end(proc)
    err = box[0]
    assert isinstance(err, Exception) and "daemon was stopped during the run" in str(err)
    assert "crashed" not in str(err)


def test_the_worker_reports_the_sha256_of_the_file_it_measured(
        dev_models: dict[str, Path]) -> None:
    from edgeq.device.fileutil import sha256_file

    asked = sha256_file(dev_models["float32"])  # what the daemon believes it is measuring
    r = subprocess.run([sys.executable, "-m", "edgeq.device", "bench", str(dev_models["int8"]),
                        "--sha256", asked, "--runs-min", "2", "--run-s-min", "0",
                        "--warmup-runs-min", "1", "--warmup-s-min", "0", "--json"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"]["sha256"] == sha256_file(dev_models["int8"]) != asked
    assert doc["model"]["path"] == str(dev_models["int8"])


def test_current_json_must_name_sha256s(daemon: Daemon) -> None:
    current = daemon.home / "deployments" / "current.json"
    good = current.read_bytes()
    try:
        doc = json.loads(good)
        doc["int8"] = "../../../etc/passwd"
        current.write_text(json.dumps(doc))
        with daemon.client() as c:
            with pytest.raises(StoreError, match="int8 is not a 64-hex sha256"):
                c.call("bench", model="int8", **FAST)
    finally:
        current.write_bytes(good)
    _still_serving(daemon)


def test_bridge_gives_up_on_a_stopped_daemon_with_a_full_backlog(
        dev_models: dict[str, Path], tmp_path: Path) -> None:
    """A SIGSTOPped daemon accepts nothing: once its listen backlog is full, connect blocks;
    `bridge` gives up after BRIDGE_CONNECT_TIMEOUT_S with a one-line error."""
    import socket as socket_module

    from edgeq.device.daemon import BRIDGE_CONNECT_TIMEOUT_S

    proc = _own_daemon(tmp_path / "home", dev_models)
    held: list[socket_module.socket] = []
    try:
        proc.send_signal(signal.SIGSTOP)
        while True:  # fill the backlog: the first connect that would block ends it
            s = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
            s.setblocking(False)
            held.append(s)
            try:
                s.connect(str(tmp_path / "home" / "agent.sock"))
            except BlockingIOError:
                break
            assert len(held) < 1000
        t0 = time.monotonic()
        bridge = subprocess.run(_agent_argv(tmp_path / "home", "bridge"), input=b"",
                                capture_output=True, timeout=BRIDGE_CONNECT_TIMEOUT_S + 30)
        took = time.monotonic() - t0
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGCONT)
        _end(proc)
    err = bridge.stderr.decode()
    print(f"\nbridge to a stopped daemon gave up after {took:.1f} s: {err.strip()[:120]}")
    assert bridge.returncode != 0 and "did not accept the connection" in err
    assert took < BRIDGE_CONNECT_TIMEOUT_S + 15 and "Traceback" not in err


# --- the profile op --------------------------------------------------------------------------


def _profile_models(daemon: Daemon) -> list[str]:
    """The two stored models copied, content-named, into the store's profiles/ directory
    (where the host's edgeq profile pushes its cut models)."""
    from edgeq.device.profile import profile_model_path

    shas = [daemon.shas["float32"], daemon.shas["int8"]]
    store = Store(daemon.home)
    for sha in shas:
        dst = Path(profile_model_path(str(daemon.home), sha))
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(store.model_path(sha).read_bytes())
    return shas


def test_profile_times_every_model_in_a_worker(daemon: Daemon) -> None:
    shas = _profile_models(daemon)
    with daemon.client() as c:
        doc = c.call("profile", models=shas, runs_min=9, rounds=3, warmup_runs_min=1)
        off = c.call("profile", models=shas[1:], runs_min=2, rounds=1, xnnpack=False)
    assert doc["schema"] == "edgeq.profile_run/1"
    assert [m["sha256"] for m in doc["models"]] == shas
    for m in doc["models"]:
        assert m["runs"] == 9 and len(m["latency_ms_round_p50"]) == 3
        assert m["latency_ms_p50"] > 0 and m["total_nodes"] > 0
    assert sorted(doc["order"]) == [0, 1]
    assert doc["agent"]["worker_pid"] not in (None, daemon.proc.pid)
    assert any(m["delegated_nodes"] for m in doc["models"])  # XNNPACK on by default
    assert off["models"][0]["delegated_nodes"] == 0 and off["settings"]["xnnpack"] is False
    assert not list((daemon.home / "profiles").glob("plan-*"))  # the plan file is removed
    _still_serving(daemon)


def test_profile_and_bench_never_overlap(daemon: Daemon) -> None:
    shas = _profile_models(daemon)
    t, box = _bench_in_thread(daemon, {"model": "int8", "runs_min": 10, "run_s_min": 1.0,
                                       "warmup_s_min": 0.0})
    _wait_for_worker(daemon)
    with daemon.client() as c:
        prof = c.call("profile", models=shas, runs_min=4, rounds=2)
    t.join(120)
    bench = box[0]
    assert isinstance(bench, dict), bench
    assert prof["agent"]["worker_started_unix_s"] >= bench["agent"]["worker_finished_unix_s"]
    assert prof["agent"]["queued_s"] > 0.1


def test_profile_of_missing_or_corrupt_models(daemon: Daemon) -> None:
    shas = _profile_models(daemon)
    with daemon.client() as c:
        with pytest.raises(ModelNotFoundError, match="profiles") as missing:
            c.call("profile", models=[shas[0], "0" * 64])
        assert "edgeq profile" in missing.value.hint
        from edgeq.device.profile import profile_model_path

        Path(profile_model_path(str(daemon.home), shas[0])).write_bytes(b"TFL3" * 10)
        with pytest.raises(IntegrityError):
            c.call("profile", models=shas)
    _still_serving(daemon)
