"""Many boards at once: one job per board, concurrently, each board isolated.

`run_boards(targets, job, forks=N)` runs `job(conn, target, emit)` for every target, at most N
at a time (threads: the work is waiting on SSH and on the boards), each on its own connection
opened through edgeq.host.link (host keys checked per board as for `--host`; the target's
`ansible_ssh_private_key_file` is its identity file). Whatever one board raises (an
EdgeqError, a link error, anything) becomes that board's own `error` {"code", "message",
"hint"}; the other boards go on. A target appears once: edgeq.host.inventory.merge refuses
two names for one board, so no two jobs share a board (and on a board, the daemon queues
measurements and one-shot ones take a lock: edgeq.host.bench_remote.locked_argv).

On top of it:
- `deploy_fleet(...)` -> `edgeq.fleet_deploy/1`: edgeq.host.deploy.deploy per board;
- `compare_fleets(a, b)`: two fleet runs side by side, per board and setting;
- `bench_fleet(...)` -> `edgeq.fleet/1`: per board, every cell of an edgeq.host.matrix.Matrix in
  that board's seeded random order, each cell one edgeq.host.bench_remote.bench_remote run
  (float32/int8 ABBA inside it) stored in the history, the whole stored as one fleet run.
  A cell that fails on the device (e.g. a runtime the board lacks) is that cell's error; a
  board that cannot be reached or has no matching deployment is the board's error.
Progress: `events(board, name, details)` from the worker threads: "board_queued",
"board_connecting", "cell" {"index", "total", "cell"}, "cell_failed", the library's own events
(deploy's, bench_remote's, by their names) and "board_done" {"ok", "error", "elapsed_s"}.
Imports: standard library, edgeq.device, edgeq.host (inventory, matrix, compare, link,
bench_remote; deploy and history lazily).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import utc_now
from edgeq.device.store import DEFAULT_HOME
from edgeq.host.compare import int8_speedup_p50
from edgeq.host.inventory import Target
from edgeq.host.matrix import Matrix

if TYPE_CHECKING:
    from edgeq.host.history import History
    from edgeq.host.link import Connection

__all__ = ["DEFAULT_FORKS", "BoardResult", "FleetEvents", "FleetFailedError", "run_boards",
           "deploy_fleet", "bench_fleet", "compare_fleets", "error_dict", "is_fleet"]

logger = logging.getLogger(__name__)

#: boards worked on at once by default (Ansible's default forks)
DEFAULT_FORKS = 5
#: (board name, event name, details) -> None; called from the boards' threads
FleetEvents = Callable[[str, str, dict], None]
#: (connection, target, emit(name, **details)) -> the board's result
BoardJob = Callable[["Connection", Target, Callable[..., None]], Any]


class FleetFailedError(EdgeqError):
    """Some boards of a fleet run failed (each one's own error was shown)."""


@dataclass
class BoardResult:
    """One board's outcome: its value, or its one-line error."""

    target: Target
    ok: bool
    value: Any
    error: Optional[dict[str, str]]
    elapsed_s: float


def error_dict(exc: BaseException) -> dict[str, str]:
    """{"code", "message", "hint"} of any exception (one line each)."""
    if isinstance(exc, EdgeqError):
        return {"code": type(exc).__name__, "message": _one_line(exc.message),
                "hint": _one_line(exc.hint or "")}
    return {"code": type(exc).__name__, "message": _one_line(f"{type(exc).__name__}: {exc}"),
            "hint": "rerun with --debug for the traceback and report it"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_fleet(targets: Sequence[Target], matrix: Optional[Matrix] = None) -> bool:
    """Whether this is fleet work (several boards or several cells) rather than one run."""
    return len(targets) != 1 or (matrix is not None and len(matrix.cells) != 1)


def run_boards(targets: Sequence[Target], job: BoardJob, *, forks: int = DEFAULT_FORKS,
               connect_options: Optional[Mapping[str, Any]] = None,
               events: Optional[FleetEvents] = None) -> list[BoardResult]:
    """`job` on every target, at most `forks` at once; results in the targets' order."""
    from edgeq.host.link import open_connection

    if forks < 1:
        raise EdgeqError(f"--forks must be at least 1, not {forks}", hint="use --forks 5")
    options = dict(connect_options or {})
    lock = threading.Lock()

    def emit_for(board: str) -> Callable[..., None]:
        def emit(name: str, **details: Any) -> None:
            if events is not None:
                with lock:  # one event at a time reaches the view
                    events(board, name, details)
        return emit

    def one(target: Target) -> BoardResult:
        emit = emit_for(target.name)
        emit("board_connecting", target=target.spec)
        t0 = time.perf_counter()
        try:
            opts = dict(options)
            if target.key_file is not None:
                opts["identity_file"] = target.key_file
            with open_connection(target.spec, **opts) as conn:
                value = job(conn, target, emit)
            result = BoardResult(target, True, value, None, time.perf_counter() - t0)
        except Exception as exc:  # every failure stays this board's own
            logger.debug("board %s failed", target.name, exc_info=True)
            result = BoardResult(target, False, None, error_dict(exc), time.perf_counter() - t0)
        emit("board_done", ok=result.ok, error=result.error, elapsed_s=round(result.elapsed_s, 3))
        return result

    for t in targets:
        emit_for(t.name)("board_queued", target=t.spec)
    with ThreadPoolExecutor(max_workers=min(forks, max(1, len(targets))),
                            thread_name_prefix="edgeq-board") as pool:
        return list(pool.map(one, targets))


def deploy_fleet(targets: Sequence[Target], artifacts_dir: Path, *, forks: int = DEFAULT_FORKS,
                 device_dir: str = DEFAULT_HOME,
                 connect_options: Optional[Mapping[str, Any]] = None,
                 deploy_options: Optional[Mapping[str, Any]] = None,
                 events: Optional[FleetEvents] = None) -> dict[str, Any]:
    """edgeq.host.deploy.deploy on every target; the `edgeq.fleet_deploy/1` document."""
    from edgeq.host.deploy import deploy

    def job(conn: Connection, target: Target, emit: Callable[..., None]) -> Any:
        return deploy(conn, artifacts_dir, device_dir=target.device_dir or device_dir,
                      events=lambda name, details: emit(name, **details),
                      **dict(deploy_options or {}))

    t0 = time.perf_counter()
    results = run_boards(targets, job, forks=forks, connect_options=connect_options,
                         events=events)
    return {
        "schema": "edgeq.fleet_deploy/1",
        "ok": all(r.ok for r in results),
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "boards": [{"board": r.target.name, "target": r.target.spec, "ok": r.ok,
                    "error": r.error, "elapsed_s": round(r.elapsed_s, 3), "deploy": r.value}
                   for r in results],
    }


def _board_errors() -> tuple[type[BaseException], ...]:
    """Errors that end a board's whole matrix (not one cell): it cannot be reached, or it
    does not run the artifacts."""
    from edgeq.host.bench_remote import (
        DeploymentChangedError,
        DeploymentMismatchError,
        NotDeployedError,
    )
    from edgeq.host.history import HistoryError
    from edgeq.host.link import LinkError

    return (LinkError, NotDeployedError, DeploymentMismatchError, DeploymentChangedError,
            HistoryError)


def _bench_cells(conn: Connection, target: Target, emit: Callable[..., None], *,
                 matrix: Matrix, seed: int, device_dir: str, history: Optional["History"],
                 bench_options: Mapping[str, Any], runs: list[dict[str, Any]]
                 ) -> dict[str, Any]:
    """Every cell of `matrix` on one board, in its seeded order, appended to `runs` as they
    end (so a board that fails midway keeps the cells it measured); the board's entry."""
    from edgeq.host.bench_remote import bench_remote

    order = matrix.order(seed, target.name)
    board_errors = _board_errors()
    for index, cell in enumerate(order):
        emit("cell", index=index, total=len(order), cell=cell.to_dict())
        entry: dict[str, Any] = {"cell": cell.to_dict(), "run_id": None, "compare": None,
                                 "error": None}
        try:
            doc = bench_remote(conn, device_dir=target.device_dir or device_dir,
                               threads=cell.threads, xnnpack=cell.xnnpack, runtime=cell.runtime,
                               history=history,
                               events=lambda name, details: emit(name, **details),
                               **dict(bench_options))
            entry.update(run_id=doc.get("run_id"), compare=doc)
        except board_errors:
            raise
        except EdgeqError as exc:  # this cell only (e.g. a runtime the board lacks)
            entry["error"] = error_dict(exc)
            emit("cell_failed", index=index, cell=cell.to_dict(), error=entry["error"])
        runs.append(entry)
    return {"order": [c.to_dict() for c in order], "runs": runs}


def bench_fleet(targets: Sequence[Target], *, matrix: Matrix, seed: int,
                artifacts_dir: Optional[Path] = None, forks: int = DEFAULT_FORKS,
                device_dir: str = DEFAULT_HOME,
                connect_options: Optional[Mapping[str, Any]] = None,
                bench_options: Optional[Mapping[str, Any]] = None,
                history: Optional["History"] = None,
                skip: Optional[Mapping[str, dict[str, str]]] = None,
                events: Optional[FleetEvents] = None) -> dict[str, Any]:
    """Every cell of `matrix` on every target; the `edgeq.fleet/1` document, stored in
    `history` (each cell as a run, the whole as a fleet run) when given. `bench_options` are
    bench_remote's other keyword arguments (rounds, eval_limit, runs_min, use_daemon...);
    boards in `skip` (name -> error) are not measured and keep that error."""
    if history is not None:
        history.check_writable()  # before minutes of measuring
    created = utc_now()
    options = dict(bench_options or {}, artifacts_dir=artifacts_dir)
    skip = dict(skip or {})

    partial: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}

    def job(conn: Connection, target: Target, emit: Callable[..., None]) -> Any:
        return _bench_cells(conn, target, emit, matrix=matrix, seed=seed,
                            device_dir=device_dir, history=history, bench_options=options,
                            runs=partial[target.name])

    t0 = time.perf_counter()
    todo = [t for t in targets if t.name not in skip]
    done = {r.target.name: r for r in run_boards(todo, job, forks=forks,
                                                  connect_options=connect_options,
                                                  events=events)}
    boards = [_board_entry(t, done.get(t.name), skip.get(t.name), partial[t.name], matrix,
                           seed) for t in targets]
    doc: dict[str, Any] = {
        "schema": "edgeq.fleet/1", "fleet_id": None, "created_utc": created,
        "artifacts": str(Path(artifacts_dir).resolve()) if artifacts_dir is not None else None,
        "seed": seed, "matrix": matrix.to_dict(), "ok": all(b["ok"] for b in boards),
        "elapsed_s": round(time.perf_counter() - t0, 3), "boards": boards,
    }
    if history is not None:
        doc["fleet_id"] = history.store_fleet(doc)
    return doc


def _board_entry(target: Target, result: Optional[BoardResult],
                 skipped: Optional[dict[str, str]], runs: list[dict[str, Any]],
                 matrix: Matrix, seed: int) -> dict[str, Any]:
    """One board of the fleet document: ok only when every cell was measured."""
    value = result.value if result is not None and result.ok else None
    error = skipped or (result.error if result is not None else None)
    failed = [r for r in runs if r["error"] is not None]
    if error is None and failed:
        first = failed[0]
        label = ", ".join(f"{k} {v}" for k, v in first["cell"].items() if v is not None)
        error = dict(first["error"], message=f"{len(failed)} of {len(runs)} cell(s) failed; "
                                             f"{label}: {first['error']['message']}")
    return {
        "board": target.name, "target": target.spec, "groups": list(target.groups),
        "ok": error is None,
        "error": error,
        "elapsed_s": round(result.elapsed_s, 3) if result is not None else 0.0,
        "order": value["order"] if value else [c.to_dict() for c in matrix.order(seed,
                                                                                 target.name)],
        "runs": runs,
    }


def _cell_figures(run: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The few figures of one measured cell that a comparison shows (None: not measured)."""
    doc = (run or {}).get("compare")
    if not doc:
        return None
    models = doc.get("models") or {}
    f32, i8 = models.get("float32") or {}, models.get("int8") or {}
    p50 = (f32.get("latency_ms_p50"), i8.get("latency_ms_p50"))
    return {"run_id": doc.get("run_id"), "float32_latency_ms_p50": p50[0],
            "int8_latency_ms_p50": p50[1],
            "int8_speedup": int8_speedup_p50(doc),
            "float32_top1": f32.get("accuracy"), "int8_top1": i8.get("accuracy")}


def compare_fleets(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Two `edgeq.fleet/1` documents side by side: one row per board and setting measured in
    either, {"board", "cell", "a", "b", "int8_p50_b_over_a"} (a side is None where that run
    did not measure it); boards in A's order, then those only B has; cells by threads,
    XNNPACK on first, runtime."""
    def cells(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(board["board"], json.dumps(run["cell"], sort_keys=True)): run
                for board in doc.get("boards") or [] for run in board.get("runs") or []}

    in_a, in_b = cells(a), cells(b)
    rows = []
    for key in list(in_a) + [k for k in in_b if k not in in_a]:
        fa, fb = _cell_figures(in_a.get(key)), _cell_figures(in_b.get(key))
        pa = fa["int8_latency_ms_p50"] if fa else None
        pb = fb["int8_latency_ms_p50"] if fb else None
        rows.append({"board": key[0], "cell": json.loads(key[1]), "a": fa, "b": fb,
                     "int8_p50_b_over_a": pb / pa if pa and pb is not None else None})
    boards = list(dict.fromkeys(k[0] for k in list(in_a) + list(in_b)))
    return sorted(rows, key=lambda r: (boards.index(r["board"]), r["cell"]["threads"],
                                       not r["cell"]["xnnpack"], str(r["cell"]["runtime"])))
