"""`edgeq deploy`: put the agent, deploy.sh, the models and the evaluation data on a device.

`deploy(conn, artifacts_dir, ...)` works on any `Connection` (SSH or local):

1. checks the artifacts directory against its manifest (sha256 of every file);
2. probes the device (arch, Python, glibc, home) with a small stdlib-only Python helper that
   is passed as one argv word (`python3 -c CODE ARGS...`, every word quoted; never a pasted
   shell string);
3. with offline wheels, downloads the device's wheels on the host (`pip download
   --platform ... --python-version ... --only-binary=:all:`) into a per-platform cache;
4. sends every file that is not already on the device with the same sha256: upload to a
   temp name in the same remote directory, verify its sha256 there, rename (so a cut
   connection leaves no half-written file under a real name);
5. switches the agent code atomically (content-addressed release directory + symlink swap);
6. runs deploy.sh on the device (venv, runtime, daemon) and parses its `EDGEQ_DEPLOY` line;
7. writes `deployments/current.json` last, atomically, once everything it names is in place.

An interrupted deploy therefore leaves the previous deployment intact and usable.
`agent_argv` is the one way host code builds the command that runs the agent on the device.
Imports: standard library, platformdirs (lazily), edgeq.device.errors, edgeq.device.store
(atomic writes), edgeq.host.transport.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edgeq.device.errors import EdgeqError, UsageError
from edgeq.device.fileutil import sha256_file
from edgeq.device.store import MODEL_KINDS, atomic_write_bytes
from edgeq.host.artifacts import ArtifactsError, load_artifacts
from edgeq.host.transport import Connection, ProgressCallback

logger = logging.getLogger(__name__)

#: (event name, details) -> None: "probe", "wheels", "send", "skip", "script", "done"
EventCallback = Callable[[str, dict], None]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICE_SRC = REPO_ROOT / "device"
# deploy.sh: next to this module in an installed wheel (package data edgeq/host/deploy.sh),
# at the repository root in a source checkout
DEPLOY_SCRIPT = next((p for p in (Path(__file__).resolve().parent / "deploy.sh",
                                  REPO_ROOT / "deploy.sh") if p.is_file()),
                     REPO_ROOT / "deploy.sh")
RUNTIMES = ("auto", "litert", "tflite-runtime")
DEPLOY_MARKER = "EDGEQ_DEPLOY "
SCRIPT_TIMEOUT_S = 1800.0
HELPER_TIMEOUT_S = 120.0
MIN_PYTHON = (3, 9)


class DeviceProbeError(EdgeqError):
    """The device cannot be probed (no python3, too old, unexpected answer)."""


class TransferError(EdgeqError):
    """A file arrived on the device with another sha256 than it was sent with."""


class WheelDownloadError(EdgeqError):
    """`pip download` on the host could not fetch wheels for the device's platform."""


class DeployScriptError(EdgeqError):
    """deploy.sh failed on the device."""


# ---------------------------------------------------------------------------------------------
# the remote helper: stdlib-only Python, run as `python3 -c HELPER OP ARGS...`
# ---------------------------------------------------------------------------------------------

