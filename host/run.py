"""The whole chain as one call: train -> quantize -> evaluate on the host -> deploy -> bench.

`run(out_dir, host=...)` is what `edgeq run` (and `make demo`) and benchmarks/end_to_end.py
call. Training and quantization are skipped when `out_dir` already holds their complete
output (unless `force`); the connection to the device is opened only after the host stages,
so a long training does not hold an idle SSH session.

It never prints. It reports through callbacks:
- `progress(done, total)` within the current stage (the stage's own library progress);
- `events(name, details)`: "stage" {"name", "index", "total", "device"} when a stage starts,
  "skipped" {"stage", "reason"} when its output is already there, "stage_done"
  {"name", "seconds", "result"} when it ends (result: train.json record, manifest, host
  evaluation, edgeq.deploy/1 summary, edgeq.compare/1 document; None when skipped), and the
  events of edgeq.host.deploy.deploy and edgeq.host.bench_remote.bench_remote as they come.
Imports: standard library and edgeq.host.artifacts at import time; the stages' modules
(TensorFlow, LiteRT, paramiko) inside the functions that need them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from edgeq.device.store import DEFAULT_HOME
from edgeq.host.artifacts import (
    KERAS_FILE,
    MANIFEST_FILE,
    TRAIN_JSON,
    ArtifactsError,
    load_artifacts,
)

if TYPE_CHECKING:
    from edgeq.host.fleet import FleetEvents
    from edgeq.host.history import History
    from edgeq.host.inventory import Target
    from edgeq.host.matrix import Matrix

__all__ = ["STAGES", "RunResult", "run"]

ProgressCallback = Callable[[int, int], None]
EventCallback = Callable[[str, dict], None]

#: the stages, in order
STAGES = ("train", "quantize", "evaluate", "deploy", "bench")


@dataclass
class RunResult:
    """What a run produced: each stage's result (None when skipped) and its seconds."""

    artifacts_dir: Path
    compare: Optional[dict[str, Any]]  # the edgeq.compare/1 document (None for a fleet run)
    results: dict[str, Any] = field(default_factory=dict)  # stage -> result or None
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    history_path: Optional[Path] = None
    fleet: Optional[dict[str, Any]] = None  # the edgeq.fleet/1 document of a fleet run


def _train_complete(out: Path) -> bool:
    return (out / KERAS_FILE).is_file() and (out / TRAIN_JSON).is_file()


def _quantize_complete(out: Path) -> bool:
    """The manifest and every file it names exist with the sha256 it records."""
    try:
        load_artifacts(out, verify=True)
    except ArtifactsError:
        return False
    return True


class _Stages:
    """Runs the stages in order, timing them and telling `events` about each."""

    def __init__(self, events: Optional[EventCallback]) -> None:
        self._events = events
        self.result_by_stage: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}

    def emit(self, name: str, details: dict) -> None:
        if self._events is not None:
            self._events(name, details)

    def do(self, name: str, work: Callable[[], Any], skip_reason: Optional[str] = None,
           device: Optional[str] = None) -> Any:
        self.emit("stage", {"name": name, "index": STAGES.index(name) + 1,
                            "total": len(STAGES), "device": device})
        t0 = time.perf_counter()
        if skip_reason is not None:
            self.emit("skipped", {"stage": name, "reason": skip_reason})
            result = None
        else:
            result = work()
        self.seconds[name] = time.perf_counter() - t0
        self.result_by_stage[name] = result
        self.emit("stage_done", {"name": name, "seconds": self.seconds[name], "result": result})
        return result


