"""bench-remote end to end: real deploy, real agent, real daemon on a real Unix socket.

`--host local` with a device directory in tmp_path, with and without a running daemon; then
over the real sshd of tests/integration/conftest.py (deploy + `edgeq bench-remote --json`
through the CLI as a subprocess). Small run counts and --eval-limit keep it fast.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from edgeq.device.store import Layout
from edgeq.host.bench_remote import (
    DeploymentMismatchError,
    NotDeployedError,
    bench_remote,
)
from edgeq.host.history import History
from edgeq.host.link.local import LocalConnection

EVAL_LIMIT = 200
FAST = {"runs_min": 15, "run_s_min": 0.05, "warmup_runs_min": 2, "warmup_s_min": 0.01}
MODEL_KEYS = ("size_bytes", "sha256", "accuracy", "latency_ms_p50", "latency_ms_p90",
              "latency_ms_p99", "throughput_samples_per_s", "init_ms", "peak_rss_bytes",
              "runtime", "result")


def _deploy_local(artifacts: Path, device_dir: Path) -> None:
    from edgeq.host.deploy import deploy

    with LocalConnection() as conn:
        # the tests start (or not) the daemon themselves
        deploy(conn, artifacts, device_dir=str(device_dir), start_daemon=False)


@pytest.fixture(scope="module")
def local_device(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_artifacts deployed to a device directory on this machine."""
    device_dir = tmp_path_factory.mktemp("device") / "edgeq"
    _deploy_local(tiny_artifacts, device_dir)
    assert (device_dir / "deployments" / "current.json").is_file()
    return device_dir


@pytest.fixture()
def daemon(local_device: Path) -> Iterator[subprocess.Popen]:
    """The real daemon serving local_device's store on its Unix socket."""
    sock = local_device / "agent.sock"
    log = open(local_device.parent / "daemon.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "edgeq.device", "--home", str(local_device),
                             "serve"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {proc.returncode}: "
                    f"{(local_device.parent / 'daemon.log').read_text()[-2000:]}")
            if sock.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(sock))
                    break
                except OSError:
                    pass
            assert time.monotonic() < deadline, "daemon did not open its socket in 30 s"
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _host_predictions(artifacts: Path, kind: str) -> np.ndarray:
    """The same model run by LiteRT in this process, for cross-checking the device."""
    from ai_edge_litert.interpreter import Interpreter

    data = np.load(artifacts / "eval.npz")
    images = data["images"][:EVAL_LIMIT]
    interp = Interpreter(model_path=str(artifacts / f"model_{kind}.tflite"))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    preds = []
    for img in images:
        x = img.astype(np.float32).reshape(inp["shape"])
        scale, zero = inp["quantization"]
        if inp["dtype"] != np.float32:
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        preds.append(int(np.argmax(interp.get_tensor(out["index"])[0])))
    return np.asarray(preds)


def _check_doc(doc: dict[str, Any], artifacts: Path) -> None:
    assert doc["schema"] == "edgeq.compare/1"
    for kind in ("float32", "int8"):
        entry = doc["models"][kind]
        for key in MODEL_KEYS:
            assert key in entry, f"models.{kind}.{key} missing"
        manifest = json.loads((artifacts / "manifest.json").read_text())
        assert entry["sha256"] == manifest["models"][kind]["sha256"]
        assert entry["size_bytes"] == (artifacts / f"model_{kind}.tflite").stat().st_size
        assert entry["latency_ms_p50"] > 0 and entry["throughput_samples_per_s"] > 0
        assert entry["peak_rss_bytes"] > 10 * 2**20
        assert entry["eval_count"] == EVAL_LIMIT
    assert 0.9 < doc["agreement"] <= 1.0
    assert doc["device"]["machine"] and "emulated" in doc["device"]
    assert doc["ratios"]["size_bytes"] < 0.35
    assert doc["settings"]["rounds"] == 2 and doc["settings"]["order"] == "ABBA"