_HELPER = r'''
import hashlib, json, os, platform, sys, tempfile
def sha(p):
    h = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
    except OSError:
        return None
    return h.hexdigest()
def fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    os.close(fd)
op, args = sys.argv[1], sys.argv[2:]
out = {}
if op == "probe":
    libc = platform.libc_ver()
    out = {"machine": platform.machine(), "python": platform.python_version(),
           "python_path": sys.executable, "libc": libc[0], "libc_version": libc[1],
           "home": os.path.expanduser("~"), "system": platform.system()}
elif op == "prepare":
    for d in args:
        os.makedirs(d, exist_ok=True)
        for n in os.listdir(d):
            if n.startswith(".") and n.endswith(".part"):
                try:
                    os.unlink(os.path.join(d, n))
                except OSError:
                    pass
elif op == "hashes":
    out = {p: sha(p) for p in args}
elif op == "install":
    bad = []
    for i in range(0, len(args), 3):
        tmp, final, want = args[i:i + 3]
        got = sha(tmp)
        if got != want:
            bad.append({"path": final, "got": got, "want": want})
            try:
                os.unlink(tmp)
            except OSError:
                pass
            continue
        fd = os.open(tmp, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        fsync_dir(os.path.dirname(final))
    out = {"bad": bad}
elif op == "write":
    final, want = args
    data = sys.stdin.buffer.read()
    if hashlib.sha256(data).hexdigest() != want:
        out = {"bad": [{"path": final}]}
    else:
        d = os.path.dirname(final)
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(final) + ".", suffix=".part", dir=d)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        fsync_dir(d)
        out = {"bad": []}
elif op == "link":
    link, target = args
    previous = os.readlink(link) if os.path.islink(link) else None
    if os.path.isdir(link) and not os.path.islink(link):
        os.rename(link, link + ".old-" + str(os.getpid()))
    tmp = link + ".tmp-" + str(os.getpid())
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(os.path.dirname(link))
    # keep the new release and the one before it; older ones go
    base = os.path.dirname(link)
    keep = {os.path.basename(target), os.path.basename(previous or "")}
    rel = os.path.join(base, os.path.dirname(target))
    import shutil
    for n in os.listdir(rel):
        if n not in keep:
            shutil.rmtree(os.path.join(rel, n), ignore_errors=True)
print(json.dumps(out))
'''


