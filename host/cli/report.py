"""CLI: `edgeq report` (a run as one self-contained HTML page + Markdown) and `edgeq sweep`.

Parses options, calls edgeq.host.report.build_report / edgeq.host.sweep.sweep, prints where
the files went (progress on stderr). matplotlib, TensorFlow and the library modules are
imported inside the command bodies so `edgeq --help` stays fast.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from edgeq.host.cli import app, console, err_console
from edgeq.host.cli.common import history_run


def _progress_bar(description: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=True)


def _load_result(path: Path) -> dict[str, Any]:
    from edgeq.device.errors import UsageError

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no result file {path}",
                         hint="pass the JSON that `edgeq bench-remote --json` printed") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path} as JSON: {exc}",
                         hint="pass the JSON that `edgeq bench-remote --json` printed") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not a JSON object", hint="pass an edgeq.compare/1 document")
    return doc


def _run_from_history(run: str, db: Optional[Path]) -> dict[str, Any]:
    from edgeq.host.history import History

    return history_run(History(db), run, empty_hint="run `edgeq bench-remote --host local` "
                                                     "first, or pass --result")


@app.command("report")
def report_command(
    run: str = typer.Argument("latest", help="Run id from `edgeq history`, or latest."),
    result: Optional[Path] = typer.Option(
        None, "--result", help="A compare JSON file (`edgeq bench-remote --json`) instead of "
                               "a stored run."),
    artifacts: Optional[Path] = typer.Option(
        None, "--artifacts", help="The artifacts directory the run measured (default: the one "
                                  "the run records)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output directory (default reports/run-<id>, or reports/<result "
                            "file name>)."),
    db: Optional[Path] = typer.Option(
        None, "--db", help="History database (default $EDGEQ_HISTORY_DB or the user data "
                           "directory)."),
    sweep_file: Optional[Path] = typer.Option(
        None, "--sweep", help="A sweep.json to include (default: ARTIFACTS/sweep.json when "
                              "present)."),
    no_layers: bool = typer.Option(
        False, "--no-layers", help="Leave out the per-layer analysis (it needs TensorFlow)."),
    as_json: bool = typer.Option(False, "--json", help="Print the written paths as JSON."),
) -> None:
    """Write the paper's report of a run: one self-contained HTML page and a Markdown summary.

    The side-by-side table (size, top-1 with a 95% interval, agreement, latency p50/p90/p99,
    throughput, init, peak memory, int8/float32), McNemar's test, bootstrap intervals for the
    latency medians, latency / per-class / changed-image figures, the per-layer quantization
    analysis, the environment and, when present, the sweep. Opens offline.
    """
    import os

    from edgeq.device.errors import UsageError
    from edgeq.host.report import build_report

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the per-layer analysis imports TF
    if result is not None:
        doc = _load_result(result)
        default_out = Path("reports") / (f"run-{doc['run_id']}" if doc.get("run_id") is not None
                                         else result.stem)
    else:
        doc = _run_from_history(run, db)
        default_out = Path("reports") / f"run-{doc.get('run_id')}"
    if artifacts is None:
        recorded = doc.get("artifacts_dir")
        if not recorded:
            raise UsageError("the run does not record its artifacts directory",
                             hint="pass --artifacts DIR (the directory edgeq quantize wrote)")
        artifacts = Path(recorded)
    sweep = _load_result(sweep_file) if sweep_file is not None else None
    out_dir = out if out is not None else default_out
    with _progress_bar("writing the report") as bar:
        task = bar.add_task("report", total=None)
        paths = build_report(doc, artifacts_dir=artifacts, out_dir=out_dir, sweep=sweep,
                             layers=not no_layers,
                             progress=lambda d, t: bar.update(task, completed=d, total=t))
    if as_json:
        sys.stdout.write(json.dumps({"html": str(paths.html), "markdown": str(paths.markdown),
                                     "figures": [str(p) for p in paths.figures]}, indent=2) + "\n")
        return
    console.print(f"report: {paths.html}", highlight=False)
    console.print(f"summary: {paths.markdown} ({len(paths.figures)} figures in "
                  f"{paths.out_dir / 'figures'})", highlight=False)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    from edgeq.device.errors import UsageError

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} takes comma-separated whole numbers, not {text!r}",
                         hint=f"for example {option} 10,100,1000") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{option} needs at least one number >= 1",
                         hint=f"for example {option} 10,100,1000")
    return values


@app.command("sweep")
def sweep_command(
    artifacts_dir: Path = typer.Argument(..., help="Artifacts directory with model.keras."),
    calibration_sizes: str = typer.Option(
        "10,100,1000", "--calibration-sizes", help="Calibration-set sizes to try, comma-separated."),
    granularities: str = typer.Option(
        "per-channel,per-tensor", "--granularities",
        help="Weight granularities to try: per-channel, per-tensor (comma-separated)."),
    eval_limit: Optional[int] = typer.Option(
        None, "--eval-limit", help="Evaluate each model on the first N test images only."),
    seed: int = typer.Option(0, "--seed", help="Seed for drawing the calibration images."),
    threads: int = typer.Option(1, "--threads", help="Interpreter threads for evaluation."),
    as_json: bool = typer.Option(False, "--json", help="Print the sweep document as JSON."),
) -> None:
    """Re-quantize the same Keras model per calibration-set size and granularity; top-1 and size.

    The paper's future-work comparisons, run on this machine. Each variant goes to
    ARTIFACTS/sweep/<granularity>-cal<N>/; the results go to ARTIFACTS/sweep.json, which
    `edgeq report` adds to the report.
    """
    import os

    from edgeq.host.sweep import parse_granularities, sweep
    from rich.table import Table

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sizes = _int_list(calibration_sizes, "--calibration-sizes")
    grans = parse_granularities(granularities)
    with _progress_bar("sweeping") as bar:
        task = bar.add_task("sweep", total=len(sizes) * len(grans))
        doc = sweep(artifacts_dir, calibration_sizes=sizes, granularities=grans,
                    eval_limit=eval_limit, seed=seed, threads=threads,
                    progress=lambda d, t: bar.update(task, completed=d, total=t))
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    table = Table(title=f"sweep of {artifacts_dir} ({doc.get('eval_count')} test images)")
    for name in ("weights", "calib. images", "int8 top-1 %", "f32 top-1 %", "agree %",
                 "int8 KB"):
        table.add_column(name, justify="left" if name == "weights" else "right")
    for p in doc["points"]:
        table.add_row(p["granularity"], str(p["calibration_size"]),
                      f"{p['int8_top1'] * 100:.2f}", f"{p['float32_top1'] * 100:.2f}",
                      "n/a" if p.get("agreement") is None else f"{p['agreement'] * 100:.2f}",
                      f"{p['int8_size_bytes'] / 1024:.1f}")
    console.print(table)
    console.print(f"saved {doc['path']}; `edgeq report` includes it", highlight=False)
