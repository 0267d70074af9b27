"""`edgeq deploy` end to end: real files, a real venv, a real daemon, a real sshd.

First `--host local` (LocalConnection, the device directory in tmp_path: fast), then over the
real sshd of tests/integration/conftest.py: one full deploy that builds a real venv from wheels
downloaded on the host (--offline-wheels; shared by the tests below because venv creation is
slow), the daemon answering through `bridge`, a second deploy sending nothing, a connection
cut mid-transfer by a TCP proxy leaving the old model usable, and the CLI as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgeq.device.errors import EdgeqError
from edgeq.device.store import Layout, Store
from edgeq.host.artifacts import ArtifactsError
from edgeq.host.deploy import default_wheel_cache, deploy
from edgeq.host.link import open_connection
from edgeq.host.link.local import LocalConnection
from sshd_helpers import SSHDevice

FAST_BENCH = ["--runs-min", "5", "--run-s-min", "0", "--warmup-runs-min", "1",
              "--warmup-s-min", "0", "--runs-max", "20", "--eval-limit", "100", "--json"]
WHEEL_CACHE = Path(os.environ.get("EDGEQ_TEST_WHEEL_CACHE") or default_wheel_cache())


def agent_argv(d: str, *args: str) -> list[str]:
    return Layout(d).agent_argv(*args)


def _stop_daemon(conn: Any, d: str) -> None:
    conn.run(agent_argv(d, "stop"), timeout_s=30)


def _status(conn: Any, d: str) -> dict[str, Any]:
    res = conn.run(agent_argv(d, "status", "--json"), timeout_s=30)
    assert res.ok, res.stderr.decode()
    return json.loads(res.stdout)


def _hello_through_bridge(conn: Any, d: str) -> dict[str, Any]:
    from edgeq.device.client import AgentClient

    stream = conn.open_stream(agent_argv(d, "bridge"))
    try:
        client = AgentClient(stream.write, lambda: stream.readline(1 << 20))
        client.hello()
        return client.call("status")
    finally:
        stream.close()


def _bench(conn: Any, d: str, sha: str, data_sha: str) -> dict[str, Any]:
    res = conn.run(agent_argv(d, "bench", Layout(d).model(sha), "--data", Layout(d).data(data_sha),
                              *FAST_BENCH), timeout_s=120)
    assert res.ok, res.stderr.decode()
    return json.loads(res.stdout)


def _real_files(root: Path) -> list[str]:
    return sorted(p.name for sub in ("models", "data") for p in (root / sub).iterdir()
                  if not p.name.startswith("."))


# ------------------------------------------------------------------ units






# ------------------------------------------------------------------ --host local


@pytest.fixture(scope="module")
def local_device(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Path, dict[str, Any]]]:
    d = tmp_path_factory.mktemp("local-device") / "edgeq"
    with LocalConnection() as conn:
        t = time.perf_counter()
        doc = deploy(conn, tiny_artifacts, device_dir=str(d))
        doc["_t"] = time.perf_counter() - t
        try:
            yield d, doc
        finally:
            _stop_daemon(conn, str(d))


def test_local_deploy_fills_the_store(local_device: tuple[Path, dict], tiny_artifacts: Path
                                      ) -> None:
    d, doc = local_device
    manifest = json.loads((tiny_artifacts / "manifest.json").read_text())
    store = Store(d)
    dep = store.current_deployment()
    assert dep is not None
    for kind in ("float32", "int8"):
        assert dep[kind] == manifest["models"][kind]["sha256"]
        _, path = store.model(kind)  # re-hashed by the store
        assert path.stat().st_size == manifest["models"][kind]["size_bytes"]
    assert store.data("current")[0] == manifest["eval_data"]["sha256"]
    assert dep["manifest"] == manifest and dep["model_name"] == manifest["model_name"]
    # agent code: a content-addressed release behind a symlink, the same bytes as device/
    assert (d / "agent").is_symlink()
    pushed = d / "agent" / "edgeq" / "device"
    src = Path(__file__).resolve().parents[2] / "device"
    for f in list(src.glob("*.py")) + [src / "edgeq-agent.service"]:
        assert (pushed / f.name).read_bytes() == f.read_bytes()
    assert doc["venv"] == "external" and doc["runtime_name"] == "ai-edge-litert"
    assert doc["models_bytes_sent"] == sum(m["size_bytes"] for m in manifest["models"].values())
    assert not [p for p in d.rglob("*.part")]


def test_local_daemon_answers_and_redeploy_sends_nothing(local_device: tuple[Path, dict],
                                                         tiny_artifacts: Path) -> None:
    d, first = local_device
    assert first["daemon"].startswith("running")
    with LocalConnection() as conn:
        st = _hello_through_bridge(conn, str(d))
        assert st["deployment"]["int8"] == first["deployment"]["int8"]
        assert st["home"] == str(d) and f"pid {st['pid']}" in first["daemon"]
        t = time.perf_counter()
        second = deploy(conn, tiny_artifacts, device_dir=str(d))
        t2 = time.perf_counter() - t
        assert second["sent_bytes"] == 0 and second["models_bytes_sent"] == 0
        assert second["skipped_bytes"] == first["sent_bytes"]
        assert second["daemon"].startswith("running")
        # nothing about the daemon changed (same agent release, same interpreter): it keeps
        # running, and so would a measurement it had in progress
        assert _status(conn, str(d))["pid"] == st["pid"]
        assert f"pid {st['pid']}" in second["daemon"] and "not restarted" in second["daemon"]
        # once stopped, the next deploy starts a new one
        _stop_daemon(conn, str(d))
        third = deploy(conn, tiny_artifacts, device_dir=str(d))
        assert third["unchanged"] is False
        assert any("daemon does not answer" in c for c in third["changed"]), third["changed"]
        assert third["daemon"].startswith("running (pid ")
        assert f"pid {_status(conn, str(d))['pid']}" in third["daemon"]
        assert _status(conn, str(d))["pid"] != st["pid"]
    print(f"\nlocal deploy: first {first['_t']:.2f} s ({first['sent_bytes']} B), "
          f"second {t2:.2f} s (0 B)")


def test_local_repeated_deploy_is_one_check_and_a_damaged_file_is_not_skipped(
        local_device: tuple[Path, dict], tiny_artifacts: Path) -> None:
    """A repeated deploy of the same artifacts and settings to a device whose daemon answers
    is one remote command ("unchanged"); a model file changed on the device, an agent file
    changed, or other settings take the full path again, which repairs the device."""
    d, first = local_device
    runs: list[list[str]] = []

    class Counting(LocalConnection):
        def run(self, argv: Any, **kw: Any) -> Any:
            runs.append([str(a) for a in argv])
            return super().run(argv, **kw)

    with Counting() as conn:
        deploy(conn, tiny_artifacts, device_dir=str(d))  # whatever the tests before left
        runs.clear()
        t = time.perf_counter()
        same = deploy(conn, tiny_artifacts, device_dir=str(d))
        took_s = time.perf_counter() - t
        assert same["unchanged"] is True and same["changed"] == [], same["changed"]
        assert len(runs) == 1 and runs[0][:2] == ["python3", "-c"], runs
        assert same["sent_bytes"] == 0 and same["skipped_bytes"] == first["sent_bytes"]
        assert same["deployment"]["int8"] == first["deployment"]["int8"]
        assert f"pid {_status(conn, str(d))['pid']}" in same["daemon"]
        assert same["runtime_name"] == first["runtime_name"] and same["arch"] == first["arch"]
        assert same["timings"]["check_s"] is not None
        assert same["timings"]["check_s"] <= same["seconds"]

        # a model tampered with on the device: same size, other bytes
        int8 = Path(Layout(str(d)).model(first["deployment"]["int8"]))
        good = int8.read_bytes()
        int8.chmod(0o644)
        int8.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])
        runs.clear()
        fixed = deploy(conn, tiny_artifacts, device_dir=str(d))
        assert fixed["unchanged"] is False and len(runs) > 1
        assert any("int8" in c and "damaged" in c for c in fixed["changed"]), fixed["changed"]
        assert fixed["models_bytes_sent"] == len(good) and int8.read_bytes() == good

        # an agent file changed in the release the device runs
        pushed = Path(d, "agent", "edgeq", "device", "protocol.py")
        original = pushed.read_bytes()
        pushed.chmod(0o644)
        pushed.write_bytes(original + b"# changed on the device\n")
        again = deploy(conn, tiny_artifacts, device_dir=str(d))
        assert again["unchanged"] is False
        assert any("protocol.py" in c for c in again["changed"]), again["changed"]
        assert pushed.read_bytes() == original  # the release was pushed again
        assert deploy(conn, tiny_artifacts, device_dir=str(d))["unchanged"] is True

        # other settings: the full path (and the stamp records the new ones)
        other = deploy(conn, tiny_artifacts, device_dir=str(d), runtime="litert")
        assert other["unchanged"] is False and "the deploy settings differ" in other["changed"]
        assert deploy(conn, tiny_artifacts, device_dir=str(d), runtime="litert")["unchanged"]
        # and check_unchanged=False always runs everything
        full = deploy(conn, tiny_artifacts, device_dir=str(d), check_unchanged=False)
        assert full["unchanged"] is False and full["timings"]["check_s"] is None
    print(f"\nlocal repeated deploy: {took_s:.3f} s (check {same['timings']['check_s']:.3f} s)")


def test_local_no_daemon_and_missing_artifacts(tiny_artifacts: Path, tmp_path: Path) -> None:
    d = tmp_path / "edgeq"
    with LocalConnection() as conn:
        doc = deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
        assert doc["daemon"] == "stopped" and not (d / "agent.sock").exists()
        assert conn.run(agent_argv(str(d), "status")).exit_status == 3
        with pytest.raises(ArtifactsError) as info:
            deploy(conn, tmp_path / "nope", device_dir=str(d))
        assert "does not exist" in info.value.message and info.value.hint
        # deploy.sh refusing an interpreter without a runtime: one error line, nothing changed
        before = (d / "bin" / "python").read_text()
        res = conn.run(["bash", str(d / "deploy.sh"), "--home", str(d), "--python",
                        "/bin/true", "--no-daemon"])
        assert res.exit_status == 1
        assert b"error: /bin/true has no usable TFLite runtime" in res.stderr
        assert b"hint: " in res.stderr and b"EDGEQ_DEPLOY" not in res.stdout
        assert (d / "bin" / "python").read_text() == before
        broken = tmp_path / "broken"
        shutil.copytree(tiny_artifacts, broken)
        with open(broken / "model_int8.tflite", "ab") as fh:
            fh.write(b"x")
        with pytest.raises(ArtifactsError, match="does not match manifest.json"):
            deploy(conn, broken, device_dir=str(d))


# ------------------------------------------------------------------ over the real sshd


def _ssh(dev: SSHDevice, ssh_config: Path | None = None) -> Any:
    return open_connection(dev.alias, ssh_config=ssh_config or dev.ssh_config)


@pytest.fixture(scope="module")
def ssh_device(sshd_device: SSHDevice, tiny_artifacts: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """tiny_artifacts deployed over SSH with a real venv built from pushed wheels."""
    d = str(tmp_path_factory.mktemp("ssh-device") / "edgeq")
    with _ssh(sshd_device) as conn:
        t = time.perf_counter()
        doc = deploy(conn, tiny_artifacts, device_dir=d, offline_wheels=True,
                     wheel_cache=WHEEL_CACHE)
        doc["_t"] = time.perf_counter() - t
        try:
            yield d, doc
        finally:
            _stop_daemon(conn, d)


def test_ssh_deploy_builds_a_venv_and_starts_the_daemon(ssh_device: tuple[str, dict],
                                                        sshd_device: SSHDevice) -> None:
    d, doc = ssh_device
    assert doc["venv"] in ("created", "reused")
    assert doc["wheels_bytes_sent"] > 0 or doc["venv"] == "reused"
    assert doc["runtime_name"] == "ai-edge-litert" and doc["runtime_version"]
    assert Path(d, "venv", "bin", "python").exists()
    assert doc["daemon"].startswith("running"), doc["daemon"]
    with _ssh(sshd_device) as conn:
        st = _hello_through_bridge(conn, d)  # a real request through the SSH bridge
        assert st["home"] == d and st["deployment"]["int8"] == doc["deployment"]["int8"]
        status = _status(conn, d)
        assert status["runtime"]["name"] == "ai-edge-litert"
    print(f"\nssh deploy (venv {doc['venv']}, offline wheels): {doc['_t']:.1f} s, "
          f"{doc['sent_bytes']} B sent ({doc['wheels_bytes_sent']} B wheels, "
          f"{doc['models_bytes_sent']} B models)")


def test_ssh_second_deploy_sends_no_model_bytes(ssh_device: tuple[str, dict],
                                                tiny_artifacts: Path,
                                                sshd_device: SSHDevice) -> None:
    d, first = ssh_device
    stale = Path(d, "wheels", "stale_pkg-0.1-py3-none-any.whl")
    stale.write_bytes(b"a wheel an earlier deploy pushed")
    with _ssh(sshd_device) as conn:
        t = time.perf_counter()
        second = deploy(conn, tiny_artifacts, device_dir=d, offline_wheels=True,
                        wheel_cache=WHEEL_CACHE, check_unchanged=False)
        t2 = time.perf_counter() - t
    assert second["unchanged"] is False
    assert second["models_bytes_sent"] == 0 and second["sent_bytes"] == 0
    assert second["skipped_bytes"] == first["sent_bytes"] + first["skipped_bytes"]
    assert second["venv"] == "reused"
    assert second["daemon"].startswith("running")
    # old wheels are pruned; those this deploy installs from stay
    assert not stale.exists()
    needed = {Path(f["path"]).name for f in second["files"] if f["category"] == "wheel"}
    assert needed and needed == {p.name for p in Path(d, "wheels").glob("*.whl")}
    print(f"\nssh second deploy: {t2:.1f} s, 0 B sent, {second['skipped_bytes']} B unchanged")


def test_ssh_repeated_deploy_is_one_remote_command(ssh_device: tuple[str, dict],
                                                  tiny_artifacts: Path,
                                                  sshd_device: SSHDevice) -> None:
    """Over the real sshd: the same deploy again is one exec on the device (no SFTP, no
    pip download, no deploy.sh), and says so; a tampered data set is not skipped."""
    d, first = ssh_device
    with _ssh(sshd_device) as conn:
        deploy(conn, tiny_artifacts, device_dir=d, offline_wheels=True,
               wheel_cache=WHEEL_CACHE)  # whatever the tests before left
    runs: list[list[str]] = []
    with _ssh(sshd_device) as conn:
        real_run = conn.run

        def counting(argv: Any, **kw: Any) -> Any:
            runs.append([str(a) for a in argv])
            return real_run(argv, **kw)

        conn.run = counting  # type: ignore[method-assign]
        t = time.perf_counter()
        same = deploy(conn, tiny_artifacts, device_dir=d, offline_wheels=True,
                      wheel_cache=WHEEL_CACHE)
        took_s = time.perf_counter() - t
        assert same["unchanged"] is True, same["changed"]
        assert len(runs) == 1 and runs[0][:2] == ["python3", "-c"], runs
        assert same["device_dir"] == d and same["sent_bytes"] == 0
        assert same["venv"] == "reused" and same["runtime_name"] == first["runtime_name"]
        data = Path(Layout(d).data(first["deployment"]["eval_data"]))
        good = data.read_bytes()
        data.chmod(0o644)
        data.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        fixed = deploy(conn, tiny_artifacts, device_dir=d, offline_wheels=True,
                       wheel_cache=WHEEL_CACHE)
        assert fixed["unchanged"] is False and fixed["data_bytes_sent"] == len(good)
        assert any("eval_data" in c and "damaged" in c for c in fixed["changed"])
        assert data.read_bytes() == good
    print(f"\nssh repeated deploy: {took_s:.3f} s (check {same['timings']['check_s']:.3f} s), "
          f"first {first['_t']:.1f} s")


class _CuttingProxy:
    """A loopback TCP proxy to sshd that cuts both directions after `limit` upstream bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.limit: int | None = None
        self.upstream = 0
        self.cut = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while not self.cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if up:
                    self.upstream += len(data)
                    if self.limit is not None and self.upstream > self.limit:
                        self.cut.set()
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.sock.close()


