"""CLI: `edgeq bench-remote`, `edgeq history` and `edgeq run` (the README's main command).

Parses options, calls edgeq.host.bench_remote / edgeq.host.history / edgeq.host.run inside a
`ui.task` (progress on stderr, so `--json` output on stdout stays machine-readable) and hands
the result to edgeq.host.cli.render. Library modules are imported inside the command bodies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from edgeq.device.store import DEFAULT_HOME
from edgeq.host.cli import app, render, ui
from edgeq.host.cli.common import (
    SETTINGS_BY_NAME,
    AcceptNewHostKeyOption,
    ConnectTimeoutOption,
    DeviceDirOption,
    EvalLimitOption,
    ForksOption,
    HostsOption,
    IdentityFileOption,
    InventoryOption,
    LimitOption,
    MlperfMinSOption,
    OrderSeedOption,
    RoundsOption,
    RunSMinOption,
    RunsMinOption,
    RuntimeListOption,
    SSHConfigOption,
    ThreadsListOption,
    XnnpackListOption,
    connect_options,
    fleet_failed,
    history_run,
    open_device,
)
from edgeq.host.cli.ui import DEFAULT_ARTIFACTS_DIR, HistoryDbOption, JsonOption
from edgeq.host.fleet import DEFAULT_FORKS, is_fleet

history_app = typer.Typer(
    help="List the stored bench-remote runs (newest first), show one, or compare two.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(history_app, name="history")

RunArgument = Annotated[str, typer.Argument(help="Run id from `edgeq history`, or latest.")]
ArtifactsOrDefaultArgument = Annotated[Optional[Path], typer.Argument(
    help=f"Artifacts the device must be running (checked by sha256); default "
         f"{DEFAULT_ARTIFACTS_DIR} when it exists.", show_default=False)]
NoXnnpackOption = Annotated[bool, typer.Option(
    "--no-xnnpack", help="Run without the XNNPACK delegate: "
                         + SETTINGS_BY_NAME["xnnpack"].off_help + ".")]
NoDaemonOption = Annotated[bool, typer.Option(
    "--no-daemon", help="Use the one-shot agent even if a daemon runs.")]
NoHistoryOption = Annotated[bool, typer.Option(
    "--no-history", help="Do not store the run in the history database.")]


@app.command("bench-remote")
def bench_remote_command(
    artifacts_dir: ArtifactsOrDefaultArgument = None,
    host: HostsOption = None, inventory: InventoryOption = None, limit: LimitOption = None,
    forks: ForksOption = DEFAULT_FORKS, threads: ThreadsListOption = "1",
    xnnpack: XnnpackListOption = None, no_xnnpack: NoXnnpackOption = False,
    runtime: RuntimeListOption = None, seed: OrderSeedOption = None, rounds: RoundsOption = 2,
    eval_limit: EvalLimitOption = None, runs_min: RunsMinOption = None,
    run_s_min: RunSMinOption = None, mlperf_min_s: MlperfMinSOption = None,
    device_dir: DeviceDirOption = DEFAULT_HOME, no_daemon: NoDaemonOption = False,
    accept_new_host_key: AcceptNewHostKeyOption = False, ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None, connect_timeout_s: ConnectTimeoutOption = 10.0,
    as_json: JsonOption = False, no_history: NoHistoryOption = False,
) -> None:
    """Measure the deployed float32 and int8 models on the device, side by side.

    Both models run with the same settings, alternated in rounds (ABBA...) so that a drift in
    clock or temperature hits both equally, through the device's daemon when one runs (else
    the one-shot agent). The run is stored in the history (`edgeq history`). With --json: the
    edgeq.compare/1 document (see README). Several boards (--host repeated, --inventory) or a
    matrix (--threads 1,2 --xnnpack on,off --runtime ...) make a fleet run: every board at
    once (--forks), the cells in a seeded random order per board, one edgeq.fleet/1 document.
    """
    from edgeq.host.history import History
    from edgeq.host.inventory import board_targets
    from edgeq.host.matrix import Matrix

    targets = board_targets(host, inventory, limit, device_dir)
    matrix = Matrix.parse(threads, xnnpack, runtime, no_xnnpack=no_xnnpack)
    link = connect_options(accept_new_host_key, ssh_config, identity_file, connect_timeout_s)
    options = {"rounds": rounds, "eval_limit": eval_limit, "runs_min": runs_min,
               "run_s_min": run_s_min, "mlperf_min_s": mlperf_min_s,
               "use_daemon": not no_daemon}
    run = _bench_fleet if is_fleet(targets, matrix) else _bench_one
    run(targets, matrix, artifacts_dir, device_dir=device_dir, link=link, options=options,
        history=None if no_history else History(), as_json=as_json, forks=forks, seed=seed)


def _bench_one(targets: list[Any], matrix: Any, artifacts_dir: Optional[Path], *,
               device_dir: str, link: dict[str, Any], options: dict[str, Any],
               history: Any, as_json: bool, **_: Any) -> None:
    """One board, one setting: the edgeq.compare/1 table (or JSON), as bench-remote always
    printed it."""
    from edgeq.host.artifacts import default_artifacts_dir
    from edgeq.host.bench_remote import bench_remote

    target, cell = targets[0], matrix.cells[0]
    with open_device(target.spec, link["accept_new_host_key"], link["ssh_config"],
                     target.key_file or link["identity_file"],
                     link["connect_timeout_s"]) as conn, ui.task("benchmarking") as task:
        doc = bench_remote(
            conn, artifacts_dir=artifacts_dir or default_artifacts_dir(),
            device_dir=target.device_dir or device_dir, threads=cell.threads,
            xnnpack=cell.xnnpack, runtime=cell.runtime, history=history, progress=task,
            events=render.bench_events(task), **options)
    ui.print_json(doc) if as_json else render.compare(doc)
    if history is not None and not as_json:
        render.stored(doc, history.path)  # says nothing when storing failed (warned above)


def _bench_fleet(targets: list[Any], matrix: Any, artifacts_dir: Optional[Path], *,
                 device_dir: str, link: dict[str, Any], options: dict[str, Any],
                 history: Any, as_json: bool, forks: int, seed: Optional[int]) -> None:
    """Many boards or settings: the live board table, then the fleet table (or the
    edgeq.fleet/1 JSON); exits with the device-error code when a board failed."""
    from edgeq.host.artifacts import default_artifacts_dir
    from edgeq.host.fleet import bench_fleet
    from edgeq.host.matrix import new_seed

    with ui.boards_view([(t.name, t.spec) for t in targets]) as view:
        doc = bench_fleet(targets, matrix=matrix, seed=new_seed() if seed is None else seed,
                          artifacts_dir=artifacts_dir or default_artifacts_dir(), forks=forks,
                          device_dir=device_dir, connect_options=link, bench_options=options,
                          history=history, events=render.fleet_events(view))
    ui.print_json(doc) if as_json else render.fleet(doc)
    if history is not None and not as_json and doc.get("fleet_id") is not None:
        render.say(f"stored as fleet run {doc['fleet_id']} in {history.path} "
                   f"(edgeq history fleet {doc['fleet_id']})")
    fleet_failed(doc, show_errors=as_json)


# ------------------------------------------------------------------ history


@history_app.callback()
def history_list(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", help="How many runs to list."),
    as_json: JsonOption = False,
    db: HistoryDbOption = None,
) -> None:
    """List the stored bench-remote runs, newest first."""
    from edgeq.host.history import History

    ctx.obj = history = History(db)
    if ctx.invoked_subcommand is not None:
        return
    rows = history.list(limit)
    if as_json:
        ui.print_json(rows)
    elif not rows:
        render.say(f"no runs yet in {history.path}; run edgeq bench-remote --host local")
    else:
        render.history(rows, history.path)


def _get_run(history: Any, run: str) -> dict[str, Any]:
    return history_run(history, run, empty_hint="run edgeq bench-remote --host local first")


@history_app.command("show")
def history_show(ctx: typer.Context, run: RunArgument = "latest",
                 as_json: JsonOption = False) -> None:
    """Show one stored run: the side-by-side table and its environment."""
    doc = _get_run(ctx.obj, run)
    ui.print_json(doc) if as_json else render.compare(doc)


@history_app.command("compare")
def history_compare(
    ctx: typer.Context,
    run_a: str = typer.Argument(..., help="The first run id (the baseline)."),
    run_b: str = typer.Argument(..., help="The second run id."),
    as_json: JsonOption = False,
) -> None:
    """Show two runs side by side with the change from RUN_A to RUN_B."""
    from edgeq.host.compare import delta_rows

    a, b = _get_run(ctx.obj, run_a), _get_run(ctx.obj, run_b)
    rows = delta_rows(a, b)
    if as_json:
        ui.print_json({"run_a": a["run_id"], "run_b": b["run_id"],
                       "rows": [dict(zip(("metric", "run_a", "run_b", "b_over_a"), r))
                                for r in rows]})
    else:
        render.history_delta(a, b, rows)


@history_app.command("fleets")
def history_fleets(ctx: typer.Context,
                   limit: int = typer.Option(20, "--limit", "-n", help="How many to list."),
                   as_json: JsonOption = False) -> None:
    """List the stored fleet runs (many boards x a settings matrix), newest first."""
    rows = ctx.obj.list_fleets(limit)
    if as_json:
        ui.print_json(rows)
    elif not rows:
        render.say(f"no fleet runs yet in {ctx.obj.path}; bench-remote with several --host "
                   "or --inventory makes one")
    else:
        render.fleets(rows, ctx.obj.path)


@history_app.command("fleet")
def history_fleet(ctx: typer.Context,
                  fleet: str = typer.Argument("latest", help="Fleet id from `edgeq history "
                                                             "fleets`, or latest."),
                  as_json: JsonOption = False) -> None:
    """Show one stored fleet run: board x setting, each board's error."""
    from edgeq.host.history import fleet_doc

    doc = fleet_doc(ctx.obj, fleet)
    ui.print_json(doc) if as_json else render.fleet(doc)


