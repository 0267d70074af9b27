"""CLI: `edgeq bench-remote`, `edgeq history` and `edgeq run` (the README's main command).

Parses options, calls edgeq.host.bench_remote / edgeq.host.history / the pipeline
functions, renders rich tables and progress (progress on stderr, so `--json` output on
stdout stays machine-readable). Library modules are imported inside the command bodies.
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from edgeq.host.cli import app, console, err_console
from edgeq.host.cli.common import (
    AcceptNewHostKeyOption,
    ConnectTimeoutOption,
    HostOption,
    IdentityFileOption,
    SSHConfigOption,
    history_run,
    open_device,
)
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

DEFAULT_ARTIFACTS = Path("runs/mnist")

history_app = typer.Typer(
    help="List the stored bench-remote runs (newest first), show one, or compare two.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(history_app, name="history")


# ------------------------------------------------------------------ rendering


def render_compare(doc: dict[str, Any], out: Console) -> None:
    """The side-by-side table and the device environment block of a compare document."""
    from edgeq.host.compare import environment_rows, table_rows

    emulated = bool((doc.get("device") or {}).get("emulated"))
    run = f"run {doc['run_id']}" if doc.get("run_id") is not None else "run (not stored)"
    title = (f"float32 vs int8 on {doc.get('host')} - {run}, {doc.get('time_utc')}"
             + ("  [EMULATED]" if emulated else ""))
    table = Table(title=title, title_style="bold red" if emulated else "bold")
    table.add_column("metric")
    table.add_column("float32", justify="right")
    table.add_column("int8", justify="right")
    table.add_column("int8/float32", justify="right")
    for row in table_rows(doc):
        table.add_row(row.name, row.float32, row.int8, row.ratio)
    out.print(table)

    env = Table.grid(padding=(0, 2))
    env.add_column(style="bold")
    env.add_column()
    for name, value in environment_rows(doc):
        style = "bold red" if name == "emulated" and emulated else None
        env.add_row(name, value, style=style)
    out.print(Panel(env, title="device environment",
                    border_style="red" if emulated else "blue", expand=False))
    if emulated:
        out.print("[bold red]EMULATED: these timings come from an emulator, not a real board; "
                  "compare float32 and int8 with each other only.[/]")


def _fmt_opt(value: Optional[float], spec: str, scale: float = 1.0) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def _history_table(rows: list[dict[str, Any]], path: Path) -> Table:
    table = Table(title=f"edgeq runs ({path})")
    for name, justify in (("run", "right"), ("time (UTC)", "left"), ("host", "left"),
                          ("model", "left"), ("machine", "left"), ("top-1 f32/int8 (%)", "right"),
                          ("agree (%)", "right"), ("p50 f32/int8 (ms)", "right"),
                          ("threads", "right"), ("xnnpack", "left")):
        table.add_column(name, justify=justify,  # type: ignore[arg-type]
                         no_wrap=name.startswith("time"))
    for r in rows:
        machine = (r.get("machine") or "?") + (" [red]EMULATED[/]" if r.get("emulated") else "")
        table.add_row(
            str(r["run_id"]), str(r["time_utc"]).replace("T", " ").rstrip("Z"), r["host"],
            r.get("model_name") or "?", machine,
            f"{_fmt_opt(r['float32_accuracy'], '.2f', 100)} / "
            f"{_fmt_opt(r['int8_accuracy'], '.2f', 100)}",
            _fmt_opt(r["agreement"], ".2f", 100),
            f"{_fmt_opt(r['float32_latency_ms_p50'], '.3f')} / "
            f"{_fmt_opt(r['int8_latency_ms_p50'], '.3f')}",
            str(r.get("threads") or "?"),
            {True: "on", False: "off"}.get(r.get("xnnpack"), "?"),  # type: ignore[arg-type]
        )
    return table


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Any]:
    """A rich progress display on stderr (or a silent stand-in)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                        transient=True, disable=not enabled)
    with progress:
        yield progress


def _callbacks(progress: Any, description: str) -> tuple[Callable[[int, int], None],
                                                         Callable[[str, dict], None]]:
    task = progress.add_task(description, total=None)

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    def on_event(name: str, details: dict) -> None:
        if name == "deployment":
            progress.console.print(
                f"deployment: {details['model_name']} in {details['device_dir']} "
                f"(float32 {details['float32'][:12]}, int8 {details['int8'][:12]})",
                highlight=False)
        elif name == "path":
            how = "the daemon" if details["path"] == "daemon" else "the one-shot agent"
            why = details.get("daemon_error")
            extra = f" (no daemon: {why})" if why else ""
            progress.console.print(f"measuring through {how}{extra}", highlight=False)
        elif name == "measure":
            what = " + evaluation" if details.get("evaluate") else ""
            progress.update(task, description=f"round {details['round']}: {details['kind']}{what}")
    return on_progress, on_event


