"""bench-remote end to end: real deploy, real agent, real daemon on a real Unix socket.

`--host local` with a device directory in tmp_path, with and without a running daemon; then
over the real sshd of tests/integration/conftest.py (deploy + `edgeq bench-remote --json`
through the CLI as a subprocess). Small run counts and --eval-limit keep it fast.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
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
    return subprocess.run([sys.executable, "-m", "edgeq.host", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


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