@history_app.command("fleet-compare")
def history_fleet_compare(
    ctx: typer.Context,
    fleet_a: str = typer.Argument(..., help="The first fleet id (the baseline), or latest."),
    fleet_b: str = typer.Argument(..., help="The second fleet id, or latest."),
    as_json: JsonOption = False,
) -> None:
    """Show two fleet runs side by side: per board and setting, p50s, int8 speed-up, B/A."""
    from edgeq.host.fleet import compare_fleets
    from edgeq.host.history import fleet_doc

    a, b = fleet_doc(ctx.obj, fleet_a), fleet_doc(ctx.obj, fleet_b)
    rows = compare_fleets(a, b)
    if as_json:
        ui.print_json({"fleet_a": a["fleet_id"], "fleet_b": b["fleet_id"], "rows": rows})
    else:
        render.fleet_delta(a, b, rows)


# ------------------------------------------------------------------ run (the main command)

OutOption = Annotated[Path, typer.Option("--out", help="Artifacts directory.")]
ModelOption = Annotated[str, typer.Option("--model", help="Model from the zoo.")]
EpochsOption = Annotated[Optional[int], typer.Option(
    "--epochs", help="Training epochs (default: the model's).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for training and calibration.")]
TrainLimitOption = Annotated[Optional[int], typer.Option(
    "--train-limit", help="Train on the first N images only.")]