def test_one_shot_when_no_daemon_runs(local_device: Path, tiny_artifacts: Path,
                                      tmp_path: Path) -> None:
    assert not (local_device / "agent.sock").exists()
    events: list[tuple[str, dict]] = []
    progress: list[tuple[int, int]] = []
    history = History(tmp_path / "h.sqlite3")
    with LocalConnection() as conn:
        doc = bench_remote(conn, artifacts_dir=tiny_artifacts, device_dir=str(local_device),
                           rounds=2, eval_limit=EVAL_LIMIT, history=history,
                           progress=lambda d, t: progress.append((d, t)),
                           events=lambda n, d: events.append((n, d)), **FAST)
    _check_doc(doc, tiny_artifacts)
    assert doc["settings"]["path"] == "one-shot" and doc["settings"]["daemon_error"]
    # ABBA, and only each model's first run evaluates
    measured = [(d["round"], d["kind"], d["evaluate"]) for n, d in events if n == "measure"]
    assert measured == [(0, "float32", True), (0, "int8", True),
                        (1, "int8", False), (1, "float32", False)]
    assert progress[-1] == (4, 4)
    # two rounds pooled
    for kind in ("float32", "int8"):
        entry = doc["models"][kind]
        assert len(entry["rounds"]) == 2
        assert entry["runs"] == sum(r["runs"] for r in entry["rounds"]) >= 30
    # the device's predictions are LiteRT's on this host, image for image
    p32 = _host_predictions(tiny_artifacts, "float32")
    p8 = _host_predictions(tiny_artifacts, "int8")
    assert doc["models"]["float32"]["result"]["accuracy"]["predictions"] == p32.tolist()
    assert doc["models"]["int8"]["result"]["accuracy"]["predictions"] == p8.tolist()
    assert doc["agreement"] == pytest.approx(float(np.mean(p32 == p8)))
    # stored with its id
    assert doc["run_id"] == history.latest()["run_id"]
    assert history.get(doc["run_id"])["models"]["int8"]["sha256"] == doc["models"]["int8"]["sha256"]


def test_through_the_daemon(local_device: Path, tiny_artifacts: Path,
                            daemon: subprocess.Popen) -> None:
    with LocalConnection() as conn:
        doc = bench_remote(conn, artifacts_dir=tiny_artifacts, device_dir=str(local_device),
                           rounds=2, eval_limit=EVAL_LIMIT, **FAST)
    _check_doc(doc, tiny_artifacts)
    assert doc["settings"]["path"] == "daemon" and doc["settings"]["daemon_error"] is None
    assert daemon.poll() is None, "the daemon keeps serving"
    p8 = _host_predictions(tiny_artifacts, "int8")
    assert doc["models"]["int8"]["result"]["accuracy"]["predictions"] == p8.tolist()


