"""`edgeq deploy`: put the agent, deploy.sh, the models and the evaluation data on a device.

`deploy(conn, artifacts_dir, ...)` works on any `Connection` (SSH or local):

1. checks the artifacts directory against its manifest (sha256 of every file);
2. probes the device (arch, Python, glibc, home, the sha256 of the agent release's files,
   and what is at the device directory) with a small stdlib-only Python bootstrap passed as
   one argv word (`python3 -c CODE ARGS...`, every word quoted; never a pasted shell string);
   a device directory that is not new, empty or edgeq's (edgeq.device.store.home_problem:
   no `.edgeq-store` marker, not an earlier edgeq's layout, another user's) is refused
   before anything is written; a new one is created 0700 and marked;
3. with offline wheels, downloads the device's wheels on the host (`pip download
   --platform ... --python-version ... --only-binary=:all:`) into a per-platform cache;
4. pushes the agent code, unless that release is already there: upload into a staging
   directory, then the bootstrap verifies every sha256 and renames the directory to the
   content-addressed `agent-releases/<id>`;
5. from then on the device's own code does the rest: `python3 -m edgeq.device.install` from
   the pushed release (before any venv exists) creates the store's directories, says which
   files are already there with the same sha256 (those are not sent again), and installs
   every uploaded temp file after checking its sha256 on arrival, through the store's atomic
   writers (temp file, fsync, rename; a cut connection leaves no half-written file under a
   real name);
6. runs deploy.sh on the device with `--release` (venv, runtime; then the agent symlink is
   swapped to the new release, only once all that worked; then the daemon is restarted if
   its code or interpreter changed, after any running measurement) and parses its
   `EDGEQ_DEPLOY` line;
7. writes `deployments/current.json` last (Store.write_deployment on the device), once the
   store has verified everything it names; then deletes the wheels this deploy did not need.

An interrupted deploy therefore leaves the previous deployment intact and usable.

A repeated deploy of unchanged artifacts costs one remote command (`check_unchanged`): before
step 2, the host sends what it would deploy (sha256s and the release id, computed on the host
and cached per file by size and mtime) to the pushed release's `edgeq.device.install check`,
which compares them with current.json, the deploy stamp (deployments/deploy-stamp.json: this
deploy's settings and deploy.sh's summary, written with current.json), the files on the device
(re-hashed: a damaged file is a change) and the daemon's status. When all match, deploy
returns `"unchanged": true` without probing, downloading wheels or running deploy.sh; any
difference (listed in the doc's `changed`) takes the full path above, unchanged.
Why a bootstrap string at all: the first time, no edgeq code is on the device, and the code
that checks and installs files is the very code being pushed; so the bootstrap only probes
and verifies-and-renames the agent release, and everything after that runs device/install.py.
Every remote path comes from edgeq.device.store.Layout.
Imports: standard library, platformdirs (lazily), edgeq.device (errors, fileutil, store),
edgeq.host.artifacts, edgeq.host.link.
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
from edgeq.device.fileutil import sha256_bytes, sha256_file, utc_now
from edgeq.device.store import (
    MODEL_KINDS,
    STORE_FORMAT,
    STORE_MARKER,
    Layout,
    atomic_write_bytes,
    home_problem,
)
from edgeq.host.artifacts import ArtifactsError, load_artifacts
from edgeq.host.link import (
    Connection,
    ConnectionLostError,
    ProgressCallback,
    resolve_device_dir,
)

logger = logging.getLogger(__name__)

#: (event name, details) -> None: "probe", "index", "wheels", "send", "skip", "script", "done"
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
#: where the agent package lives inside a release directory
AGENT_PACKAGE = "edgeq/device"
#: uploads per `install` call (keeps the argv well under ARG_MAX)
INSTALL_BATCH = 20


class DeviceProbeError(EdgeqError):
    """The device cannot be probed (no python3, too old, unexpected answer)."""


class TransferError(EdgeqError):
    """A file arrived on the device with another sha256 than it was sent with."""


class WheelDownloadError(EdgeqError):
    """`pip download` on the host could not fetch wheels for the device's platform."""


class DeployScriptError(EdgeqError):
    """deploy.sh failed on the device."""


# ---------------------------------------------------------------------------------------------
# talking to the device: the bootstrap (before the agent is there), then device/install.py
# ---------------------------------------------------------------------------------------------