def _artifacts_or_none(artifacts_dir: Optional[Path]) -> Optional[Path]:
    """An explicit dir is checked; the default runs/mnist only when it exists."""
    if artifacts_dir is not None:
        return artifacts_dir
    return DEFAULT_ARTIFACTS if (DEFAULT_ARTIFACTS / "manifest.json").exists() else None


# ------------------------------------------------------------------ bench-remote


@app.command("bench-remote")
def bench_remote_command(
    artifacts_dir: Optional[Path] = typer.Argument(
        None, help="Artifacts the device must be running (checked by sha256); default runs/mnist "
                   "when it exists."),
    host: HostOption = ...,
    threads: int = typer.Option(1, "--threads", help="Interpreter threads on the device."),
    no_xnnpack: bool = typer.Option(False, "--no-xnnpack",
                                    help="Run without the XNNPACK delegate."),
    rounds: int = typer.Option(2, "--rounds",
                               help="Alternated rounds (ABBA...): float32 and int8 each run once "
                                    "per round; latencies are pooled over rounds."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit",
                                             help="Evaluate on the first N images only."),
    runs_min: Optional[int] = typer.Option(None, "--runs-min",
                                           help="Minimum timed runs per round (agent default)."),
    run_s_min: Optional[float] = typer.Option(None, "--run-s-min",
                                              help="Minimum timed seconds per round."),
    device_dir: str = typer.Option("~/.edgeq", "--device-dir",
                                   help="The edgeq directory on the device."),
    no_daemon: bool = typer.Option(False, "--no-daemon",
                                   help="Use the one-shot agent even if a daemon runs."),
    accept_new_host_key: AcceptNewHostKeyOption = False,
    ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None,
    connect_timeout_s: ConnectTimeoutOption = 10.0,
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the edgeq.compare/1 document (see README)."),
    no_history: bool = typer.Option(False, "--no-history",
                                    help="Do not store the run in the history database."),
) -> None:
    """Measure the deployed float32 and int8 models on the device, side by side.

    Both models run with the same settings, alternated in rounds (ABBA...) so that a drift in
    clock or temperature hits both equally, through the device's daemon when one runs (else
    the one-shot agent). The run is stored in the history (`edgeq history`).
    """
    from edgeq.host.bench_remote import bench_remote
    from edgeq.host.history import History

    history = None if no_history else History()
    with open_device(host, accept_new_host_key, ssh_config, identity_file,
                     connect_timeout_s) as conn, _progress() as progress:
        on_progress, on_event = _callbacks(progress, "benchmarking")
        doc = bench_remote(
            conn, artifacts_dir=_artifacts_or_none(artifacts_dir), device_dir=device_dir,
            threads=threads, xnnpack=not no_xnnpack, rounds=rounds, eval_limit=eval_limit,
            runs_min=runs_min, run_s_min=run_s_min, use_daemon=not no_daemon,
            history=history, progress=on_progress, events=on_event,
        )
    if as_json:
        _print_json(doc)
    else:
        render_compare(doc, console)
        if history is not None:
            console.print(f"stored as run {doc['run_id']} in {history.path}", highlight=False)


# ------------------------------------------------------------------ history


@history_app.callback()
def history_list(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", help="How many runs to list."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    db: Optional[Path] = typer.Option(None, "--db",
                                      help="History database (default $EDGEQ_HISTORY_DB or the "
                                           "user data directory)."),
) -> None:
    """List the stored bench-remote runs, newest first."""
    from edgeq.host.history import History

    ctx.obj = History(db)
    if ctx.invoked_subcommand is not None:
        return
    history: History = ctx.obj
    rows = history.list(limit)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.print(f"no runs yet in {history.path}; run edgeq bench-remote --host local",
                      highlight=False)
        return
    console.print(_history_table(rows, history.path))


def _get_run(history: Any, run: str) -> dict[str, Any]:
    return history_run(history, run, empty_hint="run edgeq bench-remote --host local first")