def run(
    out_dir: Union[str, Path],
    *,
    host: str = "local",
    connect_options: Optional[Mapping[str, Any]] = None,
    model_name: str = "mnist-cnn",
    epochs: Optional[int] = None,
    seed: int = 0,
    train_limit: Optional[int] = None,
    calibration_size: Optional[int] = None,
    eval_limit: Optional[int] = None,
    device_dir: str = DEFAULT_HOME,
    threads: int = 1,
    rounds: int = 2,
    runs_min: Optional[int] = None,
    run_s_min: Optional[float] = None,
    force: bool = False,
    history: Optional["History"] = None,
    progress: Optional[ProgressCallback] = None,
    events: Optional[EventCallback] = None,
    targets: Optional[Sequence["Target"]] = None,
    matrix: Optional["Matrix"] = None,
    forks: int = 5,
    fleet_events: Optional["FleetEvents"] = None,
) -> RunResult:
    """Train, quantize, evaluate on the host, deploy to `host` and benchmark there.

    `connect_options` are keyword arguments for edgeq.host.link.open_connection
    (accept_new_host_key, ssh_config, identity_file, connect_timeout_s). `history` stores the
    bench result (None: not stored). `calibration_size` None means quantize's default.
    With several `targets` (edgeq.host.inventory) or several `matrix` cells, the device stages
    are a fleet run (edgeq.host.fleet, at most `forks` boards at once, progress to
    `fleet_events`): deploy to every board, then the matrix in an order seeded by `seed`;
    the result's `fleet` is the `edgeq.fleet/1` document and `compare` is None.
    """
    from edgeq.host.bench_remote import bench_remote
    from edgeq.host.deploy import deploy
    from edgeq.host.evaluate import evaluate
    from edgeq.host.link import open_connection
    from edgeq.host.quantize import quantize
    from edgeq.host.train import train

    if history is not None:  # a history that cannot take the run fails now, not after training
        history.check_writable()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(events)
    cell_settings: dict[str, Any] = {}  # xnnpack/runtime of a one-cell matrix
    if matrix is not None and len(matrix.cells) == 1:
        cell = matrix.cells[0]
        threads, cell_settings = cell.threads, {"xnnpack": cell.xnnpack, "runtime": cell.runtime}
    stages.do("train", lambda: train(out, model_name=model_name, epochs=epochs, seed=seed,
                                     train_limit=train_limit, progress=progress),
              skip_reason=None if force or not _train_complete(out)
              else f"{out / KERAS_FILE} exists")
    calibration = {} if calibration_size is None else {"calibration_size": calibration_size}
    stages.do("quantize", lambda: quantize(out, seed=seed, eval_limit=eval_limit,
                                           progress=progress, **calibration),
              skip_reason=None if force or not _quantize_complete(out)
              else f"{out / MANIFEST_FILE} and its files are complete")
    stages.do("evaluate", lambda: evaluate(out, limit=eval_limit, threads=threads,
                                           progress=progress))
    if targets is not None or matrix is not None:
        from edgeq.host.fleet import is_fleet
        from edgeq.host.inventory import from_hosts

        targets = list(targets) if targets is not None else from_hosts([host])
        if is_fleet(targets, matrix):
            return _fleet_stages(stages, out, targets, matrix, seed=seed, forks=forks,
                                 device_dir=device_dir, connect_options=connect_options,
                                 bench_options={"rounds": rounds, "eval_limit": eval_limit,
                                                "runs_min": runs_min, "run_s_min": run_s_min},
                                 history=history, events=fleet_events)
        one = targets[0]
        host, device_dir = one.spec, one.device_dir or device_dir
        if one.key_file is not None:
            connect_options = dict(connect_options or {}, identity_file=one.key_file)
    with open_connection(host, **dict(connect_options or {})) as conn:
        stages.do("deploy", lambda: deploy(conn, out, device_dir=device_dir, progress=progress,
                                           events=events), device=conn.name)
        doc = stages.do("bench", lambda: bench_remote(
            conn, artifacts_dir=out, device_dir=device_dir, threads=threads, rounds=rounds,
            eval_limit=eval_limit, runs_min=runs_min, run_s_min=run_s_min, history=history,
            progress=progress, events=events, **cell_settings), device=conn.name)
    return RunResult(out, doc, stages.result_by_stage, stages.seconds,
                     history.path if history is not None else None)


def _fleet_stages(stages: _Stages, out: Path, targets: Sequence["Target"],
                  matrix: Optional["Matrix"], *, seed: int, forks: int, device_dir: str,
                  connect_options: Optional[Mapping[str, Any]],
                  bench_options: Mapping[str, Any], history: Optional["History"],
                  events: Optional["FleetEvents"]) -> RunResult:
    """The deploy and bench stages on many boards: a board whose deploy failed is not
    measured and keeps its deploy error in the fleet document."""
    from edgeq.host.fleet import bench_fleet, deploy_fleet
    from edgeq.host.matrix import Matrix

    where = f"{len(targets)} boards"
    deployed = stages.do("deploy", lambda: deploy_fleet(
        targets, out, forks=forks, device_dir=device_dir, connect_options=connect_options,
        events=events), device=where)
    failed = {b["board"]: b["error"] for b in deployed["boards"] if not b["ok"]}
    fleet = stages.do("bench", lambda: bench_fleet(
        targets, matrix=matrix or Matrix(), seed=seed, artifacts_dir=out, forks=forks,
        device_dir=device_dir, connect_options=connect_options, bench_options=bench_options,
        history=history, skip=failed, events=events), device=where)
    return RunResult(out, None, stages.result_by_stage, stages.seconds,
                     history.path if history is not None else None, fleet=fleet)
