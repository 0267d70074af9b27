"""The device store under $EDGEQ_HOME (default ~/.edgeq), and atomic file writes.

`Layout` is the one definition of where things live on a device; the daemon (through `Store`)
and the host (deploy, bench-remote, as POSIX paths on the remote side) both use it:
    models/<sha256>.tflite        models, named by content
    data/<sha256>.npz             evaluation sets, named by content
    deployments/current.json      {"model_name", "float32": sha, "int8": sha, "eval_data": sha, ...}
    deployments/deploy-stamp.json how current.json was deployed (settings, deploy.sh's summary)
    agent -> agent-releases/<id>  the agent code (a symlink swapped in one rename)
    bin/python, venv/, wheels/, deploy.sh   what deploy.sh sets up
    agent.sock, agent.pid, agent.lock, logs/agent.log
    .edgeq-store                  the marker: this directory is edgeq's (format version)
    venv/.edgeq-venv              the marker: this venv was created by edgeq
`claim_home(home)` makes a directory edgeq's: it must be missing, empty, marked, or laid out
by an earlier edgeq (adopted); its owner must be this user; it becomes 0700 and marked.
`home_facts` / `home_problem` are that check split in two (what is there / the verdict) so
the host can ask before anything is written on the device.
`parse_deployment(bytes)` is the one reader of current.json's content (the daemon's Store and
the host's bench-remote both use it). The writers (add_model, add_data, write_deployment)
are what installs files on a device, so this module stays standard-library only.
Files are verified (re-hashed against their name) before use. Every write goes to a temp
file in the same directory, is fsynced, renamed over the target, and the directory fsynced,
so a crash never leaves a half-written file under the real name.
Imports: standard library and edgeq.device (errors, fileutil).
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

from edgeq.device.errors import IntegrityError, ModelNotFoundError, StoreError
from edgeq.device.fileutil import sha256_file

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
HOME_ENV = "EDGEQ_HOME"
MODEL_SUFFIX = ".tflite"
DATA_SUFFIX = ".npz"
#: the two models every deployment holds, in the order they are shown
MODEL_KINDS = ("float32", "int8")
DEFAULT_HOME = "~/.edgeq"
#: the deployment record's key of the evaluation set's sha256 (null: none deployed)
EVAL_DATA_KEY = "eval_data"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: the device directory's marker file and its format (a newer format is refused)
STORE_MARKER = ".edgeq-store"
STORE_FORMAT = 1
#: the marker deploy.sh writes into a venv it created (only such a venv is ever replaced)
VENV_MARKER = ".edgeq-venv"
#: names an earlier edgeq (before the marker) left in its directory: adopted, not refused
LEGACY_NAMES = frozenset({"agent", "agent-releases", "deployments", "models", "data", "bin",
                          "venv", "wheels", "logs", "deploy.sh", "agent.sock", "agent.pid"})


@dataclass(frozen=True)
class Layout:
    """Where each file of a device store lives, as POSIX path strings under `home`.

    `home` must be absolute (the host resolves `~` on the device first). Pure: no I/O.
    """

    home: str

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.home, *parts)

    def model(self, sha256: str) -> str:
        return self._join("models", f"{sha256}{MODEL_SUFFIX}")

    def data(self, sha256: str) -> str:
        return self._join("data", f"{sha256}{DATA_SUFFIX}")

    @property
    def models_dir(self) -> str:
        return self._join("models")

    @property
    def profiles_dir(self) -> str:
        """edgeq profile's cut models and plans, named by content (disposable)."""
        return self._join("profiles")

    def profile_model(self, sha256: str) -> str:
        return self._join("profiles", f"{sha256}.tflite")

    @property
    def data_dir(self) -> str:
        return self._join("data")

    @property
    def deployments_dir(self) -> str:
        return self._join("deployments")

    @property
    def current(self) -> str:
        return self._join("deployments", "current.json")

    @property
    def deploy_stamp(self) -> str:
        """The deploy's settings and deploy.sh's summary, written with current.json (what
        a repeated deploy compares with to skip everything: edgeq.device.install check)."""
        return self._join("deployments", "deploy-stamp.json")

    @property
    def logs_dir(self) -> str:
        return self._join("logs")

    @property
    def log(self) -> str:
        return self._join("logs", "agent.log")

    @property
    def socket(self) -> str:
        return self._join("agent.sock")

    @property
    def pidfile(self) -> str:
        return self._join("agent.pid")

    @property
    def agent(self) -> str:
        """The symlink to the current agent release (PYTHONPATH of the agent)."""
        return self._join("agent")

    @property
    def releases_dir(self) -> str:
        return self._join("agent-releases")

    def release(self, release_id: str) -> str:
        return self._join("agent-releases", release_id)

    @property
    def python(self) -> str:
        """The interpreter deploy.sh set up (the venv's, or the one given with --python)."""
        return self._join("bin", "python")

    @property
    def bin_dir(self) -> str:
        return self._join("bin")

    @property
    def venv(self) -> str:
        return self._join("venv")

    @property
    def wheels_dir(self) -> str:
        return self._join("wheels")

    @property
    def deploy_script(self) -> str:
        return self._join("deploy.sh")

    @property
    def marker(self) -> str:
        """The file that says this directory is edgeq's ({"format": STORE_FORMAT})."""
        return self._join(STORE_MARKER)

    @property
    def venv_marker(self) -> str:
        return self._join("venv", VENV_MARKER)

    @property
    def lock(self) -> str:
        """The daemon's lock file (held with fcntl while a daemon runs)."""
        return self._join("agent.lock")

    def agent_argv(self, *args: str) -> list[str]:
        """argv that runs `python -m edgeq.device --home HOME ARGS...` with the deployed agent.

        Argv words only, never a shell string.
        """
        return ["env", f"PYTHONPATH={self.agent}", "PYTHONUNBUFFERED=1", self.python,
                "-m", "edgeq.device", "--home", self.home, *[str(a) for a in args]]


