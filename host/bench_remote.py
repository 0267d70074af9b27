"""bench-remote: float32 and int8 measured on the device, side by side.

`bench_remote(conn, ...)` benchmarks the models of the device's current deployment
(`$EDGEQ_HOME/deployments/current.json`, written by `edgeq deploy`) with the same settings:
- alternated in rounds, ABBA...: round 0 runs float32 then int8, round 1 int8 then float32,
  and so on, so a drift in clock or temperature hits both models equally;
- each model's first run also evaluates it on the deployed evaluation set (one evaluation
  pass per model: accuracy, per-class accuracy and predictions); later rounds only time;
- the timed latencies of all rounds are pooled (edgeq.host.compare explains the merge);
- through the daemon when one answers (`agent bridge` over `conn.open_stream`, spoken to
  with edgeq.device.client.AgentClient), else through the one-shot agent
  (`conn.run(agent bench ...)`); `settings.path` records which ("daemon" / "one-shot").
  A daemon that was killed (its pidfile left behind, nobody listening) is restarted the way
  deploy started it (its systemd user unit, else `serve --detach`) and the "daemon_restarted"
  event says so; a daemon that was stopped on purpose (no pidfile) or never started means
  the one-shot agent, as before. A daemon that does not answer its hello in time is an error
  (it is stuck), not a reason to measure beside it;
- every wait is bounded: the hello by HELLO_TIMEOUT_S, each measurement by
  edgeq.device.client.measure_budget_s(timeout_s) (its run, as long again queued behind
  another client's, and a margin); past it the daemon's status tells whether it was busy;
- two runs at once on one board queue in the daemon (one measurement at a time);
- a measurement that fails because the deployment changed under it (current.json names
  other models, or the model left the store) ends the run with DeploymentChangedError;
- with `history` given, the history is checked (writable, known schema) before anything is
  measured; if storing still fails afterwards, the document is saved to a file instead
  ("unstored" event: where, and why) and returned without `run_id`.
Float/int8 agreement is computed here, on the host, from the two prediction lists.
The result is the `edgeq.compare/1` document of docs/SCHEMA.md; with `history` given it is
stored and gets its `run_id`.

Its keys are listed once, in docs/SCHEMA.md (section "`edgeq bench-remote --json`"); keys
are stable, new keys may be added, a removed or renamed key bumps the schema.
The settings it passes are edgeq.device.settings' (declared once, validated here before
anything runs); the device store's paths are edgeq.device.store's (Layout, parse_deployment).
Imports: standard library, edgeq.device (client, errors, settings, store, protocol),
edgeq.host (artifacts, compare, link, history).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgeq.device.client import HELLO_TIMEOUT_S, MEASURE_MARGIN_S, OP_TIMEOUT_S, measure_budget_s
from edgeq.device.errors import EdgeqError, ModelNotFoundError, StoreError
from edgeq.device.fileutil import utc_now
from edgeq.device.protocol import DEFAULT_BENCH_TIMEOUT_S, MAX_RESPONSE_BYTES
from edgeq.device.settings import SETTING_NAMES, BenchSettings, settings_argv
from edgeq.device.store import MODEL_KINDS, Layout, parse_deployment
from edgeq.host.artifacts import read_manifest
from edgeq.host.compare import build_compare
from edgeq.host.link import (
    Connection,
    LinkError,
    LinkTimeoutError,
    ProgressCallback,
    RemoteNotFoundError,
    resolve_device_dir,
)

if TYPE_CHECKING:
    from edgeq.host.history import History

logger = logging.getLogger(__name__)

#: (event name, details) -> None; the CLI renders these as steps.
EventCallback = Callable[[str, dict], None]

RESPONSE_LIMIT_BYTES = MAX_RESPONSE_BYTES
DEFAULT_TIMEOUT_S = DEFAULT_BENCH_TIMEOUT_S


class NotDeployedError(EdgeqError):
    """The device has no deployment to benchmark."""


class DeploymentMismatchError(EdgeqError):
    """The device runs other models than the local artifacts."""


class AgentFailedError(EdgeqError):
    """The agent on the device failed or answered something unreadable."""


class DaemonStuckError(EdgeqError):
    """The daemon accepts connections but does not answer in time."""


class DeploymentChangedError(EdgeqError):
    """The deployment on the device changed while it was being measured."""


#: how long a restarted daemon gets to answer
RESTART_WAIT_S = 30.0


@dataclass(frozen=True)
class Deployment:
    """What `deployments/current.json` says is on the device."""

    model_name: str
    sha256: dict[str, str]  # "float32"/"int8" -> sha256
    eval_data_sha256: Optional[str]
    raw: dict[str, Any]


def read_deployment(conn: Connection, device_dir_abs: str) -> Deployment:
    """Read and check `deployments/current.json` on the device."""
    path = Layout(device_dir_abs).current
    buf = io.BytesIO()
    try:
        conn.get_file(path, buf)
    except RemoteNotFoundError:
        raise NotDeployedError(
            f"nothing is deployed on {conn.name} ({path} does not exist)",
            hint=f"run edgeq deploy --host {conn.name} first",
        ) from None
    try:
        raw = parse_deployment(buf.getvalue(), path)
    except StoreError as exc:
        raise NotDeployedError(
            f"the deployment record on {conn.name} is unreadable ({exc.message})",
            hint=f"run edgeq deploy --host {conn.name} again",
        ) from None
    return Deployment(
        model_name=raw.get("model_name") or "?",
        sha256={kind: raw[kind] for kind in MODEL_KINDS},
        eval_data_sha256=raw.get("eval_data"),
        raw=raw,
    )


def check_against_artifacts(dep: Deployment, artifacts_dir: Path, host: str) -> dict[str, Any]:
    """The local manifest, after checking the device runs exactly its models and data."""
    manifest = read_manifest(artifacts_dir)  # ArtifactsError when missing or unreadable
    local = {kind: manifest["models"][kind].get("sha256") for kind in MODEL_KINDS}
    local_data = (manifest.get("eval_data") or {}).get("sha256")
    differ = [k for k in MODEL_KINDS if local[k] != dep.sha256[k]]
    if local_data and dep.eval_data_sha256 and local_data != dep.eval_data_sha256:
        differ.append("eval data")
    if differ:
        raise DeploymentMismatchError(
            f"{host} runs other {' and '.join(differ)} than {artifacts_dir}",
            hint=f"run edgeq deploy --host {host} {artifacts_dir} first",
        )
    return manifest


#: exit 0 when process $1 exists and is neither stopped nor a zombie (field 3 of its stat)
_RUNNING = ('read -r _p _c st _r 2>/dev/null </proc/"$1"/stat || exit 1; '
            'case "$st" in T|t|Z|X|x) exit 1;; esac')
LIVENESS_CHECK_TIMEOUT_S = 15.0


class _Daemon:
    """The daemon, reached through `agent bridge` on a stream; every read bounded."""

    path = "daemon"

    def __init__(self, conn: Connection, layout: Layout, timeout_s: float,
                 hello_timeout_s: float = HELLO_TIMEOUT_S,
                 margin_s: float = MEASURE_MARGIN_S) -> None:
        from edgeq.device.client import AgentClient

        self.conn = conn
        self.layout = layout
        self.timeout_s = timeout_s
        self.stream = conn.open_stream(layout.agent_argv("bridge"))
        try:
            self.client = AgentClient(self.stream.write,
                                      lambda: self.stream.readline(RESPONSE_LIMIT_BYTES),
                                      set_timeout=self.stream.set_timeout,
                                      timeout_errors=(LinkTimeoutError,),
                                      name=f"the daemon on {conn.name}",
                                      hello_timeout_s=hello_timeout_s,
                                      op_timeout_s=OP_TIMEOUT_S, margin_s=margin_s)
            try:
                self.hello = self.client.hello()
            except LinkTimeoutError:
                raise DaemonStuckError(
                    f"the daemon on {conn.name} accepts connections but did not answer its "
                    f"hello within {hello_timeout_s:g} s",
                    hint=f"it may be stuck: restart it (edgeq deploy --host {conn.name} ...) "
                         "or measure without it (--no-daemon)") from None
        except BaseException:
            self.stream.close()
            raise

    def bench(self, *, sha256: str, data_sha256: Optional[str], opts: dict[str, Any]) -> dict:
        args: dict[str, Any] = {"model": sha256, **opts, "timeout_s": self.timeout_s}
        if data_sha256 is not None:
            args["data"] = data_sha256
        try:
            return self.client.measure("bench", args, alive=self.running)
        except LinkTimeoutError:
            waited = measure_budget_s(self.timeout_s, self.client.margin_s)
            raise DaemonStuckError(
                f"the daemon on {self.conn.name} did not return a measurement within "
                f"{waited:g} s ({_status_note(self.conn, self.layout)})",
                hint="raise --timeout if the board is that slow; otherwise restart the daemon "
                     f"(edgeq deploy --host {self.conn.name} ...) or use --no-daemon") from None

    def running(self) -> bool:
        """Whether the daemon process is there and not stopped (state T/t) or dead, asked with
        a few-millisecond `sh` on the device (no Python started beside the measurement)."""
        pid = self.hello.get("pid")
        if not isinstance(pid, int) or pid <= 1:
            return True  # unknown: wait for the budget
        try:
            return self.conn.run(["sh", "-c", _RUNNING, "edgeq-alive", str(pid)],
                                 timeout_s=LIVENESS_CHECK_TIMEOUT_S).ok
        except LinkError:
            return False  # the board does not answer a shell either

    def close(self) -> None:
        try:
            self.stream.close()
        except Exception:  # closing is best effort
            logger.debug("closing the bridge failed", exc_info=True)


def _status_note(conn: Connection, layout: Layout) -> str:
    """What the daemon's status says now, in a few words (for a time-out message)."""
    from edgeq.device.client import AgentClient

    try:
        stream = conn.open_stream(layout.agent_argv("bridge"))
    except EdgeqError:
        return "its status cannot be asked"
    try:
        client = AgentClient(stream.write, lambda: stream.readline(RESPONSE_LIMIT_BYTES),
                             set_timeout=stream.set_timeout, hello_timeout_s=10.0,
                             op_timeout_s=10.0)
        client.hello()
        status = client.call("status")
    except EdgeqError:
        return "it does not answer its status either: stuck"
    finally:
        stream.close()
    if status.get("busy"):
        return (f"it is busy measuring (worker pid {status.get('worker_pid')}, "
                f"{status.get('active_runs', '?')} run(s) active)")
    return "it answers its status and is idle"