def test_ssh_connection_cut_mid_transfer_keeps_the_old_model(
        ssh_device: tuple[str, dict], tiny_artifacts: Path, sshd_device: SSHDevice,
        tmp_path: Path) -> None:
    d, first = ssh_device
    old = dict(first["deployment"])
    # new artifacts: the float32 model padded to 4 MB (a different sha256, sent in full)
    new = tmp_path / "new-artifacts"
    shutil.copytree(tiny_artifacts, new)
    with open(new / "model_float32.tflite", "ab") as fh:
        fh.write(os.urandom(4 << 20))
    from edgeq.device.fileutil import sha256_file

    manifest = json.loads((new / "manifest.json").read_text())
    new_sha = sha256_file(new / "model_float32.tflite")
    manifest["models"]["float32"].update(sha256=new_sha,
                                         size_bytes=(new / "model_float32.tflite").stat().st_size)
    (new / "manifest.json").write_text(json.dumps(manifest))

    proxy = _CuttingProxy(sshd_device.port)
    cfg = tmp_path / "ssh_config_cut"
    kh = tmp_path / "known_hosts_cut"
    key_type, key_b64 = sshd_device.host_key_pub.read_text().split()[:2]
    kh.write_text(f"[127.0.0.1]:{proxy.port} {key_type} {key_b64}\n")
    cfg.write_text(f"Host {sshd_device.alias}\n  HostName 127.0.0.1\n  Port {proxy.port}\n"
                   f"  User {sshd_device.user}\n  IdentityFile {sshd_device.identity}\n"
                   f"  UserKnownHostsFile {kh}\n")
    sent_events: list[str] = []
    try:
        with _ssh(sshd_device, cfg) as conn:
            conn.run(["true"])  # handshake done: from here on cut after 1.5 MB more
            proxy.limit = proxy.upstream + (3 << 19)
            with pytest.raises(EdgeqError) as info:
                deploy(conn, new, device_dir=d, offline_wheels=False,
                       events=lambda n, det: sent_events.append(det.get("file", ""))
                       if n == "send" else None)
    finally:
        proxy.close()
    assert proxy.cut.is_set(), "the proxy never cut the connection"
    assert any(new_sha in f for f in sent_events), "the cut did not hit the model transfer"
    assert info.value.hint
    root = Path(d)
    # the previous deployment is intact: same record, no half-written file under a real name
    assert Store(root).current_deployment()["float32"] == old["float32"]
    assert f"{new_sha}.tflite" not in _real_files(root)
    assert Store(root).verify()["ok"]
    with _ssh(sshd_device) as conn:
        doc = _bench(conn, d, old["float32"], old["eval_data"])
        assert doc["accuracy"]["count"] == 100 and doc["timing"]["latency_ms_p50"] > 0
        # the next deploy finishes the job and sweeps the leftover temp files
        done = deploy(conn, new, device_dir=d, offline_wheels=False)
        assert done["models_bytes_sent"] == manifest["models"]["float32"]["size_bytes"]
        assert Store(root).current_deployment()["float32"] == new_sha
        assert not list(root.rglob("*.part"))
        # and back to the shared artifacts for the tests that follow
        back = deploy(conn, tiny_artifacts, device_dir=d, offline_wheels=False)
        assert back["models_bytes_sent"] == 0


