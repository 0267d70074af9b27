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
    HostOption,
    IdentityFileOption,
    RoundsOption,
    RunSMinOption,
    RunsMinOption,
    SSHConfigOption,
    ThreadsOption,
    history_run,
    open_device,
)
from edgeq.host.cli.ui import DEFAULT_ARTIFACTS_DIR, HistoryDbOption, JsonOption

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
    host: HostOption = ...,
    threads: ThreadsOption = 1,
    no_xnnpack: NoXnnpackOption = False,
    rounds: RoundsOption = 2,
    eval_limit: EvalLimitOption = None,
    runs_min: RunsMinOption = None,
    run_s_min: RunSMinOption = None,
    device_dir: DeviceDirOption = DEFAULT_HOME,
    no_daemon: NoDaemonOption = False,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None,
    connect_timeout_s: ConnectTimeoutOption = 10.0,
    as_json: JsonOption = False,
    no_history: NoHistoryOption = False,
) -> None:
    """Measure the deployed float32 and int8 models on the device, side by side.

    Both models run with the same settings, alternated in rounds (ABBA...) so that a drift in
    clock or temperature hits both equally, through the device's daemon when one runs (else
    the one-shot agent). The run is stored in the history (`edgeq history`). With --json: the
    edgeq.compare/1 document (see README).
    """
    from edgeq.host.artifacts import default_artifacts_dir
    from edgeq.host.bench_remote import bench_remote
    from edgeq.host.history import History

    history = None if no_history else History()
    with open_device(host, accept_new_host_key, ssh_config, identity_file,
                     connect_timeout_s) as conn, ui.task("benchmarking") as task:
        doc = bench_remote(
            conn, artifacts_dir=artifacts_dir or default_artifacts_dir(), device_dir=device_dir,
            threads=threads, xnnpack=not no_xnnpack, rounds=rounds, eval_limit=eval_limit,
            runs_min=runs_min, run_s_min=run_s_min, use_daemon=not no_daemon,
            history=history, progress=task, events=render.bench_events(task))
    ui.print_json(doc) if as_json else render.compare(doc)
    if history is not None and not as_json:
        render.stored(doc, history.path)  # says nothing when storing failed (warned above)


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
    host: HostOption = "local", device_dir: DeviceDirOption = DEFAULT_HOME,
    threads: ThreadsOption = 1, rounds: RoundsOption = 2, runs_min: RunsMinOption = None,
    run_s_min: RunSMinOption = None, force: ForceOption = False,
    accept_new_host_key: AcceptNewHostKeyOption = False, ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None, connect_timeout_s: ConnectTimeoutOption = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Train, quantize, evaluate on the host, deploy and benchmark on the device: all of it.

    With the default --host local everything runs on this machine, no board needed.
    Training and quantization are skipped when --out already holds complete artifacts.
    With --json: the final edgeq.compare/1 document.
    """
    from edgeq.host.history import History
    from edgeq.host.run import run

    link = {"accept_new_host_key": accept_new_host_key, "ssh_config": ssh_config,
            "identity_file": identity_file, "connect_timeout_s": connect_timeout_s}
    with ui.task("run") as task:
        result = run(out, host=host, connect_options=link, model_name=model, epochs=epochs,
                     seed=seed, train_limit=train_limit, calibration_size=calibration_size,
                     eval_limit=eval_limit, device_dir=device_dir, threads=threads,
                     rounds=rounds, runs_min=runs_min, run_s_min=run_s_min, force=force,
                     history=History(), progress=task, events=render.run_events(task))
    render.stage_times(result.seconds)
    if as_json:
        ui.print_json(result.compare)
        return
    render.compare(result.compare)
    render.stored(result.compare, result.history_path,
                  "; `edgeq report` turns it into the paper's report")
