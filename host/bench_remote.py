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

import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgeq.device.errors import EdgeqError, StoreError
from edgeq.device.fileutil import utc_now
from edgeq.device.protocol import DEFAULT_BENCH_TIMEOUT_S, MAX_RESPONSE_BYTES
from edgeq.device.settings import SETTING_NAMES, BenchSettings, settings_argv
from edgeq.device.store import MODEL_KINDS, Layout, parse_deployment
from edgeq.host.artifacts import read_manifest
from edgeq.host.compare import build_compare
from edgeq.host.link import Connection, ProgressCallback, RemoteNotFoundError, resolve_device_dir

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


class _Daemon:
    """The daemon, reached through `agent bridge` on a stream."""

    path = "daemon"

    def __init__(self, conn: Connection, argv: list[str], timeout_s: float) -> None:
        from edgeq.device.client import AgentClient

        self.timeout_s = timeout_s
        self.stream = conn.open_stream(argv)
        try:
            self.client = AgentClient(self.stream.write,
                                      lambda: self.stream.readline(RESPONSE_LIMIT_BYTES))
            self.hello = self.client.hello()
        except BaseException:
            self.stream.close()
            raise

    def bench(self, *, sha256: str, data_sha256: Optional[str], opts: dict[str, Any]) -> dict:
        args: dict[str, Any] = {"model": sha256, **opts, "timeout_s": self.timeout_s}
        if data_sha256 is not None:
            args["data"] = data_sha256
        return self.client.call("bench", **args)

    def close(self) -> None:
        try:
            self.stream.close()
        except Exception:  # closing is best effort
            logger.debug("closing the bridge failed", exc_info=True)


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
        result = self.conn.run(layout.agent_argv(*args), timeout_s=self.timeout_s)
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
    warmup_runs_min: Optional[int] = None,
    warmup_s_min: Optional[float] = None,
    runs_max: Optional[int] = None,
    use_daemon: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    history: Optional["History"] = None,
    progress: Optional[ProgressCallback] = None,
    events: Optional[EventCallback] = None,
) -> dict[str, Any]:
    """Benchmark the deployed float32 and int8 models on `conn`; return `edgeq.compare/1`.

    `runs_min`/`run_s_min`/`warmup_*`/`runs_max` override the agent's defaults (None keeps
    them); `eval_limit` evaluates on the first N images only. `use_daemon=False` skips the
    daemon. `progress(done, total)` counts finished measurements (2 x rounds); `events(name,
    details)` reports "deployment", "path", "measure" and "measured" steps.
    """
    # the bench settings among the arguments (first, before any other local exists);
    # None keeps the agent's default
    given = {name: value for name, value in locals().items() if name in SETTING_NAMES}
    if rounds < 1:
        raise EdgeqError("--rounds must be at least 1", hint="use --rounds 2 (ABBA) or more")
    opts = {name: value for name, value in given.items() if value is not None}
    BenchSettings.from_dict(opts)  # UsageError now, before anything runs on the device

    def emit(name: str, **details: Any) -> None:
        if events is not None:
            events(name, details)

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
        try:
            session = _Daemon(conn, Layout(dir_abs).agent_argv("bridge"), timeout_s)
        except Exception as exc:  # any failure to reach the daemon means: use the one-shot agent
            daemon_error = str(exc) or type(exc).__name__
            logger.info("no daemon answers on %s (%s); using the one-shot agent",
                        conn.name, daemon_error)
    if session is None:
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
                res = session.bench(
                    sha256=dep.sha256[kind],
                    data_sha256=dep.eval_data_sha256 if evaluate else None,
                    opts=opts if evaluate else {k: v for k, v in opts.items() if k != "eval_limit"},
                )
                got = (res.get("model") or {}).get("sha256") if isinstance(res, dict) else None
                if got != dep.sha256[kind]:
                    raise AgentFailedError(
                        f"the device measured model {got} instead of {kind} {dep.sha256[kind]}",
                        hint=f"run edgeq deploy --host {conn.name} again",
                    )
                results[kind].append(res)
                done += 1
                emit("measured", round=r, kind=kind,
                     latency_ms_p50=(res.get("timing") or {}).get("latency_ms_p50"))
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
        doc["run_id"] = history.add(doc)
    return doc
