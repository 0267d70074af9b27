"""A deploy while a measurement runs does not pull anything out from under it (issue 11, 9).

Real processes: `edgeq bench-remote DIR --host local --rounds 4`, and 3 s later `edgeq deploy`
of other artifacts to the same device directory. The bench finishes on the models it started
with (the store is content-addressed and only grows; the daemon is not restarted because its
code and interpreter did not change) and the deploy installs the new ones. Two bench-remote
runs at once on one device still queue (one measurement at a time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from edgeq.device.fileutil import sha256_file
from edgeq.device.store import Layout, Store
from edgeq.host.deploy import deploy
from edgeq.host.link.local import LocalConnection

BENCH = ["--eval-limit", "300", "--runs-min", "50", "--run-s-min", "0.5", "--no-history",
         "--json"]


def _edgeq(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeq.host", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})


def _other_artifacts(src: Path, dst: Path) -> Path:
    """A copy of `src` whose float32 model has another sha256 (padded)."""
    shutil.copytree(src, dst)
    with open(dst / "model_float32.tflite", "ab") as fh:
        fh.write(os.urandom(1 << 20))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["models"]["float32"].update(
        sha256=sha256_file(dst / "model_float32.tflite"),
        size_bytes=(dst / "model_float32.tflite").stat().st_size)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture()
def device(tiny_artifacts: Path, tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "edgeq"
    with LocalConnection() as conn:
        deploy(conn, tiny_artifacts, device_dir=str(d))
        try:
            yield d
        finally:
            conn.run(Layout(str(d)).agent_argv("stop"), timeout_s=30)


def test_deploy_during_bench_remote_lets_the_bench_finish(device: Path, tiny_artifacts: Path,
                                                          tmp_path: Path) -> None:
    other = _other_artifacts(tiny_artifacts, tmp_path / "other")
    before = Store(device).current_deployment()
    t0 = time.monotonic()
    bench = _edgeq("bench-remote", str(tiny_artifacts), "--host", "local", "--device-dir",
                   str(device), "--rounds", "4", *BENCH)
    time.sleep(3)
    assert bench.poll() is None, "the bench ended before the deploy started; make it longer"
    dep = _edgeq("deploy", str(other), "--host", "local", "--device-dir", str(device), "--json")
    dep_out, dep_err = dep.communicate(timeout=600)
    deployed_s = time.monotonic() - t0
    out, err = bench.communicate(timeout=600)
    bench_s = time.monotonic() - t0
    assert dep.returncode == 0, dep_err
    assert bench.returncode == 0, err
    assert deployed_s < bench_s, "the deploy was not concurrent with the bench"
    doc = json.loads(out)
    # the bench measured the models it started with, all rounds
    for kind in ("float32", "int8"):
        assert doc["models"][kind]["sha256"] == before[kind]
        assert len(doc["models"][kind]["rounds"]) == 4
    assert "crashed" not in err
    # and the deploy put the new ones in place
    assert Store(device).current_deployment()["float32"] == json.loads(
        (other / "manifest.json").read_text())["models"]["float32"]["sha256"]
    assert "not restarted" in json.loads(dep_out)["daemon"]
    print(f"\ndeploy done at {deployed_s:.1f} s, bench (4 rounds) done at {bench_s:.1f} s")


def test_two_bench_remote_runs_at_once_queue(device: Path, tiny_artifacts: Path) -> None:
    runs = [_edgeq("bench-remote", str(tiny_artifacts), "--host", "local", "--device-dir",
                   str(device), "--rounds", "1", *BENCH) for _ in range(2)]
    docs = []
    for r in runs:
        out, err = r.communicate(timeout=600)
        assert r.returncode == 0, err
        docs.append(json.loads(out))
    spans = sorted(
        (m["agent"]["worker_started_unix_s"], m["agent"]["worker_finished_unix_s"])
        for doc in docs for m in _measurements(doc))
    assert len(spans) >= 4
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end  # never two measurements at once on the board


def _measurements(doc: dict) -> list[dict]:
    """Every per-request result with its daemon timing in an edgeq.compare/1 document."""
    found: list[dict] = []

    def walk(x: object) -> None:
        if isinstance(x, dict):
            if isinstance(x.get("agent"), dict) and "worker_started_unix_s" in x["agent"]:
                found.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc)
    return found