def test_not_deployed_and_mismatch(tmp_path: Path, local_device: Path,
                                   tiny_artifacts: Path) -> None:
    empty = tmp_path / "empty-device"
    empty.mkdir()
    with LocalConnection() as conn:
        with pytest.raises(NotDeployedError) as info:
            bench_remote(conn, device_dir=str(empty), rounds=1)
        assert "edgeq deploy" in info.value.hint
        other = tmp_path / "other-artifacts"
        shutil.copytree(tiny_artifacts, other)
        manifest = json.loads((other / "manifest.json").read_text())
        manifest["models"]["int8"]["sha256"] = "0" * 64
        (other / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(DeploymentMismatchError) as info2:
            bench_remote(conn, artifacts_dir=other, device_dir=str(local_device), rounds=1)
        assert "int8" in info2.value.message and "edgeq deploy" in info2.value.hint






def test_one_shot_passes_the_given_settings(local_device: Path, tiny_artifacts: Path) -> None:
    """Settings given to bench_remote reach the device's measurement (one-shot path)."""
    with LocalConnection() as conn:
        doc = bench_remote(conn, artifacts_dir=tiny_artifacts, device_dir=str(local_device),
                           rounds=1, eval_limit=50, use_daemon=False, threads=2,
                           xnnpack=False, runs_max=20, **FAST)
    for kind in ("float32", "int8"):
        ran = doc["models"][kind]["result"]["settings"]
        assert ran["threads"] == 2 and ran["xnnpack"] is False and ran["runs_max"] == 20
        assert ran["runs_min"] == FAST["runs_min"] and ran["eval_limit"] == 50
        assert FAST["runs_min"] <= doc["models"][kind]["runs"] <= 20  # capped by runs_max
        assert doc["models"][kind]["eval_count"] == 50
    assert doc["settings"]["runs_max"] == 20 and doc["settings"]["threads"] == 2
    assert doc["settings"]["xnnpack"] is False and doc["settings"]["warmup_s_min"] == 0.01


@pytest.mark.sshd
@pytest.mark.timeout(1500)
def test_over_real_sshd_daemon_then_one_shot(sshd_device: Any, tiny_artifacts: Path,
                                             tmp_path: Path) -> None:
    """deploy over SSH (library), then `edgeq bench-remote --json` (CLI) through the daemon
    bridged over the SSH channel, then again with the daemon stopped (one-shot fallback)."""
    from edgeq.host.deploy import deploy
    from edgeq.host.link import open_connection

    device_dir = str(tmp_path / "device")
    env = dict(os.environ, EDGEQ_HISTORY_DB=str(tmp_path / "h.sqlite3"))
    with open_connection(sshd_device.alias, ssh_config=sshd_device.ssh_config) as conn:
        with pytest.raises(NotDeployedError, match="nothing is deployed"):
            bench_remote(conn, device_dir=device_dir, rounds=1)
        deployed = deploy(conn, tiny_artifacts, device_dir=device_dir, start_daemon=True)
        assert deployed["deployment"]["int8"] == json.loads(
            (tiny_artifacts / "manifest.json").read_text())["models"]["int8"]["sha256"]
        try:
            common = ["bench-remote", str(tiny_artifacts), "--host", sshd_device.alias,
                      "--ssh-config", str(sshd_device.ssh_config), "--device-dir", device_dir,
                      "--eval-limit", str(EVAL_LIMIT), "--runs-min", "10", "--run-s-min", "0.05",
                      "--json"]
            via_daemon = _edgeq(*common, env=env)
            assert via_daemon.returncode == 0, via_daemon.stderr[-3000:]
            doc = json.loads(via_daemon.stdout)
            _check_doc(doc, tiny_artifacts)
            assert doc["settings"]["path"] == "daemon", doc["settings"]["daemon_error"]
            assert doc["host"].endswith(f":{sshd_device.port}") or sshd_device.alias in doc["host"]
        finally:
            stopped = conn.run(Layout(device_dir).agent_argv("stop"), timeout_s=60)
        assert stopped.ok, stopped.stderr[-2000:]
        one_shot = _edgeq(*common, "--rounds", "1", env=env)
        assert one_shot.returncode == 0, one_shot.stderr[-3000:]
        doc2 = json.loads(one_shot.stdout)
        assert doc2["settings"]["path"] == "one-shot" and doc2["settings"]["rounds"] == 1
        # the same device gives the same predictions either way
        for kind in ("float32", "int8"):
            assert (doc2["models"][kind]["result"]["accuracy"]["predictions"]
                    == doc["models"][kind]["result"]["accuracy"]["predictions"])
    rows = History(tmp_path / "h.sqlite3").list()
    assert [r["run_id"] for r in rows] == [doc2["run_id"], doc["run_id"]] == [2, 1]
    assert rows[0]["host"] == doc2["host"]


def _edgeq(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    # in an empty directory: commands without an artifacts argument default to ./runs/mnist,
    # which `make demo` leaves in the checkout the tests run from
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "edgeq.host", *args], capture_output=True,
                              text=True, env=env, timeout=timeout, cwd=cwd)


