"""CLI: `edgeq report` (a run, or a fleet run, as one self-contained HTML page + Markdown) and
`edgeq sweep`.

Parses options, calls edgeq.host.report.build_report (one run) /
edgeq.host.report_fleet.build_fleet_report (an edgeq.fleet/1 document) /
edgeq.host.sweep.sweep inside a
`ui.task` (progress on stderr, native logs kept out) and prints where the files went.
matplotlib, TensorFlow and the library modules are imported inside the command bodies so
`edgeq --help` stays fast.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from edgeq.host.cli import app, render, ui
from edgeq.host.cli.common import history_run
from edgeq.host.cli.ui import HistoryDbOption, JsonOption

_RESULT_HINT = "pass the JSON that `edgeq bench-remote --json` printed"


def _load_result(path: Path) -> dict[str, Any]:
    from edgeq.device.errors import UsageError

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no result file {path}", hint=_RESULT_HINT) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path} as JSON: {exc}", hint=_RESULT_HINT) from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not a JSON object", hint="pass an edgeq.compare/1 document")
    return doc


def _the_run(run: str, result: Optional[Path], db: Optional[Path]) -> tuple[dict[str, Any], Path]:
    """The compare document to report on and its default output directory."""
    from edgeq.host.history import History

    if result is not None:
        doc = _load_result(result)
        name = f"run-{doc['run_id']}" if doc.get("run_id") is not None else result.stem
        return doc, Path("reports") / name
    doc = history_run(History(db), run, empty_hint="run `edgeq bench-remote --host local` "
                                                   "first, or pass --result")
    return doc, Path("reports") / f"run-{doc.get('run_id')}"


def _artifacts_of(doc: dict[str, Any], artifacts: Optional[Path]) -> Path:
    from edgeq.device.errors import UsageError

    if artifacts is not None:
        return artifacts
    recorded = doc.get("artifacts_dir")
    if not recorded:
        raise UsageError("the run does not record its artifacts directory",
                         hint="pass --artifacts DIR (the directory edgeq quantize wrote)")
    return Path(recorded)


def _the_fleet(fleet: str, db: Optional[Path]) -> tuple[dict[str, Any], Path]:
    """The stored fleet run `fleet` (an id or latest) and its default output directory."""
    from edgeq.host.history import History, fleet_doc

    doc = fleet_doc(History(db), fleet)
    return doc, Path("reports") / f"fleet-{doc.get('fleet_id')}"


def _write_report(doc: dict[str, Any], out: Path, artifacts: Optional[Path],
                  extras: tuple[Optional[Path], Optional[Path], Optional[Path]],
                  layers: bool) -> Any:
    """build_fleet_report for an edgeq.fleet/1 document, else build_report (one run)."""
    from edgeq.device.errors import UsageError
    from edgeq.host.report_fleet import build_fleet_report, is_fleet

    sweep, rob, profile = (_load_result(f) if f is not None else None for f in extras)
    with ui.task("writing the report") as progress:
        if is_fleet(doc):
            return build_fleet_report(doc, out_dir=out, profile=profile, progress=progress)
        if profile is not None:
            raise UsageError("--profile goes with a fleet report",
                             hint="pass --fleet ID, or --result with an edgeq.fleet/1 file")
        from edgeq.host.report import build_report

        return build_report(doc, artifacts_dir=_artifacts_of(doc, artifacts), out_dir=out,
                            sweep=sweep, robustness=rob, layers=layers, progress=progress)


FleetOption = Annotated[Optional[str], typer.Option(
    "--fleet", help="A fleet run from `edgeq history fleets` (an id, or latest): boards side "
                    "by side, per setting, with heat maps board x setting.")]
ProfileOption = Annotated[Optional[Path], typer.Option(
    "--profile", help="An edgeq.profile/1 JSON (`edgeq profile --json`) whose per-layer "
                      "figure goes in the fleet report.")]
SweepFileOption = Annotated[Optional[Path], typer.Option(
    "--sweep", help="A sweep.json to include (default: ARTIFACTS/sweep.json when present).")]
RobustnessFileOption = Annotated[Optional[Path], typer.Option(
    "--robustness", help="A robustness.json to include (default: ARTIFACTS/robustness.json "
                         "when present).")]


@app.command("report")
def report_command(
    run: str = typer.Argument("latest", help="Run id from `edgeq history`, or latest."),
    result: Optional[Path] = typer.Option(
        None, "--result", help="A compare JSON file (`edgeq bench-remote --json`), or an "
                               "edgeq.fleet/1 one, instead of a stored run."),
    artifacts: Optional[Path] = typer.Option(
        None, "--artifacts", help="The artifacts directory the run measured (default: the one "
                                  "the run records)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output directory (default reports/run-<id>, reports/fleet-<id>, "
                            "or reports/<result file name>)."),
    db: HistoryDbOption = None,
    sweep_file: SweepFileOption = None, robustness_file: RobustnessFileOption = None,
    no_layers: bool = typer.Option(
        False, "--no-layers", help="Leave out the per-layer analysis (it needs TensorFlow)."),
    fleet: FleetOption = None, profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the paper's report of a run: one self-contained HTML page and a Markdown summary.

    The side-by-side table, McNemar, intervals, figures, the per-layer analysis, the
    environment and, when present, the sweep (calibration methods vs Min-Max, clipped ranges)
    and robustness under corruptions. Opens offline. With --fleet (or a fleet --result): the
    boards side by side per setting, heat maps and --profile's per-layer figure.
    With --json: the written paths."""
    doc, default_out = _the_fleet(fleet, db) if fleet is not None else _the_run(run, result, db)
    paths = _write_report(doc, out or default_out, artifacts,
                          (sweep_file, robustness_file, profile), layers=not no_layers)
    if as_json:
        ui.print_json({"html": str(paths.html), "markdown": str(paths.markdown),
                       "figures": [str(p) for p in paths.figures]})
    else:
        render.report_written(paths)


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