_BOOTSTRAP = r'''
import hashlib, json, os, platform, shutil, sys
def sha(p):
    h = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
    except OSError:
        return None
    return h.hexdigest()
def facts(home, marker):  # what is at the device directory: edgeq.device.store.home_facts
    f = {"home": home, "exists": os.path.lexists(home), "is_dir": os.path.isdir(home),
         "owner_uid": None, "uid": os.geteuid(), "marker_format": None, "names": [],
         "legacy": False}
    if not f["exists"]:
        return f
    f["owner_uid"] = os.stat(home).st_uid if f["is_dir"] else os.lstat(home).st_uid
    if not f["is_dir"]:
        return f
    f["names"] = sorted(os.listdir(home))[:64]
    try:
        with open(os.path.join(home, marker), "rb") as fh:
            f["marker_format"] = int(json.loads(fh.read(4096).decode())["format"])
    except FileNotFoundError:
        pass
    except Exception:
        f["marker_format"] = -1
    j = lambda *p: os.path.join(home, *p)
    f["legacy"] = (os.path.islink(j("agent")) and os.path.isdir(j("agent-releases"))
                   and os.path.isfile(j("deployments", "current.json")))
    return f
op, a = sys.argv[1], sys.argv[2:]
if op == "probe":  # probe HOME MARKER PKG NAME...: this machine, the device directory, and
    libc = platform.libc_ver()  # the sha256 of a release's files
    out = {"machine": platform.machine(), "python": platform.python_version(),
           "python_path": sys.executable, "libc": libc[0], "libc_version": libc[1],
           "home": os.path.expanduser("~"), "system": platform.system(),
           "device_dir": facts(a[0], a[1]),
           "release": {n: sha(os.path.join(a[2], n)) for n in a[3:]}}
elif op == "claim":  # claim HOME MARKER FORMAT: create it 0700; mark it when it is empty
    home, marker = a[0], a[1]
    if not os.path.isdir(home):
        os.makedirs(os.path.dirname(home), exist_ok=True)
        os.mkdir(home, 0o700)
    os.chmod(home, 0o700)
    if not os.listdir(home):
        tmp = os.path.join(home, "." + marker + ".part")
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"format": int(a[2])}) + "\n")
        os.replace(tmp, os.path.join(home, marker))
    out = {"ok": True}
else:  # release STAGING FINAL PKG NAME SHA...: verify, fsync, rename the directory
    staging, final, pkg, names, shas = a[0], a[1], a[2], a[3::2], a[4::2]
    bad = [n for n, s in zip(names, shas) if sha(os.path.join(staging, pkg, n)) != s]
    if not bad:
        for n in names:
            p = os.path.join(staging, pkg, n)
            os.chmod(p, 0o644)
            fd = os.open(p, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        if os.path.isdir(final):  # a damaged copy of this release
            os.rename(final, final + ".old.part")
        os.rename(staging, final)
        shutil.rmtree(final + ".old.part", ignore_errors=True)
        fd = os.open(os.path.dirname(final), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    out = {"bad": bad}
print(json.dumps(out))
'''


#: `edgeq.device.install check` from the release the host would push (if it is there):
#: argv HOME_WORD RELEASE SPEC; `~` is expanded on the device, so no other round trip
_CHECK = r'''
import json, os, sys
home = os.path.normpath(os.path.expanduser(sys.argv[1]))
rel = os.path.join(home, "agent-releases", sys.argv[2])
if not os.path.isfile(os.path.join(rel, "edgeq", "device", "install.py")):
    print(json.dumps({"unchanged": False, "home": home,
                      "changed": ["agent release %s is not on the device" % sys.argv[2]]}))
    sys.exit(0)
sys.path.insert(0, rel)
from edgeq.device.install import main
sys.exit(main(["--home", home, "check", sys.argv[3]]))
'''