def test_cli_bench_remote_local_and_history(local_device: Path, tiny_artifacts: Path,
                                            tmp_path: Path) -> None:
    env = dict(os.environ, EDGEQ_HISTORY_DB=str(tmp_path / "h.sqlite3"), COLUMNS="160")
    common = ["--host", "local", "--device-dir", str(local_device), "--eval-limit",
              str(EVAL_LIMIT), "--runs-min", "10", "--run-s-min", "0.05"]
    first = _edgeq("bench-remote", str(tiny_artifacts), *common, "--rounds", "1", "--json",
                   env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads(first.stdout)
    assert doc["run_id"] == 1 and doc["settings"]["rounds"] == 1
    table = _edgeq("bench-remote", str(tiny_artifacts), *common, "--rounds", "1", env=env)
    assert table.returncode == 0, table.stderr[-3000:]
    for label in ("Size (KB)", "Top-1 (%)", "agreement", "Latency p50 (ms)", "Latency p99 (ms)",
                  "Throughput (samples/s)", "Init (ms)", "Peak memory (MiB)", "XNNPACK",
                  "int8/float32", "stored as run 2"):
        assert label in table.stdout, label
    listed = _edgeq("history", "--json", env=env)
    rows = json.loads(listed.stdout)
    assert [r["run_id"] for r in rows] == [2, 1] and rows[0]["host"] == "local"
    shown = _edgeq("history", "show", "1", "--json", env=env)
    assert json.loads(shown.stdout)["models"] == doc["models"]
    compared = _edgeq("history", "compare", "1", "2", "--json", env=env)
    assert compared.returncode == 0, compared.stderr
    deltas = {r["metric"]: r for r in json.loads(compared.stdout)["rows"]}
    assert deltas["int8 Size (KB)"]["b_over_a"] == "1.000x"
    missing = _edgeq("history", "show", "99", env=env)
    assert missing.returncode == 1 and "no run 99" in missing.stderr
    # a device directory with nothing deployed: one clear line and a hint, exit 1
    bare = _edgeq("bench-remote", "--host", "local", "--device-dir", str(tmp_path / "none"),
                  env=env)
    assert bare.returncode == 1
    assert "nothing is deployed" in bare.stderr and "edgeq deploy" in bare.stderr
    assert "Traceback" not in bare.stderr


# ------------------------------------------------------------------ hardening (issue 11)

TINY = {"runs_min": 3, "run_s_min": 0.01, "warmup_runs_min": 1, "warmup_s_min": 0.0}


def test_a_stuck_daemon_ends_the_hello_in_bounded_time(local_device: Path,
                                                       daemon: subprocess.Popen) -> None:
    from edgeq.host.bench_remote import DaemonStuckError

    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with LocalConnection() as conn, pytest.raises(DaemonStuckError, match="hello") as info:
            bench_remote(conn, device_dir=str(local_device), rounds=1, hello_timeout_s=2.0)
        took = time.monotonic() - t0
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    print(f"\nSIGSTOPped daemon: hello gave up after {took:.2f} s (limit 2 s)")
    assert took < 8 and "--no-daemon" in info.value.hint


def test_a_daemon_stopped_mid_measurement_is_reported_within_a_poll(
        local_device: Path, daemon: subprocess.Popen, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGSTOP while a measurement runs: the host notices between two read slices (the
    daemon's process state is checked with a tiny `sh`), not at the measurement's budget."""
    import edgeq.device.client as client_module
    from edgeq.device.client import query_status
    from edgeq.device.errors import AgentConnectionError

    monkeypatch.setattr(client_module, "LIVENESS_POLL_S", 2.0)
    outcome: list[BaseException] = []

    def measure() -> None:
        try:
            with LocalConnection() as conn:
                bench_remote(conn, device_dir=str(local_device), rounds=1, timeout_s=120.0,
                             runs_min=3, run_s_min=30.0, warmup_runs_min=1, warmup_s_min=0.0)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    worker = threading.Thread(target=measure, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while not query_status(local_device / "agent.sock")["busy"]:
        assert not outcome and time.monotonic() < deadline, outcome
        time.sleep(0.1)
    os.kill(daemon.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        worker.join(timeout=60)
        took = time.monotonic() - t0
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert outcome and isinstance(outcome[0], AgentConnectionError), outcome
    print(f"\nSIGSTOPped mid-measurement: reported after {took:.2f} s (poll 2 s, budget "
          f"{2 * 120 + 60} s): {outcome[0].message}")
    assert "stopped answering" in outcome[0].message and took < 15


def test_a_bench_queued_behind_a_long_one_ends(local_device: Path,
                                               daemon: subprocess.Popen) -> None:
    """Another client's long measurement holds the daemon: ours ends at its bound and the
    error says the daemon is busy (status asked on a second connection)."""
    from edgeq.device.client import AgentClient
    from edgeq.host.bench_remote import DaemonStuckError

    dep = json.loads((local_device / "deployments" / "current.json").read_text())
    other = AgentClient.connect_unix(local_device / "agent.sock", timeout_s=120)
    other.hello()
    from edgeq.device.client import query_status

    failed: list[BaseException] = []

    held: list[Any] = []

    def hold() -> None:
        t = time.monotonic()
        try:
            # long enough to still run when ours gives up, even on a loaded machine; closing
            # `other` below stops it (the daemon stops a departed client's worker)
            res = other.call("bench", model=dep["int8"], run_s_min=45.0, runs_max=10**6,
                             timeout_s=120)
            held.append((time.monotonic() - t, res["timing"].get("timed_s")))
        except BaseException as exc:  # reported below
            failed.append(exc)
            held.append((time.monotonic() - t, exc))

    threading.Thread(target=hold, daemon=True).start()
    deadline = time.monotonic() + 60
    while not query_status(local_device / "agent.sock")["busy"]:  # its worker runs
        assert not failed and time.monotonic() < deadline, failed
        time.sleep(0.1)
    try:
        t0 = time.monotonic()
        with LocalConnection() as conn, pytest.raises(DaemonStuckError) as info:
            bench_remote(conn, device_dir=str(local_device), rounds=1, timeout_s=1.0,
                         margin_s=1.0, **TINY)
        took = time.monotonic() - t0
    finally:
        other.close()
    print(f"\nqueued behind a 45 s bench: gave up after {took:.2f} s (read bound 2x1+1 s, plus "
          f"starting the bridge and asking the status); {info.value.message}")
    assert took < 15 and not held, (took, held)  # ended while the long one still ran
    assert "busy" in info.value.message


def test_a_killed_daemon_is_restarted_and_said(local_device: Path, tiny_artifacts: Path) -> None:
    layout = Layout(str(local_device))
    with LocalConnection() as conn:
        started = conn.run(layout.agent_argv("serve", "--detach"), timeout_s=60)
        assert started.ok, started.stderr
        pid = int((local_device / "agent.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        assert (local_device / "agent.pid").exists()  # left behind: it was killed
        events: list[tuple[str, dict]] = []
        try:
            doc = bench_remote(conn, artifacts_dir=tiny_artifacts, device_dir=str(local_device),
                               rounds=1, eval_limit=50, events=lambda n, d: events.append((n, d)),
                               **TINY)
        finally:
            conn.run(layout.agent_argv("stop"), timeout_s=60)
    restarted = [d for n, d in events if n == "daemon_restarted"]
    assert restarted and "killed" in restarted[0]["reason"], events
    assert doc["settings"]["path"] == "daemon" and doc["settings"]["daemon_error"] is None


def test_two_runs_at_once_queue_without_overlap(local_device: Path, tiny_artifacts: Path,
                                                daemon: subprocess.Popen) -> None:
    intervals: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    docs: dict[int, dict] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        def on_event(name: str, d: dict) -> None:
            if name == "measured":
                intervals[i].append((d["worker_started_unix_s"], d["worker_finished_unix_s"]))
        try:
            with LocalConnection() as conn:
                docs[i] = bench_remote(conn, artifacts_dir=tiny_artifacts,
                                       device_dir=str(local_device), rounds=2, eval_limit=50,
                                       events=on_event, **FAST)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    for i in (0, 1):
        assert docs[i]["settings"]["path"] == "daemon" and len(intervals[i]) == 4
        assert docs[i]["models"]["int8"]["latency_ms_p50"] > 0
    spans = sorted(intervals[0] + intervals[1])
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert e1 <= s2, f"measurements overlap: {s1}-{e1} and {s2}-{e2}"
    # and they did interleave (both ran at once), not one after the other
    firsts = {i: min(s for s, _ in intervals[i]) for i in (0, 1)}
    lasts = {i: max(e for _, e in intervals[i]) for i in (0, 1)}
    assert firsts[0] < lasts[1] and firsts[1] < lasts[0]


def test_deployment_changed_during_the_run_says_so(local_device: Path,
                                                   tiny_artifacts: Path) -> None:
    from edgeq.host.bench_remote import DeploymentChangedError

    current = local_device / "deployments" / "current.json"
    saved = current.read_bytes()
    dep = json.loads(saved)
    moved: list[tuple[Path, Path]] = []

    def deploy_meanwhile(name: str, d: dict) -> None:
        if name == "measured" and not moved:  # a deploy replaces both models
            for kind in ("float32", "int8"):
                src = local_device / "models" / f"{dep[kind]}.tflite"
                dst = local_device.parent / src.name
                src.rename(dst)
                moved.append((dst, src))
            current.write_text(json.dumps(dict(dep, float32="1" * 64, int8="2" * 64,
                                               model_name="other")))

    try:
        with LocalConnection() as conn, pytest.raises(DeploymentChangedError) as info:
            bench_remote(conn, device_dir=str(local_device), rounds=2, use_daemon=False,
                         eval_limit=50, events=deploy_meanwhile, **TINY)
    finally:
        current.write_bytes(saved)
        for dst, src in moved:
            dst.rename(src)
    assert "the deployment on local changed during the run" in info.value.message
    assert "other replaced" in info.value.message and "bench-remote again" in info.value.hint


def test_history_checked_before_measuring_and_a_run_never_lost(
        local_device: Path, tiny_artifacts: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from edgeq.host.history import HistoryError

    db_path = tmp_path / "h.sqlite3"
    History(db_path).count()  # an existing, good history
    locker = sqlite3.connect(str(db_path), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    events: list[tuple[str, dict]] = []
    t0 = time.monotonic()
    with LocalConnection() as conn, pytest.raises(HistoryError, match="locked") as info:
        bench_remote(conn, device_dir=str(local_device), rounds=1, use_daemon=False,
                     history=History(db_path, busy_timeout_s=0.5),
                     events=lambda n, d: events.append((n, d)), **TINY)
    print(f"\nlocked history refused after {time.monotonic() - t0:.2f} s, before measuring")
    assert "--no-history" in info.value.hint
    assert not [n for n, _ in events if n in ("deployment", "measure")]
    locker.execute("ROLLBACK")

    # the lock is taken while measuring: the result is kept in a file, and returned
    monkeypatch.chdir(tmp_path)

    def lock_at_the_end(name: str, d: dict) -> None:
        events.append((name, d))
        if name == "measured" and d["round"] == 0 and d["kind"] == "int8":
            locker.execute("BEGIN EXCLUSIVE")

    events.clear()
    with LocalConnection() as conn:
        doc = bench_remote(conn, device_dir=str(local_device), rounds=1, use_daemon=False,
                           history=History(db_path, busy_timeout_s=0.5), eval_limit=50,
                           events=lock_at_the_end, **TINY)
    locker.execute("ROLLBACK")
    assert doc["run_id"] is None and doc["models"]["int8"]["latency_ms_p50"] > 0
    unstored = [d for n, d in events if n == "unstored"]
    assert unstored and "locked" in unstored[0]["error"]
    saved = Path(unstored[0]["path"])
    assert saved.parent == tmp_path and json.loads(saved.read_text()) == doc
    assert not list(tmp_path.glob(".edgeq-run-*"))  # no temp file left


def test_cli_history_locked_and_outside_text_with_brackets(
        local_device: Path, tmp_path: Path) -> None:
    import sqlite3

    db_path = tmp_path / "h.sqlite3"
    History(db_path).count()
    env = dict(os.environ, EDGEQ_HISTORY_DB=str(db_path), COLUMNS="200")
    locker = sqlite3.connect(str(db_path), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        out = _edgeq("bench-remote", "--host", "local", "--device-dir", str(local_device),
                     "--rounds", "1", "--json", env=env)
    finally:
        locker.execute("ROLLBACK")
    assert out.returncode == 1 and out.stdout == ""
    assert f"error: history database {db_path} stayed locked" in out.stderr
    assert "--no-history" in out.stderr and "Traceback" not in out.stderr
    # host names and device text with brackets print intact, and [/] never crashes
    for host, expect in (("root@[fe80::1]:2222", "[fe80::1]:2222"), ("x[/]y", "x[/]y"),
                         ("pi[/]", "pi[/]")):
        bad = _edgeq("bench-remote", "--host", host, "--connect-timeout", "1",
                     "--no-history", env=env, timeout=60)
        assert bad.returncode == 1 and expect in bad.stderr, bad.stderr
        assert "MarkupError" not in bad.stderr and "Traceback" not in bad.stderr
    # a model name (from a file name) with markup in it, through the deployment and tables
    copy = tmp_path / "device[/]"
    shutil.copytree(local_device, copy, symlinks=True, ignore=shutil.ignore_patterns(
        "agent.sock", "agent.pid", "agent.lock"))
    current = copy / "deployments" / "current.json"
    current.write_text(json.dumps(dict(json.loads(current.read_text()),
                                       model_name="net[/][bold]v2")))
    ok = _edgeq("bench-remote", "--host", "local", "--device-dir", str(copy), "--rounds", "1",
                "--eval-limit", "50", "--runs-min", "3", "--run-s-min", "0.01", "--no-daemon",
                "--no-history", env=env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "net[/][bold]v2" in ok.stderr + ok.stdout and "Traceback" not in ok.stderr


def test_one_shot_measurements_of_one_board_take_turns(tmp_path: Path) -> None:
    """Two host processes measuring one board without its daemon never overlap: the one-shot
    command runs under a flock of the device dir (bench_remote.locked_argv), with the device's
    own Python. Real processes, real lock; each records when it held the board."""
    from edgeq.host.bench_remote import locked_argv

    home = tmp_path / "edgeq"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "python").symlink_to(sys.executable)
    layout = Layout(str(home))
    log = tmp_path / "held.log"
    hold = (f"echo start $(date +%s.%N) >> {log}; sleep 0.6; "
            f"echo end $(date +%s.%N) >> {log}")
    results: list[Any] = []

    def measure() -> None:
        with LocalConnection() as conn:
            results.append(conn.run(locked_argv(layout, ["sh", "-c", hold]), timeout_s=60))

    threads = [threading.Thread(target=measure) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in results), [r.stderr for r in results]
    events = [ln.split() for ln in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["start", "end"] * 3  # never two holders at once
    times = [float(e[1]) for e in events]
    assert times == sorted(times)
    assert (home / "oneshot.lock").exists()