def _unit_name(conn: Connection, dir_abs: str) -> str:
    """The systemd user unit deploy.sh installs for this device directory."""
    if dir_abs == conn.home().rstrip("/") + "/.edgeq":
        return "edgeq-agent.service"
    return f"edgeq-agent-{hashlib.sha256(dir_abs.encode()).hexdigest()[:8]}.service"


def _pidfile_left(conn: Connection, layout: Layout) -> bool:
    """Whether the daemon's pidfile is there (a daemon that stops removes it)."""
    try:
        conn.get_file(layout.pidfile, io.BytesIO())
        return True
    except RemoteNotFoundError:
        return False
    except LinkError:
        return True  # there, but unreadable: treat as left behind


def restart_daemon(conn: Connection, dir_abs: str) -> str:
    """Start the daemon again the way deploy started it; how it was started ("systemd UNIT"
    or "pidfile daemon (pid N)"). EdgeqError when it does not start."""
    layout = Layout(dir_abs)
    if not conn.is_local:
        unit = _unit_name(conn, dir_abs)
        enabled = conn.run(["systemctl", "--user", "is-enabled", "--quiet", unit], timeout_s=30)
        if enabled.ok:
            done = conn.run(["systemctl", "--user", "restart", unit], timeout_s=60)
            if done.ok:
                return f"systemd {unit}"
            logger.info("systemctl --user restart %s failed: %s", unit, _last_line(done.stderr))
    started = conn.run(layout.agent_argv("serve", "--detach"), timeout_s=RESTART_WAIT_S + 30)
    if not started.ok:
        raise AgentFailedError(
            f"the daemon on {conn.name} was killed and does not start again: "
            f"{_last_line(started.stderr) or _last_line(started.stdout)}",
            hint=f"see {layout.log} on the device; edgeq deploy starts it, --no-daemon "
                 "measures without it")
    return f"pidfile daemon ({_last_line(started.stdout) or 'started'})"