def _edgeq(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgeq.host", *args], check=False,
                          capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_cli_deploy_end_to_end(ssh_device: tuple[str, dict], tiny_artifacts: Path,
                               sshd_device: SSHDevice, tmp_path: Path) -> None:
    d, _ = ssh_device
    common = ["--host", sshd_device.alias, "--ssh-config", str(sshd_device.ssh_config),
              "--device-dir", d]
    res = _edgeq("deploy", str(tiny_artifacts), *common, "--offline-wheels", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgeq.deploy/1" and doc["models_bytes_sent"] == 0
    assert doc["arch"] == os.uname().machine and doc["daemon"].startswith("running")
    human = _edgeq("deploy", str(tiny_artifacts), *common, "--offline-wheels")
    assert human.returncode == 0, human.stderr
    assert "unchanged" in human.stdout and "ai-edge-litert" in human.stdout
    # a missing artifacts directory: one line + hint, exit 1; --debug adds the traceback
    bad = _edgeq("deploy", str(tmp_path / "missing"), *common)
    assert bad.returncode == 1
    assert "error: artifacts directory" in bad.stderr and "Traceback" not in bad.stderr
    assert len([ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]) == 1
    dbg = _edgeq("--debug", "deploy", str(tmp_path / "missing"), *common)
    assert dbg.returncode == 1 and "Traceback" in dbg.stderr
    # an unknown host key is refused with how to accept it
    cfg = tmp_path / "cfg"
    cfg.write_text(sshd_device.ssh_config.read_text().replace(
        str(sshd_device.known_hosts), str(tmp_path / "empty_known_hosts")))
    unknown = _edgeq("deploy", str(tiny_artifacts), "--host", sshd_device.alias,
                     "--ssh-config", str(cfg), "--device-dir", d)
    assert unknown.returncode != 0 and "--accept-new-host-key" in unknown.stderr


def test_ssh_failed_venv_rebuild_keeps_the_previous_venv(ssh_device: tuple[str, dict],
                                                         sshd_device: SSHDevice,
                                                         tmp_path: Path) -> None:
    """A venv rebuild that fails (here: tflite-runtime asked for, no wheels for it) leaves the
    venv the daemon runs on untouched (before, deploy.sh deleted it first, even when its pip
    was merely broken)."""
    d, _ = ssh_device
    venv = Path(d, "venv")
    assert (venv / ".edgeq-venv").is_file()  # edgeq's own venv, marked
    # a venv whose pip is gone (what an interrupted upgrade can leave)
    for pip in venv.glob("lib/python*/site-packages/pip"):
        shutil.move(str(pip), str(tmp_path / "pip-saved"))
    empty = Path(d, "wheels-empty")
    empty.mkdir(exist_ok=True)
    probe = ["bash", "-c", "exec \"$0\" -c 'import ai_edge_litert.interpreter'",
             str(venv / "bin" / "python")]
    try:
        with _ssh(sshd_device) as conn:
            res = conn.run(["bash", Layout(d).deploy_script, "--home", d, "--runtime",
                            "tflite-runtime", "--wheels", str(empty), "--no-daemon"],
                           timeout_s=600)
            assert res.exit_status == 1 and b"error: installing tflite-runtime failed" \
                in res.stderr, res.stderr[-2000:]
            assert conn.run(probe).ok, "the previous venv was damaged by a failed rebuild"
            assert Path(d, "venv", ".edgeq-venv").is_file()
    finally:
        for saved in [tmp_path / "pip-saved"]:
            if saved.exists():
                dest = next(venv.glob("lib/python*/site-packages"))
                shutil.move(str(saved), str(dest / "pip"))
        shutil.rmtree(empty, ignore_errors=True)
        with _ssh(sshd_device) as conn:
            conn.run(agent_argv(d, "serve", "--detach"), timeout_s=60)


_BROKEN_SYSTEMD = """#!/bin/sh
# a user manager that accepts every request but whose unit never gives a daemon (like a
# kernel without the namespaces the unit's sandboxing needs: the unit fails at exec)
echo "$*" >> "$EDGEQ_FAKE_SYSTEMCTL_LOG"
case "$2" in is-active|is-enabled) exit 3;; esac
exit 0
"""


def test_a_systemd_unit_that_gives_no_daemon_falls_back_to_a_pidfile_daemon(
        tiny_artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd cannot run here (no user manager), so a stand-in `systemctl` on PATH plays the
    failure seen on boards whose kernel refuses the unit's sandboxing: deploy.sh must notice
    that no daemon answers, disable the unit and run the daemon with a pidfile."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(_BROKEN_SYSTEMD)
    fake.chmod(0o755)
    calls = tmp_path / "systemctl.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("EDGEQ_FAKE_SYSTEMCTL_LOG", str(calls))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    d = tmp_path / "device"
    with LocalConnection() as conn:
        try:
            doc = deploy(conn, tiny_artifacts, device_dir=str(d))
            assert doc["daemon"].startswith("running (pid "), doc["daemon"]
            assert "failed, disabled" in doc["daemon"]
            assert _status(conn, str(d))["pid"] == int((d / "agent.pid").read_text())
        finally:
            _stop_daemon(conn, str(d))
    said = calls.read_text().splitlines()
    assert any(line.startswith("--user restart edgeq-agent-") for line in said), said
    assert any(line.startswith("--user disable edgeq-agent-") for line in said), said
    units = list((tmp_path / "config" / "systemd" / "user").glob("edgeq-agent-*.service"))
    assert len(units) == 1 and str(d) in units[0].read_text()