def parse_deployment(data: bytes, source: str = "current.json") -> dict[str, Any]:
    """A deployment record (current.json's bytes) as a dict, checked: a JSON object whose
    float32 and int8 are 64-hex sha256 strings, eval_data one too (or null / absent), and
    model_name a string (or absent). StoreError naming `source` otherwise. Pure: no I/O."""
    hint = "deploy again (edgeq deploy) to rewrite it"
    try:
        obj = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise StoreError(f"{source} is not valid JSON", hint=hint) from None
    if not isinstance(obj, dict):
        raise StoreError(f"{source} is not a JSON object", hint=hint)

    def is_sha(v: Any) -> bool:
        return isinstance(v, str) and _SHA256_RE.fullmatch(v) is not None

    for key in MODEL_KINDS:
        if not is_sha(obj.get(key)):
            raise StoreError(f"{source}: {key} is not a 64-hex sha256 ({obj.get(key)!r:.80})",
                             hint=hint)
    if obj.get(EVAL_DATA_KEY) is not None and not is_sha(obj[EVAL_DATA_KEY]):
        raise StoreError(f"{source}: {EVAL_DATA_KEY} is not a 64-hex sha256 or null "
                         f"({obj[EVAL_DATA_KEY]!r:.80})", hint=hint)
    if obj.get("model_name") is not None and not isinstance(obj["model_name"], str):
        raise StoreError(f"{source}: model_name is not a string", hint=hint)
    return obj