def _helper(conn: Connection, op: str, *args: str, stdin: Optional[bytes] = None,
            python: str = "python3") -> dict[str, Any]:
    argv = [python, "-c", _HELPER, op, *args]
    result = conn.run(argv, stdin=stdin, timeout_s=HELPER_TIMEOUT_S)
    if result.exit_status == 127:
        raise DeviceProbeError(
            f"python3 is not installed on {conn.name}",
            hint="install it on the device: sudo apt install python3 python3-venv",
        )
    if not result.ok:
        err = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DeviceProbeError(
            f"the deploy helper ({op}) failed on {conn.name}: {err[-1] if err else 'no output'}",
            hint="check the device directory's permissions and free space; --debug shows more",
        )
    try:
        out = json.loads(result.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise DeviceProbeError(f"the deploy helper ({op}) on {conn.name} answered no JSON "
                               f"({exc})", hint="check the device's python3") from None
    return out if isinstance(out, dict) else {}


# ---------------------------------------------------------------------------------------------
# public helpers
# ---------------------------------------------------------------------------------------------


def resolve_device_dir(conn: Connection, device_dir: str) -> str:
    """The device directory as an absolute path on the device (`~` is the device user's home)."""
    d = str(device_dir).strip()
    if not d:
        raise UsageError("--device-dir is empty", hint="use the default ~/.edgeq")
    if d == "~" or d.startswith("~/"):
        d = conn.home().rstrip("/") + d[1:]
    elif d.startswith("~"):
        raise UsageError(f"--device-dir {device_dir!r}: only ~ (the device user's home) is "
                         "supported", hint="give an absolute path or one starting with ~/")
    if not d.startswith("/"):
        d = posixpath.join(conn.home(), d)
    return posixpath.normpath(d)


def agent_argv(device_dir_abs: str, *args: str) -> list[str]:
    """argv that runs `python -m edgeq.device --home DIR ARGS...` on the device.

    `DIR/bin/python` is the interpreter deploy.sh set up (the venv's, or the one given with
    --python); `DIR/agent` holds the pushed agent code. Argv words only, no shell string.
    """
    d = device_dir_abs.rstrip("/") or "/"
    return ["env", f"PYTHONPATH={d}/agent", "PYTHONUNBUFFERED=1", f"{d}/bin/python",
            "-m", "edgeq.device", "--home", d, *[str(a) for a in args]]


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------


@dataclass
class FileSend:
    """One file to have on the device: where from, where to, what it must hash to."""

    local: Path
    remote: str
    sha256: str
    size_bytes: int
    category: str  # agent | script | model | data | wheel
    sent: bool = False


def agent_files() -> list[tuple[Path, str]]:
    """(local file, name) of the agent code pushed to agent/edgeq/device/."""
    files = sorted(DEVICE_SRC.glob("*.py")) + [DEVICE_SRC / "edgeq-agent.service"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        raise ArtifactsError(f"the agent code is incomplete: {', '.join(missing) or DEVICE_SRC}",
                             hint="reinstall edgeq")
    return [(f, f.name) for f in files]


def _agent_release_id(files: Sequence[tuple[Path, str]]) -> str:
    h = hashlib.sha256()
    for path, name in files:
        h.update(name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# offline wheels
# ---------------------------------------------------------------------------------------------


def platform_tags(machine: str, glibc_version: str) -> list[str]:
    """pip --platform tags a device with this arch and glibc accepts (manylinux 2_17..2_NN)."""
    arch = {"arm64": "aarch64", "armv8l": "armv7l", "amd64": "x86_64"}.get(machine, machine)
    m = re.match(r"(\d+)\.(\d+)", glibc_version or "")
    if not m or m.group(1) != "2":
        raise WheelDownloadError(
            f"the device's C library ({glibc_version or 'unknown'}) is not glibc 2.x",
            hint="offline wheels need a glibc (manylinux) device; deploy without "
                 "--offline-wheels so the device installs from the index")
    minor = int(m.group(2))
    tags = [f"manylinux_2_{n}_{arch}" for n in range(minor, 16, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch in ("x86_64", "i686"):
        tags += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    tags.append(f"linux_{arch}")
    return tags


def runtime_requirements(runtime: str, python_version: str) -> list[str]:
    if runtime == "litert":
        return ["ai-edge-litert", "numpy", "psutil"]
    if runtime == "tflite-runtime":
        return ["tflite-runtime==2.14.0", "numpy<2", "psutil"]
    raise UsageError(f"unknown runtime {runtime!r}", hint="use auto, litert or tflite-runtime")


def default_wheel_cache() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("edgeq")) / "wheels"


def download_wheels(machine: str, python_version: str, glibc_version: str, runtime: str,
                    cache_root: Optional[Path] = None) -> tuple[str, Path, list[Path]]:
    """(runtime chosen, cache dir, wheels) for the device, downloaded once and reused."""
    tags = platform_tags(machine, glibc_version)
    pyver = ".".join(python_version.split(".")[:2])
    candidates = ["litert", "tflite-runtime"] if runtime == "auto" else [runtime]
    errors: list[str] = []
    for rt in candidates:
        if rt == "tflite-runtime" and tuple(int(x) for x in pyver.split(".")) > (3, 11):
            errors.append(f"tflite-runtime has no wheels for Python {pyver}")
            continue
        reqs = runtime_requirements(rt, python_version)
        key = f"cp{pyver.replace('.', '')}-{tags[0]}-{rt}"
        cache = Path(cache_root or default_wheel_cache()) / key
        marker = cache / "complete.json"
        try:
            done = json.loads(marker.read_text())
            wheels = [cache / n for n in done["wheels"]]
            if done.get("requirements") == reqs and all(w.is_file() for w in wheels):
                logger.info("reusing the wheel cache %s", cache)
                return rt, cache, wheels
        except (OSError, ValueError, KeyError, TypeError):
            pass
        cache.mkdir(parents=True, exist_ok=True)
        before = {p.name for p in cache.glob("*.whl")}
        argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                "--only-binary=:all:", "--python-version", pyver, "--implementation", "cp",
                "--dest", str(cache), "--progress-bar", "off"]
        for tag in tags:
            argv += ["--platform", tag]
        argv += reqs
        logger.info("pip download: %s", argv)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            errors.append(f"{rt}: {last[-1] if last else 'pip download failed'}")
            continue
        names = _downloaded_names(proc.stdout, cache, before)
        wheels = [cache / n for n in names]
        doc = {"requirements": reqs, "wheels": names}
        atomic_write_bytes(marker, json.dumps(doc).encode("utf-8"), mode=None)
        return rt, cache, wheels
    raise WheelDownloadError(
        f"no wheels for Python {pyver} on {machine} ({tags[0]}): {'; '.join(errors)}",
        hint="check the host's internet access to PyPI, or choose --runtime; a device on "
             "Python > 3.11 needs ai-edge-litert")


def _downloaded_names(stdout: str, cache: Path, before: set[str]) -> list[str]:
    """The wheel file names pip resolved ("Saved ..." / "File was already downloaded ...")."""
    names: set[str] = set()
    for line in stdout.splitlines():
        m = re.search(r"(?:Saved|File was already downloaded)\s+(\S+\.whl)", line)
        if m:
            names.add(Path(m.group(1)).name)
    if not names:  # older/newer pip wording: fall back to what is in the directory
        names = {p.name for p in cache.glob("*.whl")} or before
    return sorted(n for n in names if (cache / n).is_file())


# ---------------------------------------------------------------------------------------------
# deploy
# ---------------------------------------------------------------------------------------------


@dataclass
class DeployReport:
    device: str
    device_dir: str
    arch: str
    python: str
    glibc: str
    runtime: str
    runtime_version: str
    daemon: str
    venv: str
    files: list[dict[str, Any]] = field(default_factory=list)
    script: dict[str, Any] = field(default_factory=dict)
    deployment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        sent = [f for f in self.files if f["sent"]]
        skipped = [f for f in self.files if not f["sent"]]

        def total(fs: list[dict[str, Any]], cats: Sequence[str] = ()) -> int:
            return sum(f["size_bytes"] for f in fs if not cats or f["category"] in cats)

        return {
            "schema": "edgeq.deploy/1",
            "device": self.device,
            "device_dir": self.device_dir,
            "arch": self.arch,
            "python": self.python,
            "glibc": self.glibc,
            "runtime": f"{self.runtime} {self.runtime_version}".strip(),
            "runtime_name": self.runtime,
            "runtime_version": self.runtime_version,
            "daemon": self.daemon,
            "venv": self.venv,
            "sent_bytes": total(sent),
            "skipped_bytes": total(skipped),
            "files_sent": len(sent),
            "files_skipped": len(skipped),
            "models_bytes_sent": total(sent, ("model",)),
            "data_bytes_sent": total(sent, ("data",)),
            "wheels_bytes_sent": total(sent, ("wheel",)),
            "agent_bytes_sent": total(sent, ("agent", "script")),
            "files": self.files,
            "deployment": self.deployment,
            "script": self.script,
            "seconds": round(self.seconds, 3),
        }


def deploy(
    conn: Connection,
    artifacts_dir: Path,
    *,
    device_dir: str = "~/.edgeq",
    offline_wheels: Optional[bool] = None,
    runtime: str = "auto",
    wheel_cache: Optional[Path] = None,
    start_daemon: bool = True,
    progress: Optional[ProgressCallback] = None,
    events: Optional[EventCallback] = None,
) -> dict[str, Any]:
    """Deploy `artifacts_dir` and the agent to `conn`; the `edgeq.deploy/1` summary dict.

    `offline_wheels`: True pushes wheels downloaded on the host; None decides by whether the
    device reaches PyPI. `progress(done, total)` counts bytes sent over all files;
    `events(name, details)` reports "probe", "wheels", "send", "skip", "script" and "done".
    `start_daemon=False` installs everything but leaves the daemon stopped.
    """
    t0 = time.perf_counter()
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}", hint="use auto, litert or tflite-runtime")

    def emit(name: str, **details: Any) -> None:
        if events is not None:
            events(name, details)

    arts = load_artifacts(Path(artifacts_dir))
    if not DEPLOY_SCRIPT.is_file():
        raise ArtifactsError(f"{DEPLOY_SCRIPT} is missing", hint="reinstall edgeq")
    is_local = conn.name == "local"
    probe = _helper(conn, "probe")
    py = tuple(int(x) for x in re.findall(r"\d+", str(probe.get("python", "0.0")))[:2])
    if py < MIN_PYTHON:
        raise DeviceProbeError(
            f"{conn.name} has Python {probe.get('python')}; the agent needs Python >= 3.9",
            hint="install a newer python3 on the device (Raspberry Pi OS bullseye or later)")
    d = resolve_device_dir(conn, device_dir)
    emit("probe", device_dir=d, **probe)

    # offline wheels (never for the local device: it uses this interpreter)
    wheels: list[Path] = []
    chosen_runtime = runtime
    if offline_wheels is None and not is_local:
        offline_wheels = not _device_reaches_index(conn)
        emit("index", reachable=not offline_wheels)
    if offline_wheels and not is_local:
        chosen_runtime, cache, wheels = download_wheels(
            str(probe.get("machine")), str(probe.get("python")),
            str(probe.get("libc_version")), runtime, wheel_cache)
        emit("wheels", runtime=chosen_runtime, cache=str(cache), count=len(wheels))

    # the plan
    agent = agent_files()
    release = _agent_release_id(agent)
    rel_dir = posixpath.join(d, "agent-releases", release)
    pkg_dir = posixpath.join(rel_dir, "edgeq", "device")
    plan: list[FileSend] = []

    def add(local: Path, remote: str, category: str, sha: Optional[str] = None) -> None:
        plan.append(FileSend(local, remote, sha or sha256_file(local), local.stat().st_size,
                             category))

    for path, name in agent:
        add(path, posixpath.join(pkg_dir, name), "agent")
    add(DEPLOY_SCRIPT, posixpath.join(d, "deploy.sh"), "script")
    for kind in MODEL_KINDS:
        path, sha = arts.models[kind].path, arts.models[kind].sha256
        add(path, posixpath.join(d, "models", f"{sha}.tflite"), "model", sha)
    if arts.eval_data is not None:
        path, sha = arts.eval_data.path, arts.eval_data.sha256
        add(path, posixpath.join(d, "data", f"{sha}.npz"), "data", sha)
    for w in wheels:
        add(w, posixpath.join(d, "wheels", w.name), "wheel")

    dirs = sorted({posixpath.dirname(f.remote) for f in plan} |
                  {posixpath.join(d, sub) for sub in ("deployments", "logs", "bin")})
    _helper(conn, "prepare", *dirs)
    present = _helper(conn, "hashes", *[f.remote for f in plan])
    todo = [f for f in plan if present.get(f.remote) != f.sha256]
    for f in plan:
        if f not in todo:
            emit("skip", file=f.remote, category=f.category, size_bytes=f.size_bytes)

    total = sum(f.size_bytes for f in todo)
    base = 0
    if progress is not None:
        progress(0, total)
    pending: list[str] = []
    for f in todo:
        emit("send", file=f.remote, category=f.category, size_bytes=f.size_bytes)
        tmp = posixpath.join(posixpath.dirname(f.remote),
                             f".{posixpath.basename(f.remote)}.{secrets.token_hex(4)}.part")
        cb = None
        if progress is not None:
            offset = base

            def cb(done: int, _total: int, _o: int = offset) -> None:
                progress(_o + done, total)

        conn.put_file(f.local, tmp, progress=cb)
        base += f.size_bytes
        pending += [tmp, f.remote, f.sha256]
        f.sent = True
        if len(pending) >= 60:
            _install(conn, pending)
            pending = []
    if pending:
        _install(conn, pending)
    # the agent code switches in one rename: agent -> agent-releases/<content hash>
    _helper(conn, "link", posixpath.join(d, "agent"), posixpath.join("agent-releases", release))

    # provision: venv, runtime, daemon
    argv = ["bash", posixpath.join(d, "deploy.sh"), "--home", d]
    if is_local:
        argv += ["--python", sys.executable]
    else:
        argv += ["--runtime", chosen_runtime]
        if wheels:
            argv += ["--wheels", posixpath.join(d, "wheels")]
    if not start_daemon:
        argv.append("--no-daemon")
    emit("script", argv=argv)
    result = conn.run(argv, timeout_s=SCRIPT_TIMEOUT_S)
    script = _parse_script(result.stdout)
    if not result.ok or script is None:
        lines = [ln.strip() for ln in result.stderr.decode("utf-8", "replace").splitlines()
                 if ln.strip()]
        errors = [ln[len("error:"):].strip() for ln in lines if ln.startswith("error:")]
        hints = [ln[len("hint:"):].strip() for ln in lines if ln.startswith("hint:")]
        what = errors[-1] if errors else (lines[-1] if lines else "no output")
        raise DeployScriptError(
            f"deploy.sh failed on {conn.name} (exit {result.exit_status}): {what}",
            hint=(hints[-1] + "; " if hints else "") + f"run it by hand to see everything: "
                 f"bash {d}/deploy.sh --home {d} (the previous deployment is still in place)")

    # the deployment record, last
    deployment = {
        "model_name": arts.manifest.get("model_name"),
        **{kind: arts.models[kind].sha256 for kind in MODEL_KINDS},
        "eval_data": arts.eval_data.sha256 if arts.eval_data else None,
        "manifest": arts.manifest,
        "deployed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "agent_release": release,
    }
    _verify_named(conn, plan)
    data = (json.dumps(deployment, indent=2, sort_keys=True) + "\n").encode("utf-8")
    out = _helper(conn, "write", posixpath.join(d, "deployments", "current.json"),
                  hashlib.sha256(data).hexdigest(), stdin=data)
    if out.get("bad"):
        raise TransferError("deployments/current.json arrived damaged",
                            hint="deploy again; the previous deployment is still in place")

    report = DeployReport(
        device=conn.name, device_dir=d, arch=str(script.get("arch") or probe.get("machine")),
        python=str(script.get("python") or probe.get("python")),
        glibc=str(script.get("glibc") or probe.get("libc_version")),
        runtime=str(script.get("runtime") or ""),
        runtime_version=str(script.get("runtime_version") or ""),
        daemon=str(script.get("daemon") or "unknown"), venv=str(script.get("venv") or ""),
        files=[{"path": f.remote, "category": f.category, "sha256": f.sha256,
                "size_bytes": f.size_bytes, "sent": f.sent} for f in plan],
        script=script, deployment={k: v for k, v in deployment.items() if k != "manifest"},
        seconds=time.perf_counter() - t0)
    doc = report.to_dict()
    emit("done", **{k: v for k, v in doc.items() if k not in ("files", "script")})
    return doc


def _install(conn: Connection, triples: list[str]) -> None:
    out = _helper(conn, "install", *triples)
    bad = out.get("bad") or []
    if bad:
        names = ", ".join(posixpath.basename(b["path"]) for b in bad)
        raise TransferError(f"{names} arrived on {conn.name} with another sha256 than sent",
                            hint="deploy again; the previous deployment is still in place")


def _verify_named(conn: Connection, plan: list[FileSend]) -> None:
    """Everything current.json will name is on the device with the right sha256."""
    named = [f for f in plan if f.category in ("model", "data")]
    got = _helper(conn, "hashes", *[f.remote for f in named])
    bad = [f.remote for f in named if got.get(f.remote) != f.sha256]
    if bad:
        raise TransferError(f"{', '.join(bad)} is missing or damaged on {conn.name}",
                            hint="deploy again; the previous deployment is still in place")


def _parse_script(stdout: bytes) -> Optional[dict[str, Any]]:
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith(DEPLOY_MARKER):
            try:
                doc = json.loads(line[len(DEPLOY_MARKER):])
            except ValueError:
                return None
            return _normalize_script(doc) if isinstance(doc, dict) else None
    return None


def _normalize_script(doc: dict[str, Any]) -> dict[str, Any]:
    """Flat strings for runtime/daemon/venv, whichever deploy.sh wording the device has."""
    rt = doc.get("runtime")
    if isinstance(rt, dict):
        doc["runtime"], doc["runtime_version"] = rt.get("name"), rt.get("version")
    dm = doc.get("daemon")
    if isinstance(dm, dict):
        doc["daemon"] = f"{dm.get('state')} ({dm.get('mode')})"
    if isinstance(doc.get("venv"), bool):
        doc["venv"] = "venv" if doc["venv"] else "external"
    return doc


_INDEX_PROBE = (
    "import socket,sys\n"
    "try:\n"
    "    socket.create_connection(('pypi.org', 443), timeout=4).close()\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


def _device_reaches_index(conn: Connection) -> bool:
    """Whether the device can open a TCP connection to PyPI (for offline_wheels=None)."""
    try:
        return conn.run(["python3", "-c", _INDEX_PROBE], timeout_s=15).ok
    except EdgeqError:
        return False