CalibrationSizesOption = Annotated[str, typer.Option(
    "--calibration-sizes", help="Calibration-set sizes to try, comma-separated.")]
GranularitiesOption = Annotated[str, typer.Option(
    "--granularities",
    help="Weight granularities to try: per-channel, per-tensor (comma-separated).")]

MethodsOption = Annotated[str, typer.Option(
    "--methods", help="Calibration methods to try, comma-separated: minmax, aeq-minmax, "
                      "percentile:P, mse, moving-average.")]
FallbackOption = Annotated[str, typer.Option(
    "--fallback", help="Float-fallback layer counts to try, comma-separated (0 = none).")]


@app.command("sweep")
def sweep_command(
    artifacts_dir: Path = typer.Argument(..., help="Artifacts directory with model.keras."),
    calibration_sizes: CalibrationSizesOption = "10,100,1000",
    granularities: GranularitiesOption = "per-channel,per-tensor",
    methods: MethodsOption = "minmax", fallback: FallbackOption = "0",
    eval_limit: Optional[int] = typer.Option(
        None, "--eval-limit", help="Evaluate each model on the first N test images only."),
    seed: int = typer.Option(0, "--seed", help="Seed for drawing the calibration images."),
    threads: int = typer.Option(1, "--threads", help="Interpreter threads for evaluation."),
    as_json: JsonOption = False,
) -> None:
    """Re-quantize the same Keras model per method, granularity, calibration size, fallback.

    The paper's future-work comparisons, run on this machine. Each variant goes to
    ARTIFACTS/sweep/<name>/; the results go to ARTIFACTS/sweep.json, which
    `edgeq report` adds to the report. With --json: the sweep document.
    """
    from edgeq.host.sweep import parse_fallbacks, parse_granularities, sweep

    sizes = _int_list(calibration_sizes, "--calibration-sizes")
    grans, fbs = parse_granularities(granularities), parse_fallbacks(fallback)
    with ui.task("sweeping") as progress:
        doc = sweep(artifacts_dir, calibration_sizes=sizes, granularities=grans,
                    methods=methods.split(","), fallbacks=fbs, eval_limit=eval_limit, seed=seed,
                    threads=threads, progress=progress)
    ui.print_json(doc) if as_json else render.sweep_points(doc, artifacts_dir)


@app.command("robustness")
def robustness_command(
    artifacts_dir: Path = typer.Argument(..., help="Artifacts directory from `edgeq quantize`."),
    variants: Optional[list[Path]] = typer.Option(
        None, "--variant", help="Another artifacts directory (e.g. a sweep variant) whose int8 "
                                "model is evaluated too; repeatable."),
    sweep_variants: bool = typer.Option(
        False, "--sweep", help="Also every variant of ARTIFACTS/sweep.json."),
    corruptions: str = typer.Option(
        "gaussian_noise,blur,rotation,contrast,brightness", "--corruptions",
        help="Corruptions, comma-separated."),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Use only the first N evaluation images."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random corruptions."),
    threads: int = typer.Option(1, "--threads", min=1, help="LiteRT interpreter threads."),
    as_json: JsonOption = False,
) -> None:
    """Float32 and int8 on corrupted copies of the evaluation data (noise, blur, rotation,
    contrast, brightness at severities 1-3); saves ARTIFACTS/robustness.json."""
    from edgeq.host.robustness import parse_corruptions, robustness, sweep_variant_dirs

    dirs = list(variants or []) + (sweep_variant_dirs(artifacts_dir) if sweep_variants else [])
    with ui.task("corrupting and evaluating") as progress:
        doc = robustness(artifacts_dir, variants=dirs, corruptions=parse_corruptions(corruptions),
                         seed=seed, limit=limit, threads=threads, progress=progress)
    ui.print_json(doc) if as_json else render.robustness_table(doc)