def open_session(conn: Connection, dir_abs: str, timeout_s: float, emit: Callable[..., None],
                 *, hello_timeout_s: float = HELLO_TIMEOUT_S,
                 margin_s: float = MEASURE_MARGIN_S) -> tuple[Any, Optional[str]]:
    """The daemon session, restarting a killed daemon; else the one-shot agent and why."""
    from edgeq.device.errors import AgentConnectionError

    layout = Layout(dir_abs)
    try:
        return _Daemon(conn, layout, timeout_s, hello_timeout_s, margin_s), None
    except DaemonStuckError:
        raise
    except (AgentConnectionError, LinkError) as exc:
        reason = exc.message
        if not _pidfile_left(conn, layout):  # stopped on purpose, or never started
            return _OneShot(conn, dir_abs, timeout_s), reason or type(exc).__name__
    how = restart_daemon(conn, dir_abs)
    emit("daemon_restarted", how=how, reason=f"the daemon was not running ({reason}) but its "
         "pidfile was left behind: it was killed")
    deadline = time.monotonic() + RESTART_WAIT_S
    while True:
        try:
            return _Daemon(conn, layout, timeout_s, hello_timeout_s, margin_s), None
        except (AgentConnectionError, LinkError) as exc:
            if time.monotonic() > deadline:
                raise AgentFailedError(
                    f"the daemon on {conn.name} was restarted ({how}) but does not answer: "
                    f"{exc.message}", hint=f"see {layout.log} on the device") from None
            time.sleep(0.5)