CalibrationSizeOption = Annotated[Optional[int], typer.Option(
    "--calibration-size", help="Calibration images for Min-Max (quantize's default).")]
ForceOption = Annotated[bool, typer.Option(
    "--force", help="Train and quantize again even if the artifacts exist.")]


@app.command("run")
def run_command(
    out: OutOption = DEFAULT_ARTIFACTS_DIR, model: ModelOption = "mnist-cnn",
    epochs: EpochsOption = None, seed: SeedOption = 0, train_limit: TrainLimitOption = None,
    calibration_size: CalibrationSizeOption = None, eval_limit: EvalLimitOption = None,
    host: HostsOption = None, inventory: InventoryOption = None, limit: LimitOption = None,
    forks: ForksOption = DEFAULT_FORKS, device_dir: DeviceDirOption = DEFAULT_HOME,
    threads: ThreadsListOption = "1", xnnpack: XnnpackListOption = None,
    runtime: RuntimeListOption = None, rounds: RoundsOption = 2, runs_min: RunsMinOption = None,
    run_s_min: RunSMinOption = None, force: ForceOption = False,
    accept_new_host_key: AcceptNewHostKeyOption = False, ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None, connect_timeout_s: ConnectTimeoutOption = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Train, quantize, evaluate on the host, deploy and benchmark on the device: all of it.

    With the default --host local everything runs on this machine, no board needed.
    Training and quantization are skipped when --out already holds complete artifacts.
    With --json: the final edgeq.compare/1 document. Several boards (--host repeated,
    --inventory) or a matrix (--threads 1,2 ...) deploy and measure as a fleet run (the
    edgeq.fleet/1 document; --seed also seeds the matrix order).
    """
    from edgeq.host.history import History
    from edgeq.host.inventory import board_targets
    from edgeq.host.matrix import Matrix
    from edgeq.host.run import run

    targets = board_targets(host or ([] if inventory else ["local"]), inventory, limit,
                            device_dir)
    matrix = Matrix.parse(threads, xnnpack, runtime)
    link = connect_options(accept_new_host_key, ssh_config, identity_file, connect_timeout_s)
    with ui.task("run") as task:
        result = run(out, connect_options=link, model_name=model, epochs=epochs, seed=seed,
                     train_limit=train_limit, calibration_size=calibration_size,
                     eval_limit=eval_limit, device_dir=device_dir, rounds=rounds,
                     runs_min=runs_min, run_s_min=run_s_min, force=force, history=History(),
                     progress=task, events=render.run_events(task), targets=targets,
                     matrix=matrix, forks=forks, fleet_events=render.fleet_notes(task))
    render.stage_times(result.seconds)
    _run_result(result, as_json)


def _run_result(result: Any, as_json: bool) -> None:
    """`edgeq run`'s result: the compare table (or JSON), or the fleet table of a fleet run."""
    doc = result.fleet or result.compare
    if as_json:
        ui.print_json(doc)
    elif result.fleet is not None:
        render.fleet(doc)
    else:
        render.compare(doc)
        render.stored(doc, result.history_path,
                      "; `edgeq report` turns it into the paper's report")
    if result.fleet is not None:
        fleet_failed(doc, show_errors=as_json)