def home_facts(home: str) -> dict[str, Any]:
    """What is at `home` (no changes): exists, is_dir, owner_uid, marker_format (None: no
    marker; -1: unreadable), names (up to 64 entries), legacy (an earlier edgeq's layout:
    agent symlink, agent-releases/, deployments/current.json). The host's deploy bootstrap
    gathers the same facts before it writes anything (host/deploy.py _BOOTSTRAP)."""
    facts: dict[str, Any] = {"home": home, "exists": os.path.lexists(home), "is_dir": False,
                             "owner_uid": None, "uid": os.geteuid(), "marker_format": None,
                             "names": [], "legacy": False}
    if not facts["exists"]:
        return facts
    st = os.lstat(home)
    facts["is_dir"] = os.path.isdir(home)  # a symlink to a directory counts (e.g. on /data)
    facts["owner_uid"] = os.stat(home).st_uid if facts["is_dir"] else st.st_uid
    if not facts["is_dir"]:
        return facts
    facts["names"] = sorted(os.listdir(home))[:64]
    try:
        with open(os.path.join(home, STORE_MARKER), "rb") as fh:
            facts["marker_format"] = int(json.loads(fh.read(4096).decode())["format"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError):
        facts["marker_format"] = -1
    facts["legacy"] = (os.path.islink(os.path.join(home, "agent"))
                       and os.path.isdir(os.path.join(home, "agent-releases"))
                       and os.path.isfile(os.path.join(home, "deployments", "current.json")))
    return facts


def home_problem(facts: dict[str, Any]) -> Optional[StoreError]:
    """None if edgeq may use the directory `facts` describe (see `home_facts`), else the
    StoreError that refuses it. Pure: the host and the device decide the same way."""
    home = facts["home"]
    if not facts["exists"]:
        return None
    if not facts["is_dir"]:
        return StoreError(f"the device directory {home} exists and is not a directory",
                          hint="choose another --device-dir")
    if facts["owner_uid"] != facts["uid"]:
        return StoreError(f"the device directory {home} belongs to user id "
                          f"{facts['owner_uid']}, not to this user ({facts['uid']})",
                          hint="choose a --device-dir of your own; edgeq never uses a "
                               "directory another user owns")
    fmt = facts["marker_format"]
    if fmt is not None:
        if fmt == -1:
            return StoreError(f"{home}/{STORE_MARKER} is damaged",
                              hint=f'rewrite it: echo \'{{"format": {STORE_FORMAT}}}\' > '
                                   f"{home}/{STORE_MARKER}")
        if fmt > STORE_FORMAT:
            return StoreError(f"{home} was set up by a newer edgeq (store format {fmt})",
                              hint="update edgeq on this host")
        return None
    names = [n for n in facts["names"] if n != "lost+found"]
    if not names or facts["legacy"]:
        return None
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return StoreError(f"the device directory {home} is not empty and is not edgeq's "
                      f"(it holds {shown}; no {STORE_MARKER} marker)",
                      hint="choose a new or empty --device-dir (the default is ~/.edgeq); "
                           "edgeq never writes into a directory it did not create")


def claim_home(home: PathLike) -> dict[str, Any]:
    """Make `home` edgeq's: refuse what `home_problem` refuses; create it 0700 if missing;
    make it 0700 and write the marker if it was empty or an earlier edgeq's (whose venv is
    marked too: an earlier edgeq created it). Returns {"state": "created" | "marked" |
    "adopted" | "ours"}."""
    home = os.fspath(home)
    facts = home_facts(home)
    problem = home_problem(facts)
    if problem is not None:
        raise problem
    try:
        if not facts["exists"]:
            os.makedirs(os.path.dirname(home) or "/", exist_ok=True)
            os.mkdir(home, 0o700)
            state = "created"
        else:
            state = ("ours" if facts["marker_format"] is not None
                     else "adopted" if facts["legacy"] else "marked")
        os.chmod(home, 0o700)
        if state == "adopted" and os.path.isfile(os.path.join(home, "venv", "pyvenv.cfg")):
            lay = Layout(Path(home).absolute().as_posix())
            if not os.path.exists(lay.venv_marker):
                atomic_write_bytes(lay.venv_marker, b"edgeq\n")
        if state != "ours":
            atomic_write_json(os.path.join(home, STORE_MARKER), {"format": STORE_FORMAT})
    except OSError as exc:
        raise StoreError(f"cannot set up the device directory {home}: {exc.strerror or exc}",
                         hint="check --device-dir, its parent's permissions and free space"
                         ) from None
    return {"state": state}


def edgeq_home(home: Optional[PathLike] = None) -> Path:
    """`home`, else $EDGEQ_HOME, else ~/.edgeq (expanded, absolute)."""
    if home is not None and str(home) != "":
        return Path(os.path.expanduser(str(home))).absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(os.path.expanduser(env)).absolute()
    return Path(os.path.expanduser(DEFAULT_HOME)).absolute()


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------


def fsync_dir(directory: PathLike) -> None:
    """fsync a directory so a rename in it is durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def default_file_mode() -> int:
    """The mode a plain `open(path, "w")` would give: 0o666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_file(
    path: PathLike,
    fill: Callable[[str], None],
    mode: Optional[int] = 0o644,
    suffix: str = ".tmp",
) -> None:
    """Create `path` atomically: `fill(tmp_path)` writes a temp file in the same directory,
    which is chmod-ed (`mode`; None = 0o666 minus umask), fsynced and renamed over `path`;
    then the directory is fsynced. On any error the temp file is removed and `path` is
    untouched. The one atomic-write implementation; every other helper goes through it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        fill(tmp)
        os.chmod(tmp, default_file_mode() if mode is None else mode)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(target.parent)


def atomic_write_stream(
    path: PathLike, write: Callable[[BinaryIO], Any], mode: Optional[int] = 0o644
) -> None:
    """`atomic_write_file` where `write(binary_file)` fills the temp file."""

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    atomic_write_file(path, fill, mode=mode)


def atomic_write_bytes(path: PathLike, data: bytes, mode: Optional[int] = 0o644) -> None:
    """Write `data` to `path` atomically (see `atomic_write_file`)."""
    atomic_write_stream(path, lambda fh: fh.write(data), mode=mode)


def atomic_write_json(
    path: PathLike, obj: Any, mode: Optional[int] = 0o644, sort_keys: bool = True
) -> None:
    """`atomic_write_bytes` of pretty JSON (indent 2, trailing newline; keys sorted unless
    `sort_keys` is False)."""
    data = (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode("utf-8")
    atomic_write_bytes(path, data, mode=mode)


def atomic_copy(src: PathLike, dst: PathLike, mode: Optional[int] = 0o644) -> None:
    """Copy a file atomically (streamed, so large files are not held in memory)."""

    def copy(out: BinaryIO) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)

    atomic_write_stream(dst, copy, mode=mode)


# ---------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------


class Store:
    """Models and data sets by sha256 under one home directory."""

    def __init__(self, home: Optional[PathLike] = None) -> None:
        self.home = edgeq_home(home)
        self.layout = Layout(self.home.as_posix())
        self.models_dir = Path(self.layout.models_dir)
        self.data_dir = Path(self.layout.data_dir)
        self.deployments_dir = Path(self.layout.deployments_dir)
        self.logs_dir = Path(self.layout.logs_dir)
        self.socket_path = Path(self.layout.socket)
        self.pid_path = Path(self.layout.pidfile)
        self.log_path = Path(self.layout.log)
        self.current_path = Path(self.layout.current)

    def ensure_dirs(self) -> None:
        """Create the store's directories (the home 0700 when it is new); StoreError when the
        home belongs to another user."""
        try:
            if not self.home.exists():
                self.home.parent.mkdir(parents=True, exist_ok=True)
                self.home.mkdir(mode=0o700, exist_ok=True)
            owner = self.home.stat().st_uid
            if owner != os.geteuid():
                raise StoreError(f"{self.home} belongs to user id {owner}, not to this user",
                                 hint="pass a --home DIR of your own")
            for d in (self.models_dir, self.data_dir, self.deployments_dir, self.logs_dir):
                d.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store in {self.home}: {exc.strerror or exc}",
                             hint="pass a writable --home DIR or set EDGEQ_HOME") from None

    # -- paths and listing ----------------------------------------------------------------

    def model_path(self, sha256: str) -> Path:
        return Path(self.layout.model(sha256))

    def data_path(self, sha256: str) -> Path:
        return Path(self.layout.data(sha256))

    @staticmethod
    def _entries(directory: Path, suffix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return out
        except OSError as exc:
            raise StoreError(f"cannot list {directory}: {exc.strerror or exc}",
                             hint="check the store's permissions") from None
        for name in names:
            if not name.endswith(suffix) or name.startswith("."):
                continue
            sha = name[: -len(suffix)]
            if len(sha) != 64:
                continue
            p = directory / name
            try:
                size = p.stat().st_size
            except OSError:
                continue
            out.append({"sha256": sha, "size_bytes": size, "path": str(p)})
        return out

    def list_models(self) -> list[dict[str, Any]]:
        dep = self.current_deployment() or {}
        models = self._entries(self.models_dir, MODEL_SUFFIX)
        for m in models:
            m["kinds"] = [k for k in MODEL_KINDS if dep.get(k) == m["sha256"]]
        return models

    def list_data(self) -> list[dict[str, Any]]:
        return self._entries(self.data_dir, DATA_SUFFIX)

    # -- deployment -----------------------------------------------------------------------

    def current_deployment(self) -> Optional[dict[str, Any]]:
        """deployments/current.json, or None if there is none; StoreError if unreadable."""
        try:
            data = self.current_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.current_path}: {exc.strerror or exc}",
                             hint="check the store's permissions") from None
        return parse_deployment(data, str(self.current_path))

    def write_deployment(self, deployment: dict[str, Any]) -> None:
        """Write current.json atomically; the record is checked as readers will check it."""
        data = (json.dumps(deployment, indent=2, sort_keys=True) + "\n").encode("utf-8")
        parse_deployment(data, str(self.current_path))
        atomic_write_bytes(self.current_path, data)

    # -- resolving references -------------------------------------------------------------

    def resolve_model_ref(self, ref: str) -> str:
        """A sha256 for a model reference: a sha256 itself, or "float32"/"int8"."""
        if ref in MODEL_KINDS:
            dep = self.current_deployment()
            if dep is None or not isinstance(dep.get(ref), str):
                raise ModelNotFoundError(
                    f"no {ref} model is deployed in {self.home}",
                    hint="deploy the artifacts first (edgeq deploy), or pass a sha256",
                )
            return str(dep[ref])
        return ref

    def resolve_data_ref(self, ref: str) -> str:
        """A sha256 for a data reference: a sha256 itself, or "current"."""
        if ref == "current":
            dep = self.current_deployment()
            if dep is None or not isinstance(dep.get(EVAL_DATA_KEY), str):
                raise ModelNotFoundError(
                    f"no evaluation data is deployed in {self.home}",
                    hint="deploy the artifacts first (edgeq deploy), or pass a data sha256",
                )
            return str(dep[EVAL_DATA_KEY])
        return ref

    def verify_file(self, path: Path, sha256: str, what: str) -> int:
        """Re-hash `path`; its size, or ModelNotFoundError / IntegrityError."""
        try:
            size = path.stat().st_size
            actual = sha256_file(path)
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"{what} {sha256[:12]} is not in the store ({path} does not exist)",
                hint="deploy it first (edgeq deploy), or list the store with list_models",
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}",
                             hint="check the store's permissions") from None
        if actual != sha256:
            raise IntegrityError(
                f"{what} {sha256[:12]} is corrupt: its content hashes to {actual[:12]}",
                hint="deploy it again (edgeq deploy) to replace the damaged file",
            )
        return size

    def model(self, ref: str, *, verify: bool = True) -> tuple[str, Path]:
        """(sha256, verified path) of a stored model."""
        sha = self.resolve_model_ref(ref)
        path = self.model_path(sha)
        if verify:
            self.verify_file(path, sha, "model")
        elif not path.is_file():
            raise ModelNotFoundError(f"model {sha[:12]} is not in the store",
                                     hint="deploy it first (edgeq deploy)")
        return sha, path

    def data(self, ref: str, *, verify: bool = True) -> tuple[str, Path]:
        """(sha256, verified path) of a stored data set."""
        sha = self.resolve_data_ref(ref)
        path = self.data_path(sha)
        if verify:
            self.verify_file(path, sha, "data set")
        elif not path.is_file():
            raise ModelNotFoundError(f"data set {sha[:12]} is not in the store",
                                     hint="deploy it first (edgeq deploy)")
        return sha, path

    def verify(self, ref: str = "all") -> dict[str, Any]:
        """Re-hash one stored file (by sha256 or kind) or all of them."""
        targets: list[tuple[str, str, Path]] = []
        if ref == "all":
            targets += [("model", m["sha256"], Path(m["path"])) for m in self.list_models()]
            targets += [("data", d["sha256"], Path(d["path"])) for d in self.list_data()]
        else:
            sha = self.resolve_model_ref(ref)
            if self.model_path(sha).exists():
                targets.append(("model", sha, self.model_path(sha)))
            if self.data_path(sha).exists():
                targets.append(("data", sha, self.data_path(sha)))
            if not targets:
                raise ModelNotFoundError(f"{sha[:12]} is not in the store",
                                         hint="list the store with list_models")
        files: list[dict[str, Any]] = []
        for kind, sha, path in targets:
            entry: dict[str, Any] = {"sha256": sha, "kind": kind, "path": str(path),
                                     "size_bytes": None, "ok": False, "error": None}
            try:
                entry["size_bytes"] = self.verify_file(path, sha, kind)
                entry["ok"] = True
            except (IntegrityError, ModelNotFoundError, StoreError) as exc:
                entry["error"] = exc.message
            files.append(entry)
        return {"ok": all(f["ok"] for f in files), "files": files}

    # -- adding and removing --------------------------------------------------------------

    def add_model(self, src: PathLike) -> str:
        """Copy a .tflite into the store (atomically) under its sha256; returns the sha256."""
        return self._add(Path(src), self.models_dir, MODEL_SUFFIX)

    def add_data(self, src: PathLike) -> str:
        return self._add(Path(src), self.data_dir, DATA_SUFFIX)

    def _add(self, src: Path, directory: Path, suffix: str) -> str:
        self.ensure_dirs()
        try:
            sha = sha256_file(src)
        except OSError as exc:
            raise StoreError(f"cannot read {src}: {exc.strerror or exc}",
                             hint="check the path") from None
        dst = directory / f"{sha}{suffix}"
        if not dst.exists():
            atomic_copy(src, dst)
        return sha

    def remove(self, sha256: str, *, force: bool = False) -> list[dict[str, Any]]:
        """Delete a stored model and/or data set; refuses what is deployed unless `force`."""
        dep = self.current_deployment() or {}
        in_use = [k for k in (*MODEL_KINDS, EVAL_DATA_KEY) if dep.get(k) == sha256]
        if in_use and not force:
            raise StoreError(
                f"{sha256[:12]} is the deployed {' and '.join(in_use)}",
                hint="pass force=true to remove it anyway, or deploy something else first",
            )
        removed: list[dict[str, Any]] = []
        for kind, path in (("model", self.model_path(sha256)), ("data", self.data_path(sha256))):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot remove {path}: {exc.strerror or exc}",
                                 hint="check the store's permissions") from None
            removed.append({"sha256": sha256, "kind": kind, "path": str(path)})
        if not removed:
            raise ModelNotFoundError(f"{sha256[:12]} is not in the store",
                                     hint="list the store with list_models")
        fsync_dir(self.models_dir)
        fsync_dir(self.data_dir)
        return removed

    def summary(self) -> dict[str, Any]:
        return {"models": self.list_models(), "data": self.list_data()}