class _OneShot:
    """The one-shot agent: a fresh `agent bench ... --json` per measurement."""

    path = "one-shot"

    def __init__(self, conn: Connection, device_dir_abs: str, timeout_s: float) -> None:
        self.conn = conn
        self.dir = device_dir_abs
        self.timeout_s = timeout_s

    def bench(self, *, sha256: str, data_sha256: Optional[str], opts: dict[str, Any]) -> dict:
        layout = Layout(self.dir)
        args = ["bench", layout.model(sha256)]
        if data_sha256 is not None:
            args += ["--data", layout.data(data_sha256)]
        args += [*settings_argv(opts), "--json"]
        result = self.conn.run(locked_argv(layout, layout.agent_argv(*args)),
                               timeout_s=self.timeout_s)
        if not result.ok:
            raise AgentFailedError(
                f"the agent on {self.conn.name} failed (exit {result.exit_status}): "
                f"{_last_line(result.stderr) or _last_line(result.stdout)}",
                hint=f"run edgeq deploy --host {self.conn.name} again; --debug shows more",
            )
        try:
            return json.loads(result.stdout.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise AgentFailedError(
                f"the agent on {self.conn.name} printed no JSON result ({exc})",
                hint=f"run edgeq deploy --host {self.conn.name} again",
            ) from None

    def close(self) -> None:
        pass


#: the lock file one-shot measurements of a device dir take in turn (next to the daemon's)
ONESHOT_LOCK = "oneshot.lock"
# run argv[2:] holding an exclusive flock on argv[1] (inherited across exec, released when the
# process ends, however it ends): the device venv's own Python, so nothing else is needed there
_LOCKED_EXEC = ("import fcntl, os, sys\n"
                "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "os.set_inheritable(fd, True)\n"
                "os.execvp(sys.argv[2], sys.argv[2:])\n")


def locked_argv(layout: Layout, argv: list[str]) -> list[str]:
    """`argv` run on the device only once no other one-shot measurement of the same device dir
    runs: two host processes benchmarking one board without its daemon wait for each other
    instead of measuring at the same time (the daemon queues its own clients)."""
    lock = layout.home.rstrip("/") + "/" + ONESHOT_LOCK
    return [layout.python, "-c", _LOCKED_EXEC, lock, *argv]


def _last_line(data: bytes) -> str:
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def round_order(round_index: int) -> tuple[str, ...]:
    """ABBA...: even rounds float32 first, odd rounds int8 first."""
    return MODEL_KINDS if round_index % 2 == 0 else tuple(reversed(MODEL_KINDS))


def bench_remote(
    conn: Connection,
    *,
    artifacts_dir: Optional[Path] = None,
    device_dir: str = "~/.edgeq",
    threads: int = 1,
    xnnpack: bool = True,
    rounds: int = 2,
    eval_limit: Optional[int] = None,
    runs_min: Optional[int] = None,
    run_s_min: Optional[float] = None,
    mlperf_min_s: Optional[float] = None,
    warmup_runs_min: Optional[int] = None,
    warmup_s_min: Optional[float] = None,
    runs_max: Optional[int] = None,
    runtime: Optional[str] = None,
    use_daemon: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    history: Optional["History"] = None,
    progress: Optional[ProgressCallback] = None,
    events: Optional[EventCallback] = None,
    hello_timeout_s: float = HELLO_TIMEOUT_S,
    margin_s: float = MEASURE_MARGIN_S,
) -> dict[str, Any]:
    """Benchmark the deployed float32 and int8 models on `conn`; return `edgeq.compare/1`.

    `runs_min`/`run_s_min`/`warmup_*`/`runs_max` override the agent's defaults (None keeps
    them); `eval_limit` evaluates on the first N images only; `runtime` forces a TFLite
    runtime (edgeq.device.settings.RUNTIME_NAMES; one the board lacks fails the measurement).
    `use_daemon=False` skips the daemon. `progress(done, total)` counts finished measurements
    (2 x rounds); `events(name, details)` reports "deployment", "daemon_restarted", "path",
    "measure", "measured" (with the worker's start/end times when the daemon ran it) and
    "unstored" steps.
    """
    # the bench settings among the arguments (first, before any other local exists);
    # None keeps the agent's default; an unforced runtime is left out (the output stays as it
    # was before runtimes could be chosen: device.runtime says which one ran)
    given = {name: value for name, value in locals().items() if name in SETTING_NAMES
             and (name != "runtime" or value is not None)}
    if rounds < 1:
        raise EdgeqError("--rounds must be at least 1", hint="use --rounds 2 (ABBA) or more")
    opts = {name: value for name, value in given.items() if value is not None}
    BenchSettings.from_dict(opts)  # UsageError now, before anything runs on the device
    if mlperf_min_s is not None:  # the single-stream run comes on top of the timed runs
        timeout_s = max(timeout_s, mlperf_min_s + DEFAULT_TIMEOUT_S)

    def emit(name: str, **details: Any) -> None:
        if events is not None:
            events(name, details)

    if history is not None:
        history.check_writable()  # HistoryError now, before minutes of measuring
    started = utc_now()
    t0 = time.perf_counter()
    dir_abs = resolve_device_dir(conn, device_dir)
    dep = read_deployment(conn, dir_abs)
    if artifacts_dir is not None:
        check_against_artifacts(dep, Path(artifacts_dir), conn.name)
    emit("deployment", model_name=dep.model_name, device_dir=dir_abs, **dep.sha256)

    session: Any = None
    daemon_error: Optional[str] = None
    if use_daemon:
        session, daemon_error = open_session(conn, dir_abs, timeout_s, emit,
                                             hello_timeout_s=hello_timeout_s, margin_s=margin_s)
        if daemon_error is not None:
            logger.info("no daemon answers on %s (%s); using the one-shot agent",
                        conn.name, daemon_error)
    else:
        session = _OneShot(conn, dir_abs, timeout_s)
    emit("path", path=session.path, daemon_error=daemon_error)

    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in MODEL_KINDS}
    total = 2 * rounds
    done = 0
    if progress is not None:
        progress(0, total)
    try:
        for r in range(rounds):
            for kind in round_order(r):
                evaluate = not results[kind] and dep.eval_data_sha256 is not None
                emit("measure", round=r, kind=kind, evaluate=evaluate)
                try:
                    res = session.bench(
                        sha256=dep.sha256[kind],
                        data_sha256=dep.eval_data_sha256 if evaluate else None,
                        opts=opts if evaluate else {k: v for k, v in opts.items()
                                                    if k != "eval_limit"},
                    )
                    got = (res.get("model") or {}).get("sha256") if isinstance(res, dict) \
                        else None
                    if got != dep.sha256[kind]:
                        raise AgentFailedError(
                            f"the device measured model {got} instead of {kind} "
                            f"{dep.sha256[kind]}",
                            hint=f"run edgeq deploy --host {conn.name} again",
                        )
                except EdgeqError as exc:
                    raise_if_changed(conn, dir_abs, dep, exc)
                    raise
                results[kind].append(res)
                done += 1
                agent = res.get("agent") or {}
                emit("measured", round=r, kind=kind,
                     latency_ms_p50=(res.get("timing") or {}).get("latency_ms_p50"),
                     worker_started_unix_s=agent.get("worker_started_unix_s"),
                     worker_finished_unix_s=agent.get("worker_finished_unix_s"))
                if progress is not None:
                    progress(done, total)
    finally:
        session.close()

    settings: dict[str, Any] = {
        **given,  # as asked (null: the agent's default)
        "order": "ABBA" if rounds > 1 else "AB",
        "rounds": rounds,
        "path": session.path,
        "daemon_error": daemon_error,
        "device_dir": dir_abs,
        "model_name": dep.model_name,
        "deployment": {**dep.sha256, "eval_data": dep.eval_data_sha256},
        "duration_s": None,
    }
    doc = build_compare(
        results["float32"],
        results["int8"],
        host=conn.name,
        settings=settings,
        time_utc=started,
        artifacts_dir=str(Path(artifacts_dir).resolve()) if artifacts_dir is not None else None,
    )
    doc["settings"]["duration_s"] = round(time.perf_counter() - t0, 3)
    if history is not None:
        store_or_save(doc, history, emit)
    return doc