def _device_call(conn: Connection, argv: Sequence[str], what: str, *,
                 stdin: Optional[bytes] = None, env: Optional[dict[str, str]] = None
                 ) -> dict[str, Any]:
    """Run `argv` on the device; the JSON object on the last line of its stdout."""
    result = conn.run(argv, stdin=stdin, timeout_s=HELPER_TIMEOUT_S, env=env)
    _check_link(conn, result, what)
    if result.exit_status == 127:
        raise DeviceProbeError(
            f"python3 is not installed on {conn.name}",
            hint="install it on the device: sudo apt install python3 python3-venv",
        )
    if not result.ok:
        error, hint = _error_lines(result.stderr)
        raise DeviceProbeError(
            f"{what} failed on {conn.name}: {error}",
            hint=hint or "check the device directory's permissions and free space; "
                         "--debug shows more",
        )
    try:
        out = json.loads(result.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise DeviceProbeError(f"{what} on {conn.name} answered no JSON ({exc})",
                               hint="check the device's python3") from None
    return out if isinstance(out, dict) else {}


def _check_link(conn: Connection, result: Any, what: str) -> None:
    """ConnectionLostError when the command ended without an exit status (sshd or the link
    died under it: the status reads -1), rather than blaming the command."""
    if result.exit_status < 0 and not result.stdout.strip():
        raise ConnectionLostError(
            f"the connection to {conn.name} dropped while {what} ran (no exit status)",
            hint="reconnect and deploy again; the previous deployment is still in place")


def _error_lines(stderr: bytes) -> tuple[str, str]:
    """(the last `error:` line, else the last line; the last `hint:` line or '') of stderr."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    errors = [ln[len("error:"):].strip() for ln in lines if ln.startswith("error:")]
    hints = [ln[len("hint:"):].strip() for ln in lines if ln.startswith("hint:")]
    return (errors[-1] if errors else lines[-1] if lines else "no output",
            hints[-1] if hints else "")


def _bootstrap(conn: Connection, op: str, *args: str) -> dict[str, Any]:
    return _device_call(conn, ["python3", "-c", _BOOTSTRAP, op, *args], f"the deploy {op}")


def _install_call(conn: Connection, lay: Layout, release: str, op: str, *args: str,
                  stdin: Optional[bytes] = None) -> dict[str, Any]:
    """`python3 -m edgeq.device.install --home HOME OP ARGS...` from the pushed release."""
    argv = ["python3", "-m", "edgeq.device.install", "--home", lay.home, op, *args]
    return _device_call(conn, argv, f"edgeq.device.install {op}", stdin=stdin,
                        env={"PYTHONPATH": lay.release(release)})


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


#: sha256 of host files by (path, size, mtime, inode): a fleet deploy hashes each file once
_SHA_CACHE: dict[tuple[str, int, int, int], str] = {}


def cached_sha256(path: Path) -> str:
    """sha256 of a host file, remembered while its size, mtime and inode stay the same."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    sha = _SHA_CACHE.get(key)
    if sha is None:
        sha = _SHA_CACHE[key] = sha256_file(path)
    return sha


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
        h.update(name.encode() + b"\0" + cached_sha256(path).encode() + b"\n")
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
        try:  # bounded: pip's own socket timeout, and the whole download (issue 11)
            proc = subprocess.run([*argv[:4], "--timeout", "30", *argv[4:]], capture_output=True,
                                  text=True, check=False, timeout=900)
        except subprocess.TimeoutExpired:
            errors.append(f"{rt}: pip download did not finish within 900 s")
            continue
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
    #: True: the repeated-deploy check found everything in place and nothing was done
    unchanged: bool = False
    #: why the full deploy ran (what the check found different); [] when unchanged
    changed: list[str] = field(default_factory=list)
    #: plan_s (host: artifacts, sha256s), check_s (the one remote check; None if skipped)
    timings: dict[str, Optional[float]] = field(default_factory=dict)

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
            "unchanged": self.unchanged,
            "changed": self.changed,
            "timings": {k: None if v is None else round(v, 3) for k, v in self.timings.items()},
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
    check_unchanged: bool = True,
) -> dict[str, Any]:
    """Deploy `artifacts_dir` and the agent to `conn`; the `edgeq.deploy/1` summary dict.

    `offline_wheels`: True pushes wheels downloaded on the host; None decides by whether the
    device reaches PyPI. `progress(done, total)` counts bytes sent over all files;
    `events(name, details)` reports "probe", "index", "wheels", "send", "skip", "script" and
    "done".
    `start_daemon=False` installs everything but leaves the daemon stopped.
    `check_unchanged` (with a daemon): first ask the device, in one command, whether this
    exact deployment is already in place and its daemon answering; if so return at once with
    `"unchanged": true` (event "unchanged"). False always takes the full path.
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
    is_local = conn.is_local
    agent = agent_files()
    release = _agent_release_id(agent)
    record = {  # current.json's fields (but the time), as the host would write them
        "model_name": arts.manifest.get("model_name"),
        **{kind: arts.models[kind].sha256 for kind in MODEL_KINDS},
        "eval_data": arts.eval_data.sha256 if arts.eval_data else None,
        "agent_release": release,
    }
    settings = {"runtime": runtime, "offline_wheels": offline_wheels,
                "start_daemon": start_daemon, "python": sys.executable if is_local else None}
    timings: dict[str, Optional[float]] = {"plan_s": time.perf_counter() - t0, "check_s": None}
    changed: list[str] = []
    if check_unchanged and start_daemon:
        t_check = time.perf_counter()
        spec = {"release": release, "settings": settings,
                "agent": {name: cached_sha256(path) for path, name in agent},
                "deploy_script": cached_sha256(DEPLOY_SCRIPT),
                "current": {**record, "manifest_sha256": _manifest_sha256(arts.manifest)}}
        found = _check_unchanged(conn, device_dir, spec)
        timings["check_s"] = time.perf_counter() - t_check
        if found.get("unchanged"):
            doc = _unchanged_report(conn, arts, agent, release, record, found, timings,
                                    time.perf_counter() - t0).to_dict()
            emit("unchanged", **{k: v for k, v in doc.items() if k not in ("files", "script")})
            emit("done", **{k: v for k, v in doc.items() if k not in ("files", "script")})
            return doc
        changed = [str(c) for c in found.get("changed") or []]
        logger.info("full deploy: %s", "; ".join(changed))
    d = resolve_device_dir(conn, device_dir)
    lay = Layout(d)
    pkg_dir = posixpath.join(lay.release(release), AGENT_PACKAGE)
    probe = _bootstrap(conn, "probe", d, STORE_MARKER, pkg_dir, *[name for _, name in agent])
    release_hashes = probe.pop("release", {}) or {}
    problem = home_problem(probe.pop("device_dir"))
    if problem is not None:  # nothing has been written on the device yet
        raise problem
    py = tuple(int(x) for x in re.findall(r"\d+", str(probe.get("python", "0.0")))[:2])
    if py < MIN_PYTHON:
        raise DeviceProbeError(
            f"{conn.name} has Python {probe.get('python')}; the agent needs Python >= 3.9",
            hint="install a newer python3 on the device (Raspberry Pi OS bullseye or later)")
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

    # the plan: the agent release first (the code that installs the rest), then the store
    agent_plan, plan = _store_plan(lay, arts, agent, release)
    plan += [_send(w, posixpath.join(lay.wheels_dir, w.name), "wheel") for w in wheels]

    sender = _Sender(conn, progress, emit)
    _bootstrap(conn, "claim", d, STORE_MARKER, str(STORE_FORMAT))
    if any(release_hashes.get(posixpath.basename(f.remote)) != f.sha256 for f in agent_plan):
        _push_release(conn, lay, release, agent_plan, sender)  # new or damaged: all of it
    else:
        for f in agent_plan:
            emit("skip", file=f.remote, category=f.category, size_bytes=f.size_bytes)
    # from here on the pushed release's own code (device/install.py) does the work
    present = _install_call(conn, lay, release, "prepare", *[f.remote for f in plan])
    todo = [f for f in plan if present.get(f.remote) != f.sha256]
    for f in plan:
        if f not in todo:
            emit("skip", file=f.remote, category=f.category, size_bytes=f.size_bytes)

    sender.total += sum(f.size_bytes for f in todo)
    sender.start()
    pending: list[str] = []
    for f in todo:
        tmp = posixpath.join(posixpath.dirname(f.remote),
                             f".{posixpath.basename(f.remote)}.{secrets.token_hex(4)}.part")
        sender.put(f, tmp)
        pending += [tmp, f.remote, f.sha256]
        if len(pending) >= 3 * INSTALL_BATCH:
            _install(conn, lay, release, pending)
            pending = []
    if pending:
        _install(conn, lay, release, pending)

    # provision: venv, runtime; then the agent link (agent -> agent-releases/<content hash>,
    # one rename, only once the rest worked); then the daemon, if it must be restarted
    argv = ["bash", lay.deploy_script, "--home", d, "--release", release]
    if is_local:
        argv += ["--python", sys.executable]
    else:
        argv += ["--runtime", chosen_runtime]
        if wheels:
            argv += ["--wheels", lay.wheels_dir]
    if not start_daemon:
        argv.append("--no-daemon")
    emit("script", argv=argv)
    script = _run_script(conn, lay, argv)

    # the deployment record, last: the store checks everything it names, then writes it,
    # and the stamp a repeated deploy compares with (check_unchanged)
    deployment = {**record, "manifest": arts.manifest, "deployed_utc": utc_now()}
    data = (json.dumps(deployment, indent=2, sort_keys=True) + "\n").encode("utf-8")
    stamp = {"settings": settings, "current_sha256": sha256_bytes(data), "release": release,
             "deployed_utc": deployment["deployed_utc"], "script": script}
    out = _install_call(conn, lay, release, "deployment", sha256_bytes(data),
                        json.dumps(stamp, sort_keys=True), stdin=data)
    if out.get("bad"):
        raise TransferError(
            f"{', '.join(out['bad'])} is missing or damaged on {conn.name}",
            hint="deploy again; the previous deployment is still in place")
    # wheels of earlier deploys are not needed any more (the venv is built)
    _install_call(conn, lay, release, "wheels", *[w.name for w in wheels])
    plan = agent_plan + plan

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
        seconds=time.perf_counter() - t0, changed=changed, timings=timings)
    doc = report.to_dict()
    emit("done", **{k: v for k, v in doc.items() if k not in ("files", "script")})
    return doc


def _send(local: Path, remote: str, category: str, sha: Optional[str] = None) -> FileSend:
    return FileSend(local, remote, sha or cached_sha256(local), local.stat().st_size, category)


def _store_plan(lay: Layout, arts: Any, agent: Sequence[tuple[Path, str]], release: str
                ) -> tuple[list[FileSend], list[FileSend]]:
    """(the agent release's files, deploy.sh + models + eval data) with their remote paths."""
    pkg_dir = posixpath.join(lay.release(release), AGENT_PACKAGE)
    agent_plan = [_send(path, posixpath.join(pkg_dir, name), "agent") for path, name in agent]
    plan = [_send(DEPLOY_SCRIPT, lay.deploy_script, "script")]
    for kind in MODEL_KINDS:
        plan.append(_send(arts.models[kind].path, lay.model(arts.models[kind].sha256), "model",
                          arts.models[kind].sha256))
    if arts.eval_data is not None:
        plan.append(_send(arts.eval_data.path, lay.data(arts.eval_data.sha256), "data",
                          arts.eval_data.sha256))
    return agent_plan, plan


def _manifest_sha256(manifest: dict[str, Any]) -> str:
    """The manifest as `check` hashes current.json's copy of it (compact, keys sorted)."""
    return sha256_bytes(json.dumps(manifest, sort_keys=True).encode("utf-8"))


def _check_unchanged(conn: Connection, device_dir: str, spec: dict[str, Any]
                     ) -> dict[str, Any]:
    """The device's `check` answer for `spec` (one remote command; `~` expanded there).
    A check that cannot run (no python3, an old release) is a change, not an error."""
    d = str(device_dir).strip()
    word = d if d.startswith("/") or d == "~" or d.startswith("~/") else \
        resolve_device_dir(conn, device_dir)  # raises for a bad --device-dir
    result = conn.run(["python3", "-c", _CHECK, word, spec["release"], json.dumps(spec)],
                      timeout_s=HELPER_TIMEOUT_S)
    _check_link(conn, result, "the unchanged check")
    try:
        out = json.loads(result.stdout.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        out = None
    if not result.ok or not isinstance(out, dict):
        return {"unchanged": False,
                "changed": [f"the check did not run ({_error_lines(result.stderr)[0]})"]}
    return out


def _unchanged_report(conn: Connection, arts: Any, agent: Sequence[tuple[Path, str]],
                      release: str, record: dict[str, Any], found: dict[str, Any],
                      timings: dict[str, Optional[float]], seconds: float) -> DeployReport:
    """The edgeq.deploy/1 summary of a deploy that found everything in place: every file
    skipped, the device facts from the stamp deploy.sh's summary left, the daemon's pid."""
    stamp, daemon = found.get("stamp") or {}, found.get("daemon") or {}
    script = stamp.get("script") or {}
    lay = Layout(str(found["home"]))
    agent_plan, plan = _store_plan(lay, arts, agent, release)
    venv = str(script.get("venv") or "")
    return DeployReport(
        device=conn.name, device_dir=lay.home, arch=str(script.get("arch") or ""),
        python=str(script.get("python") or ""), glibc=str(script.get("glibc") or ""),
        runtime=str(script.get("runtime") or ""),
        runtime_version=str(script.get("runtime_version") or ""),
        daemon=f"running (pid {daemon.get('pid')}; unchanged, not restarted)",
        venv="reused" if venv == "created" else venv,
        files=[{"path": f.remote, "category": f.category, "sha256": f.sha256,
                "size_bytes": f.size_bytes, "sent": False} for f in agent_plan + plan],
        script=script, deployment={**record, "deployed_utc": stamp.get("deployed_utc")},
        seconds=seconds, unchanged=True, timings=timings)


def _install(conn: Connection, lay: Layout, release: str, triples: list[str]) -> None:
    out = _install_call(conn, lay, release, "install", *triples)
    bad = out.get("bad") or []
    if bad:
        names = ", ".join(posixpath.basename(b["path"]) for b in bad)
        raise TransferError(f"{names} arrived on {conn.name} with another sha256 than sent",
                            hint="deploy again; the previous deployment is still in place")


def _push_release(conn: Connection, lay: Layout, release: str, files: list[FileSend],
                  sender: "_Sender") -> None:
    """Upload the agent release into a staging directory; the bootstrap checks every sha256
    and renames the directory to agent-releases/<release> (all or nothing)."""
    staging = posixpath.join(lay.releases_dir, f".{release}.part")
    mkdir = conn.run(["mkdir", "-p", "--", posixpath.join(staging, AGENT_PACKAGE)],
                     timeout_s=HELPER_TIMEOUT_S)
    if not mkdir.ok:
        raise DeviceProbeError(
            f"cannot create {staging} on {conn.name}: "
            f"{mkdir.stderr.decode('utf-8', 'replace').strip() or mkdir.exit_status}",
            hint="check --device-dir, its owner and free space")
    sender.total += sum(f.size_bytes for f in files)
    sender.start()
    for f in files:
        sender.put(f, posixpath.join(staging, AGENT_PACKAGE, posixpath.basename(f.remote)))
    pairs = [word for f in files for word in (posixpath.basename(f.remote), f.sha256)]
    out = _bootstrap(conn, "release", staging, lay.release(release), AGENT_PACKAGE, *pairs)
    if out.get("bad"):
        raise TransferError(
            f"{', '.join(out['bad'])} arrived on {conn.name} with another sha256 than sent",
            hint="deploy again; the previous deployment is still in place")


def _run_script(conn: Connection, lay: Layout, argv: list[str]) -> dict[str, Any]:
    """Run deploy.sh; its EDGEQ_DEPLOY summary, or DeployScriptError with its error line."""
    result = conn.run(argv, timeout_s=SCRIPT_TIMEOUT_S)
    _check_link(conn, result, "deploy.sh")
    script = _parse_script(result.stdout)
    if result.ok and script is not None:
        return script
    error, hint = _error_lines(result.stderr)
    raise DeployScriptError(
        f"deploy.sh failed on {conn.name} (exit {result.exit_status}): {error}",
        hint=(hint + "; " if hint else "") + "run it by hand to see everything: "
             f"bash {lay.deploy_script} --home {lay.home} (the previous deployment is still "
             "in place)")


class _Sender:
    """Uploads with one progress count over all files (`progress(done, total)`)."""

    def __init__(self, conn: Connection, progress: Optional[ProgressCallback],
                 emit: Callable[..., None]) -> None:
        self.conn, self.progress, self.emit = conn, progress, emit
        self.total = self.done = 0

    def start(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)

    def put(self, f: FileSend, remote: str) -> None:
        self.emit("send", file=f.remote, category=f.category, size_bytes=f.size_bytes)
        cb = None
        if self.progress is not None:
            report, base, total = self.progress, self.done, self.total

            def cb(done: int, _total: int) -> None:
                report(base + done, total)

        self.conn.put_file(f.local, remote, progress=cb)
        self.done += f.size_bytes
        f.sent = True


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
