"""Fault injection: what a user sees when things break mid-deploy / mid-bench, how fast, and
whether their data survived.

    python benchmarks/fault_injection.py [--artifacts DIR] [--keep]

Needs root (a throwaway sshd on 127.0.0.1, like tests/integration/conftest.py, and a tmpfs
in a private mount namespace made with `unshare -m`). Everything lives in a temp directory;
nothing touches ~/.ssh, ~/.edgeq or the real history. Faults:

  link cut mid-upload     the sshd child serving the deploy's connection is SIGKILLed while a
                          new 8 MiB model is being uploaded
  sshd killed mid-deploy  sshd (listener and every session) is SIGKILLed while deploy.sh runs
  daemon SIGKILL mid-bench / daemon SIGSTOP mid-bench
                          `edgeq bench-remote` over SSH, the device's daemon killed / frozen
                          3 s in
  disk full on device     a 6 MiB tmpfs as the device directory (--host local inside the
                          namespace), then a deploy of a model that does not fit
  history DB locked       another process holds an exclusive lock on the history database

Prints one row a fault: the one-line error the user saw, the seconds to that error, and
whether the data is intact: the previous deployment still benchmarks, no file under a real
name is half-written (the store re-hashes clean), the history database passes
`PRAGMA integrity_check` and lost no run.
Imports: edgeq.device (store, fileutil), edgeq.host (deploy, link); standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from edgeq.device.fileutil import sha256_file
from edgeq.device.store import Layout, Store

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
BENCH = ["--eval-limit", "300", "--runs-min", "50", "--run-s-min", "1.0"]


# ----------------------------------------------------------------------------- the device


class LoopbackSSHD:
    """A throwaway sshd on 127.0.0.1 (as in tests/integration/conftest.py)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        for name in ("host_key", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(base / name)], check=True)
        (base / "authorized_keys").write_text((base / "id_ed25519.pub").read_text())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        (base / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {base}/host_key",
            f"PidFile {base}/sshd.pid", f"AuthorizedKeysFile {base}/authorized_keys",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "Subsystem sftp internal-sftp", "MaxSessions 50", "MaxStartups 50", ""]))
        kt, kb = (base / "host_key.pub").read_text().split()[:2]
        (base / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {kt} {kb}\n")
        self.config = base / "ssh_config"
        self.config.write_text(f"Host faultdev\n  HostName 127.0.0.1\n  Port {self.port}\n"
                               f"  User root\n  IdentityFile {base}/id_ed25519\n"
                               f"  UserKnownHostsFile {base}/known_hosts\n")
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.base / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not start")

    def children(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        assert self.proc is not None
        return _children(self.proc.pid)

    def kill_all(self) -> None:
        assert self.proc is not None
        for pid in self.children():
            _kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()

    def cli(self) -> list[str]:
        return ["--host", "faultdev", "--ssh-config", str(self.config)]


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
                out.append(int(entry))
    return out


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _procs_with(*words: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if all(w in cmd for w in words):
                pids.append(int(entry))
    return pids


# ----------------------------------------------------------------------------- helpers


def edgeq(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeq.host", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})


def error_line(stderr: str, stdout: str = "") -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("error:")]
    if lines:
        return lines[-1][:150]
    return (stderr.strip().splitlines() or stdout.strip().splitlines() or ["(no output)"])[-1][:150]


def run_until(proc: subprocess.Popen, trigger: Callable[[], bool], action: Callable[[], None],
              timeout_s: float = 600) -> tuple[float, str, str, bool]:
    """Poll `trigger` while proc runs; do `action` once it is true; wait for proc.
    (seconds from the action to proc's end, stdout, stderr, whether the action happened)."""
    deadline = time.monotonic() + timeout_s
    fired_at = None
    while proc.poll() is None and time.monotonic() < deadline:
        if fired_at is None and trigger():
            action()
            fired_at = time.monotonic()
        time.sleep(0.02)
    try:
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\nerror: (no answer within {timeout_s:g} s; killed by the script)"
    ended = time.monotonic()
    return (ended - fired_at if fired_at else float("nan")), out, err, fired_at is not None


def other_artifacts(src: Path, dst: Path, pad_bytes: int) -> Path:
    """A copy of src whose float32 model is padded by pad_bytes (a new sha256)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    with open(dst / "model_float32.tflite", "ab") as fh:
        fh.write(os.urandom(pad_bytes))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["models"]["float32"].update(
        sha256=sha256_file(dst / "model_float32.tflite"),
        size_bytes=(dst / "model_float32.tflite").stat().st_size)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def device_intact(d: Path, expect: dict[str, Any]) -> tuple[bool, str]:
    """Whether the device still holds the deployment `expect` and can measure it."""
    try:
        store = Store(d)
        dep = store.current_deployment() or {}
        if any(dep.get(k) != expect.get(k) for k in ("float32", "int8", "eval_data")):
            return False, "current.json changed"
        if not store.verify()["ok"]:
            return False, "a stored file does not match its sha256"
        argv = Layout(str(d)).agent_argv("bench", store.layout.model(dep["int8"]),
                                         "--runs-min", "3", "--run-s-min", "0",
                                         "--warmup-runs-min", "1", "--warmup-s-min", "0",
                                         "--json")
        res = subprocess.run(argv, capture_output=True, timeout=120)
        if res.returncode != 0:
            return False, "the previous deployment does not bench: " + error_line(
                res.stderr.decode())
        return True, "previous deployment benches"
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return False, f"{type(exc).__name__}: {exc}"


def history_intact(db: Path, runs_before: int) -> tuple[bool, str]:
    try:
        with sqlite3.connect(db, timeout=10) as con:
            ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='runs'")]
            n = con.execute("SELECT count(*) FROM runs").fetchone()[0] if tables else 0
        return ok and n >= runs_before, f"integrity {'ok' if ok else 'BAD'}, {n} runs"
    except sqlite3.Error as exc:
        return False, f"history: {exc}"


# ----------------------------------------------------------------------------- the faults


def fault_link_cut(sshd: LoopbackSSHD, d: Path, arts: Path, tmp: Path) -> dict[str, Any]:
    expect = Store(d).current_deployment() or {}
    new = other_artifacts(arts, tmp / "cut-arts", 8 << 20)
    new_sha = json.loads((new / "manifest.json").read_text())["models"]["float32"]["sha256"]
    proc = edgeq("deploy", str(new), *sshd.cli(), "--device-dir", str(d), "--index-wheels")

    def uploading() -> bool:
        return any(n.startswith(f".{new_sha}") for n in os.listdir(d / "models"))

    def cut() -> None:
        for pid in sshd.children():
            _kill(pid, signal.SIGKILL)

    secs, out, err, fired = run_until(proc, uploading, cut)
    ok, why = device_intact(d, expect)
    half = [p.name for p in (d / "models").iterdir()
            if p.name == f"{new_sha}.tflite"]
    return {"fault": "link cut mid-upload", "saw": error_line(err, out) if proc.returncode
            else "(deploy succeeded: the cut came too late)", "seconds": secs,
            "intact": ok and not half, "why": why + ("; half file!" if half else "")
            + ("" if fired else "; fault not injected")}


def fault_sshd_killed(sshd: LoopbackSSHD, d: Path, arts: Path, tmp: Path) -> dict[str, Any]:
    expect = Store(d).current_deployment() or {}
    new = other_artifacts(arts, tmp / "kill-arts", 1 << 20)
    proc = edgeq("deploy", str(new), *sshd.cli(), "--device-dir", str(d), "--index-wheels")
    secs, out, err, fired = run_until(
        proc, lambda: bool(_procs_with("bash", f"{d}/deploy.sh", "--release")), sshd.kill_all)
    sshd.start()
    time.sleep(1.0)  # what deploy.sh did after losing its session, it did by now
    ok, why = device_intact(d, expect)
    if not ok:  # deploy.sh may have finished on its own: then the new deployment is in place
        now = Store(d).current_deployment() or {}
        ok, why = device_intact(d, now)
        why = "the previous or the new deployment: " + why
    return {"fault": "sshd killed mid-deploy (deploy.sh)", "saw": error_line(err, out)
            if proc.returncode else "(deploy succeeded)", "seconds": secs, "intact": ok,
            "why": why + ("" if fired else "; fault not injected")}


def _bench_fault(name: str, sshd: LoopbackSSHD, d: Path, arts: Path, db: Path, sig: int,
                 timeout_s: float) -> dict[str, Any]:
    expect = Store(d).current_deployment() or {}
    before = history_intact(db, 0)[1]
    runs_before = int(before.split(", ")[1].split()[0]) if ", " in before else 0
    proc = edgeq("bench-remote", str(arts), *sshd.cli(), "--device-dir", str(d),
                 "--rounds", "4", *BENCH, env={"EDGEQ_HISTORY_DB": str(db)})
    t0 = time.monotonic()
    pid_file = d / "agent.pid"
    daemon_pid = int(pid_file.read_text()) if pid_file.exists() else None

    def started() -> bool:
        return time.monotonic() - t0 > 3.0

    def hit() -> None:
        if daemon_pid is not None:
            _kill(daemon_pid, sig)

    secs, out, err, fired = run_until(proc, started, hit, timeout_s=timeout_s)
    if sig == signal.SIGSTOP and daemon_pid is not None:
        _kill(daemon_pid, signal.SIGKILL)
        _kill(daemon_pid, signal.SIGCONT)
    ok_dev, why_dev = device_intact(d, expect)
    ok_hist, why_hist = history_intact(db, runs_before)
    saw = error_line(err, out) if proc.returncode else "(no error) " + (
        " ".join(ln.strip() for ln in err.splitlines() if "restart" in ln.lower())[:80]
        or "bench completed")
    return {"fault": name, "saw": saw, "seconds": secs, "intact": ok_dev and ok_hist,
            "why": f"{why_dev}; history {why_hist}" + ("" if fired else "; not injected")}


def _restart_daemon(d: Path) -> None:
    subprocess.run(Layout(str(d)).agent_argv("stop"), capture_output=True, timeout=30)
    subprocess.run(Layout(str(d)).agent_argv("serve", "--detach"), capture_output=True,
                   timeout=60)


def fault_history_locked(sshd: LoopbackSSHD, d: Path, arts: Path, db: Path) -> dict[str, Any]:
    expect = Store(d).current_deployment() or {}
    runs_before = int(history_intact(db, 0)[1].split(", ")[1].split()[0])
    holder = sqlite3.connect(db, timeout=1, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        proc = edgeq("bench-remote", str(arts), *sshd.cli(), "--device-dir", str(d),
                     "--rounds", "1", *BENCH, env={"EDGEQ_HISTORY_DB": str(db)})
        out, err = proc.communicate(timeout=600)
        secs = time.monotonic() - t0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    ok_hist, why_hist = history_intact(db, runs_before)
    ok_dev, why_dev = device_intact(d, expect)
    saw = error_line(err, out) if proc.returncode else "(no error: " + (
        err.strip().splitlines() or ["stored?"])[-1][:80] + ")"
    return {"fault": "history DB locked", "saw": saw, "seconds": secs,
            "intact": ok_hist and ok_dev, "why": f"history {why_hist}; {why_dev}"}


_NS_SCRIPT = r'''
import json, subprocess, sys, time
from pathlib import Path
from edgeq.device.store import Layout, Store
from edgeq.host.deploy import deploy
from edgeq.host.link.local import LocalConnection
sys.path.insert(0, sys.argv[4])
from fault_injection import device_intact, error_line
mnt, arts, big = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(mnt)], check=True)
d = mnt / "edgeq"
out = {}
with LocalConnection() as conn:
    deploy(conn, arts, device_dir=str(d))
    expect = Store(d).current_deployment()
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "edgeq.host", "deploy", str(big), "--host",
                        "local", "--device-dir", str(d)], capture_output=True, text=True)
    out["seconds"] = time.monotonic() - t0
    out["saw"] = error_line(p.stderr, p.stdout) if p.returncode else "(deploy succeeded)"
    out["intact"], out["why"] = device_intact(d, expect)
    df = subprocess.run(["df", "-h", str(mnt)], capture_output=True, text=True)
    out["df"] = df.stdout.splitlines()[-1]
    conn.run(Layout(str(d)).agent_argv("stop"))
print("FAULT " + json.dumps(out))
'''


def fault_disk_full(arts: Path, tmp: Path) -> dict[str, Any]:
    if shutil.which("unshare") is None:
        return {"fault": "disk full on device", "saw": "(skipped: no unshare)",
                "seconds": float("nan"), "intact": False, "why": "not run"}
    mnt = tmp / "tmpfs-device"
    mnt.mkdir()
    big = other_artifacts(arts, tmp / "big-arts", 8 << 20)
    res = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                          _NS_SCRIPT, str(mnt), str(arts), str(big),
                          str(Path(__file__).resolve().parent)],
                         capture_output=True, text=True, timeout=900)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("FAULT ")]
    if not line:
        return {"fault": "disk full on device (6 MiB tmpfs)", "saw": error_line(res.stderr),
                "seconds": float("nan"), "intact": False, "why": "the namespace run failed"}
    doc = json.loads(line[-1][6:])
    return {"fault": "disk full on device (6 MiB tmpfs)", "saw": doc["saw"],
            "seconds": doc["seconds"], "intact": doc["intact"],
            "why": doc["why"] + f"; {' '.join(doc['df'].split()[1:5])}"}


# ----------------------------------------------------------------------------- main


def build_artifacts(out: Path) -> Path:
    from edgeq.host.quantize import quantize
    from edgeq.host.train import train

    train(out, model_name="mnist-cnn", epochs=1, seed=0, train_limit=3000)
    quantize(out, calibration_size=100, seed=0, eval_limit=2000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=None,
                    help="artifacts dir (default: train a tiny one, ~1 min)")
    ap.add_argument("--stop-timeout-s", type=float, default=240.0,
                    help="how long to wait for bench-remote to end after SIGSTOP")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("error: needs root (sshd on loopback, a tmpfs in a mount namespace)",
              file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="edgeq-faults-"))
    rows: list[dict[str, Any]] = []
    sshd: Optional[LoopbackSSHD] = None
    d = tmp / "device" / "edgeq"
    try:
        arts = args.artifacts or build_artifacts(tmp / "artifacts")
        (tmp / "sshd").mkdir()
        sshd = LoopbackSSHD(tmp / "sshd")
        db = tmp / "history.sqlite3"
        setup = edgeq("deploy", str(arts), *sshd.cli(), "--device-dir", str(d),
                      "--offline-wheels")
        out, err = setup.communicate(timeout=1800)
        if setup.returncode != 0:
            print(f"error: the first deploy failed: {error_line(err)}", file=sys.stderr)
            return 1
        first = edgeq("bench-remote", str(arts), *sshd.cli(), "--device-dir", str(d),
                      "--rounds", "1", *BENCH, env={"EDGEQ_HISTORY_DB": str(db)})
        first.communicate(timeout=600)
        steps: list[Callable[[], dict[str, Any]]] = [
            lambda: fault_link_cut(sshd, d, arts, tmp),
            lambda: fault_sshd_killed(sshd, d, arts, tmp),
            lambda: _bench_fault("daemon SIGKILLed mid-bench", sshd, d, arts, db,
                                 signal.SIGKILL, 600),
            lambda: _bench_fault("daemon SIGSTOPped mid-bench", sshd, d, arts, db,
                                 signal.SIGSTOP, args.stop_timeout_s),
            lambda: fault_history_locked(sshd, d, arts, db),
            lambda: fault_disk_full(arts, tmp),
        ]
        for step in steps:
            t = threading.Thread(target=lambda: rows.append(step()))
            t.start()
            t.join()
            print(f"  done: {rows[-1]['fault']}", file=sys.stderr, flush=True)
            if "daemon" in rows[-1]["fault"]:
                _restart_daemon(d)
    finally:
        if d.exists():
            subprocess.run(Layout(str(d)).agent_argv("stop"), capture_output=True, timeout=30)
        if sshd is not None and sshd.proc is not None and sshd.proc.poll() is None:
            sshd.kill_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    w = max(len(r["saw"]) for r in rows)
    print(f"| {'fault':<36} | {'what the user saw':<{w}} | {'s to error':>10} | intact |")
    print(f"|{'-' * 38}|{'-' * (w + 2)}|{'-' * 12}|--------|")
    for r in rows:
        print(f"| {r['fault']:<36} | {r['saw']:<{w}} | {r['seconds']:>10.1f} | "
              f"{'yes' if r['intact'] else 'NO':<6} |")
    print()
    for r in rows:
        print(f"{r['fault']}: {r['why']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