def store_or_save(doc: dict[str, Any], history: "History", emit: Callable[..., None]) -> None:
    """Store `doc` in the history (it gets `run_id`); if that fails, save it to a file and
    emit "unstored" (path, error, hint) instead: a measurement is never lost."""
    from edgeq.host.history import HistoryError, save_unstored

    try:
        doc["run_id"] = history.add(doc)
    except HistoryError as exc:
        path = save_unstored(doc, history.path)
        emit("unstored", path=str(path) if path else None, error=exc.message, hint=exc.hint)


def raise_if_changed(conn: Connection, dir_abs: str, dep: Deployment,
                     failure: EdgeqError) -> None:
    """DeploymentChangedError when `failure` happened because the deployment changed (the
    device's current.json names other files, or the model left the store); else nothing."""
    try:
        now: Optional[Deployment] = read_deployment(conn, dir_abs)
    except NotDeployedError:
        now = None
    except EdgeqError:
        return  # cannot tell: the original error stands
    if now is not None and now.sha256 == dep.sha256 \
            and now.eval_data_sha256 == dep.eval_data_sha256 \
            and not isinstance(failure, ModelNotFoundError):
        return
    what = ("its deployment record is gone" if now is None
            else f"{now.model_name} replaced {dep.model_name}" if now.sha256 != dep.sha256
            else "the evaluation data changed" if now.eval_data_sha256 != dep.eval_data_sha256
            else "a model left the store")
    raise DeploymentChangedError(
        f"the deployment on {conn.name} changed during the run ({what}): {failure.message}",
        hint="a deploy ran while this was measuring; run edgeq bench-remote again "
             "(the models were not at fault)") from failure