@history_app.command("show")
def history_show(
    ctx: typer.Context,
    run: str = typer.Argument("latest", help="Run id from `edgeq history`, or latest."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored compare document."),
) -> None:
    """Show one stored run: the side-by-side table and its environment."""
    doc = _get_run(ctx.obj, run)
    if as_json:
        _print_json(doc)
    else:
        render_compare(doc, console)


@history_app.command("compare")
def history_compare(
    ctx: typer.Context,
    run_a: str = typer.Argument(..., help="The first run id (the baseline)."),
    run_b: str = typer.Argument(..., help="The second run id."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Show two runs side by side with the change from RUN_A to RUN_B."""
    from edgeq.host.compare import delta_rows

    a = _get_run(ctx.obj, run_a)
    b = _get_run(ctx.obj, run_b)
    rows = delta_rows(a, b)
    if as_json:
        _print_json({"run_a": a["run_id"], "run_b": b["run_id"],
                     "rows": [dict(zip(("metric", "run_a", "run_b", "b_over_a"), r))
                              for r in rows]})
        return
    table = Table(title=f"run {a['run_id']} ({a['host']}) vs run {b['run_id']} ({b['host']})")
    table.add_column("metric")
    table.add_column(f"run {a['run_id']}", justify="right")
    table.add_column(f"run {b['run_id']}", justify="right")
    table.add_column("B/A", justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for label, doc in (("A", a), ("B", b)):
        dev = doc.get("device") or {}
        s = doc.get("settings") or {}
        console.print(
            f"{label}: {doc['host']} {dev.get('machine', '?')} {dev.get('cpu_model') or ''}, "
            f"threads {s.get('threads')}, XNNPACK {'on' if s.get('xnnpack') else 'off'}"
            + (" [bold red]EMULATED[/]" if dev.get("emulated") else ""), highlight=False)


# ------------------------------------------------------------------ run (the main command)


def _train_complete(out: Path) -> bool:
    return (out / "model.keras").is_file() and (out / "train.json").is_file()


def _quantize_complete(out: Path) -> bool:
    """The manifest and every file it names exist with the sha256 it records."""
    import hashlib

    try:
        manifest = json.loads((out / "manifest.json").read_text())
        entries = [manifest["models"]["float32"], manifest["models"]["int8"],
                   manifest["eval_data"]]
        for entry in entries:
            digest = hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest()
            if digest != entry["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


@app.command("run")
def run_command(
    out: Path = typer.Option(DEFAULT_ARTIFACTS, "--out", help="Artifacts directory."),
    model: str = typer.Option("mnist-cnn", "--model", help="Model from the zoo."),
    epochs: Optional[int] = typer.Option(None, "--epochs",
                                         help="Training epochs (default: the model's)."),
    seed: int = typer.Option(0, "--seed", help="Seed for training and calibration."),
    train_limit: Optional[int] = typer.Option(None, "--train-limit",
                                              help="Train on the first N images only."),
    calibration_size: Optional[int] = typer.Option(
        None, "--calibration-size", help="Calibration images for Min-Max (quantize's default)."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit",
                                             help="Evaluate on the first N test images only."),
    host: HostOption = "local",
    device_dir: str = typer.Option("~/.edgeq", "--device-dir",
                                   help="The edgeq directory on the device."),
    threads: int = typer.Option(1, "--threads", help="Interpreter threads (host and device)."),
    rounds: int = typer.Option(2, "--rounds", help="Alternated bench rounds (ABBA...)."),
    runs_min: Optional[int] = typer.Option(None, "--runs-min",
                                           help="Minimum timed runs per round (agent default)."),
    run_s_min: Optional[float] = typer.Option(None, "--run-s-min",
                                              help="Minimum timed seconds per round."),
    force: bool = typer.Option(False, "--force",
                               help="Train and quantize again even if the artifacts exist."),
    accept_new_host_key: AcceptNewHostKeyOption = False,
    ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None,
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the final edgeq.compare/1 document."),
) -> None:
    """Train, quantize, evaluate on the host, deploy and benchmark on the device: all of it.

    With the default --host local everything runs on this machine, no board needed.
    Training and quantization are skipped when --out already holds complete artifacts.
    """
    from edgeq.host.bench_remote import bench_remote
    from edgeq.host.history import History

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def step(name: str) -> None:
        err_console.rule(f"[bold]{name}", align="left")

    # 1. train
    step("1/5 train")
    t = time.perf_counter()
    if not force and _train_complete(out):
        err_console.print(f"skipped: {out}/model.keras exists (--force trains again)",
                          highlight=False)
    else:
        from edgeq.host.train import train

        with _progress() as progress:
            on_progress, _ = _callbacks(progress, "training")
            info = train(out, model_name=model, epochs=epochs, seed=seed,
                         train_limit=train_limit, progress=on_progress)
        acc = info.get("float32_test_top1")
        err_console.print(f"trained {model}" + (f": float32 top-1 {acc * 100:.2f} %"
                                                if isinstance(acc, float) else ""),
                          highlight=False)
    timings["train"] = time.perf_counter() - t

    # 2. quantize
    step("2/5 quantize")
    t = time.perf_counter()
    if not force and _quantize_complete(out):
        err_console.print(f"skipped: {out}/manifest.json and its files are complete",
                          highlight=False)
    else:
        from edgeq.host.quantize import quantize

        kwargs = {"seed": seed, "eval_limit": eval_limit}
        if calibration_size is not None:
            kwargs["calibration_size"] = calibration_size
        with _progress() as progress:
            on_progress, _ = _callbacks(progress, "quantizing")
            manifest = quantize(out, progress=on_progress, **kwargs)
        sizes = {k: manifest["models"][k]["size_bytes"] for k in ("float32", "int8")}
        err_console.print(f"float32 {sizes['float32'] / 1024:.1f} KB, int8 "
                          f"{sizes['int8'] / 1024:.1f} KB", highlight=False)
    timings["quantize"] = time.perf_counter() - t

    # 3. evaluate on the host
    step("3/5 evaluate on the host")
    t = time.perf_counter()
    from edgeq.host.evaluate import evaluate

    with _progress() as progress:
        on_progress, _ = _callbacks(progress, "evaluating")
        host_eval = evaluate(out, limit=eval_limit, threads=threads, progress=on_progress)
    _print_host_eval(host_eval)
    timings["evaluate"] = time.perf_counter() - t

    with open_device(host, accept_new_host_key, ssh_config, identity_file) as conn:
        # 4. deploy
        step(f"4/5 deploy to {conn.name}")
        t = time.perf_counter()
        from edgeq.host.deploy import deploy

        with _progress() as progress:
            on_progress, _ = _callbacks(progress, "deploying")
            deployed = deploy(conn, out, device_dir=device_dir, progress=on_progress)
        _print_deploy(deployed)
        timings["deploy"] = time.perf_counter() - t

        # 5. bench-remote
        step(f"5/5 bench on {conn.name}")
        t = time.perf_counter()
        history = History()
        with _progress() as progress:
            on_progress, on_event = _callbacks(progress, "benchmarking")
            doc = bench_remote(conn, artifacts_dir=out, device_dir=device_dir, threads=threads,
                               rounds=rounds, eval_limit=eval_limit, runs_min=runs_min,
                               run_s_min=run_s_min, history=history, progress=on_progress,
                               events=on_event)
        timings["bench"] = time.perf_counter() - t

    err_console.print("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
                      highlight=False)
    if as_json:
        _print_json(doc)
    else:
        render_compare(doc, console)
        console.print(f"stored as run {doc['run_id']} in {history.path}; "
                      f"`edgeq report` turns it into the paper's report", highlight=False)


def _print_host_eval(result: Any) -> None:
    """One line per model from the host evaluation, whatever extra keys it carries."""
    if not isinstance(result, dict):
        return
    models = result.get("models") if isinstance(result.get("models"), dict) else result
    parts = []
    for kind in ("float32", "int8"):
        entry = models.get(kind) if isinstance(models, dict) else None
        if isinstance(entry, dict):
            acc = entry.get("accuracy", entry.get("top1"))
            if isinstance(acc, (int, float)):
                parts.append(f"{kind} top-1 {acc * 100:.2f} %")
    agree = result.get("agreement")
    if isinstance(agree, (int, float)):
        parts.append(f"agreement {agree * 100:.2f} %")
    err_console.print("on the host: " + (", ".join(parts) if parts else "done"), highlight=False)


def _print_deploy(result: Any) -> None:
    if not isinstance(result, dict):
        err_console.print("deployed", highlight=False)
        return
    keys = ("device", "machine", "arch", "python", "runtime", "sent_bytes", "daemon")
    shown = {k: result[k] for k in keys if k in result and not isinstance(result[k], (dict, list))}
    err_console.print("deployed" + (": " + ", ".join(f"{k} {v}" for k, v in shown.items())
                                    if shown else ""), highlight=False)
