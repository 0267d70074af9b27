"""CLI: the host pipeline — `edgeq train`, `quantize`, `evaluate`, `inspect`, `models`.

Each command parses options, calls one library function (edgeq.host.train / quantize /
evaluate / inspection) and renders the result with rich (progress on stderr, tables or
`--json` on stdout). Library modules, numpy and TensorFlow are imported inside the command
bodies so `edgeq --help` stays fast; errors propagate to the CLI root, which maps them to
exit codes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from edgeq.host.cli import app, console, err_console

_DATA_DIR_HELP = (
    "MNIST folder (IDX files, gzipped or not, or a Keras mnist.npz) or an .npz file; "
    "default: the copy shipped with edgeq."
)


def _progress(description: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


def _updater(progress: Any, description: str) -> Callable[[int, int], None]:
    task = progress.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update


def _print_json(obj: Any) -> None:
    # plain print: rich would wrap long lines and add markup
    typer.echo(json.dumps(obj, indent=2))


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f} %"


@app.command("models")
def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List the model zoo (the names `edgeq train --model` accepts)."""
    from edgeq.models import available_models, get_model_module

    rows = []
    for name in available_models():
        module = get_model_module(name)
        rows.append(
            {
                "name": name,
                "description": getattr(module, "DESCRIPTION", ""),
                "default_epochs": getattr(module, "DEFAULT_EPOCHS", None),
            }
        )
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title="edgeq model zoo")
    table.add_column("name", style="bold")
    table.add_column("default epochs", justify="right")
    table.add_column("description")
    for row in rows:
        table.add_row(row["name"], str(row["default_epochs"]), row["description"])
    console.print(table)


@app.command("train")
def train_command(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Artifacts directory to write model.keras and train.json into."
    ),
    model: str = typer.Option(
        "mnist-cnn", "--model", "-m", help="Model from the zoo (see `edgeq models`)."
    ),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", min=1, help="Training epochs (default: the model's own)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed for weights, shuffling and dropout."),
    train_limit: Optional[int] = typer.Option(
        None, "--train-limit", min=1, help="Train on the first N training images only (quick runs)."
    ),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="EDGEQ_DATA_DIR", help=_DATA_DIR_HELP
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the train.json record instead of a summary."
    ),
) -> None:
    """Train the float32 baseline with a fixed seed; saves DIR/model.keras and DIR/train.json."""
    from edgeq.host.train import train

    with _progress("training") as progress:
        record = train(
            out,
            model_name=model,
            epochs=epochs,
            seed=seed,
            train_limit=train_limit,
            data_dir=data_dir,
            progress=_updater(progress, "training"),
        )
    if as_json:
        _print_json(record)
        return
    console.print(
        f"trained [bold]{record['model_name']}[/] ({record['epochs']} epochs, seed {record['seed']}, "
        f"{record['train_count']} images) in {record['train_time_s']:.1f} s: float32 top-1 "
        f"[bold]{_pct(record['float32_test_top1'])}[/] on {record['test_count']} test images"
    )
    console.print(f"wrote {out / 'model.keras'} and {out / 'train.json'}")
    console.print(f"next: edgeq quantize {out}", style="dim")


@app.command("quantize")
def quantize_command(
    artifacts_dir: Path = typer.Argument(
        ..., help="Artifacts directory holding model.keras (from `edgeq train`)."
    ),
    calibration_size: int = typer.Option(
        500,
        "--calibration-size",
        "-n",
        min=1,
        help="Representative images for Min-Max calibration.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed that picks the calibration images."),
    per_tensor: bool = typer.Option(
        False, "--per-tensor", help="One scale per weight tensor instead of per output channel."
    ),
    keras_model: Optional[Path] = typer.Option(
        None, "--keras-model", help="Your own Keras model (.keras) instead of DIR/model.keras."
    ),
    calibration_data: Optional[Path] = typer.Option(
        None,
        "--calibration-data",
        help="Your own calibration images (.npy, or .npz with an 'images' array), "
        "raw pixel values shaped like the model input.",
    ),
    eval_limit: Optional[int] = typer.Option(
        None,
        "--eval-limit",
        min=1,
        help="Keep only the first N test images in eval.npz (default all 10,000).",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the outputs here instead of DIR."
    ),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="EDGEQ_DATA_DIR", help=_DATA_DIR_HELP
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest instead of a summary."),
) -> None:
    """Convert to float32 and full-integer int8 TFLite (Min-Max calibration); writes the manifest."""
    from edgeq.host.quantize import quantize

    with _progress("calibrating") as progress:
        manifest = quantize(
            artifacts_dir,
            out_dir=out,
            keras_model_path=keras_model,
            calibration_size=calibration_size,
            seed=seed,
            per_channel=not per_tensor,
            calibration_file=calibration_data,
            data_dir=data_dir,
            eval_limit=eval_limit,
            progress=_updater(progress, "calibrating"),
        )
    if as_json:
        _print_json(manifest)
        return
    from rich.table import Table

    where = out or artifacts_dir
    models = manifest["models"]
    table = Table(title=f"{manifest['model_name']}: TFLite models in {where}")
    table.add_column("")
    for kind in models:
        table.add_column(kind, justify="right")

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        table.add_row(label, *(fn(models[k]) for k in models))

    row("file", lambda m: m["file"])
    row("size (KB)", lambda m: f"{m['size_bytes'] / 1024:.1f}")
    row(
        "input",
        lambda m: f"{m['input']['dtype']} s={m['input']['scale']:g} zp={m['input']['zero_point']}",
    )
    row(
        "output",
        lambda m: (
            f"{m['output']['dtype']} s={m['output']['scale']:g} zp={m['output']['zero_point']}"
        ),
    )
    row("ops", lambda m: ", ".join(op["name"] for op in m["ops"]))
    row("min runtime", lambda m: str(m["min_runtime_version"]))
    row("sha256", lambda m: m["sha256"][:16] + "…")
    console.print(table)
    cal = manifest["calibration"]
    ratio = models["int8"]["size_bytes"] / models["float32"]["size_bytes"]
    console.print(
        f"int8 is {100 * ratio:.1f} % of float32; calibration: {cal['size']} images from "
        f"{cal['source']} (seed {cal['seed']}), {'per-channel' if cal['per_channel'] else 'per-tensor'} weights"
    )
    console.print(f"next: edgeq evaluate {where}", style="dim")


@app.command("evaluate")
def evaluate_command(
    artifacts_dir: Path = typer.Argument(..., help="Artifacts directory from `edgeq quantize`."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as JSON (with every prediction)."
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Evaluate only the first N images."
    ),
    threads: int = typer.Option(1, "--threads", min=1, help="LiteRT interpreter threads."),
    data_dir: Optional[Path] = typer.Option(
        None,
        "--data-dir",
        envvar="EDGEQ_DATA_DIR",
        help="Evaluate on the MNIST test set from this folder instead of DIR/eval.npz.",
    ),
) -> None:
    """Run float32 and int8 with LiteRT on the host; side by side: size, top-1, agreement, drop."""
    from edgeq.host.evaluate import evaluate

    with _progress("evaluating") as progress:
        result = evaluate(
            artifacts_dir,
            limit=limit,
            threads=threads,
            data_dir=data_dir,
            progress=_updater(progress, "evaluating"),
        )
    if as_json:
        _print_json(result)
        return
    from rich.table import Table

    f32, i8 = result["models"]["float32"], result["models"]["int8"]
    rt = result["runtime"]
    table = Table(
        title=f"{result.get('model_name') or 'model'} on {result['data']['count']} images "
        f"({result['data']['source']}), {rt['name']} {rt['version']} on this host"
    )
    table.add_column("")
    table.add_column("float32", justify="right")
    table.add_column("int8", justify="right")
    table.add_column("int8 vs float32", justify="right")
    table.add_row(
        "size (KB)",
        f"{f32['size_kb']:.1f}",
        f"{i8['size_kb']:.1f}",
        f"{100 * result['size_ratio']:.1f} %",
    )
    table.add_row(
        "top-1", _pct(f32["top1"]), _pct(i8["top1"]), f"{-result['drop_points']:+.2f} points"
    )
    table.add_row(
        "correct", f"{f32['correct']}/{f32['count']}", f"{i8['correct']}/{i8['count']}", ""
    )
    table.add_row("agreement", "", "", _pct(result["agreement"]))
    table.add_row("eval time (s)", f"{f32['eval_s']:.2f}", f"{i8['eval_s']:.2f}", "")
    console.print(table)
    console.print(f"drop: {result['drop_points']:.2f} points (float32 top-1 minus int8 top-1)")


@app.command("inspect")
def inspect_command(
    model_path: Path = typer.Argument(..., help="A .tflite file (e.g. DIR/model_int8.tflite)."),
    float_model: Optional[Path] = typer.Option(
        None,
        "--float-model",
        help="The float Keras model (.keras): adds the per-layer quantization error.",
    ),
    calibration_size: int = typer.Option(
        100,
        "--calibration-size",
        "-n",
        min=1,
        help="Images for the per-layer error (with --float-model).",
    ),
    calibration_data: Optional[Path] = typer.Option(
        None,
        "--calibration-data",
        help="Your own calibration images (.npy/.npz) for the per-layer error.",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed that picks the images for the per-layer error."
    ),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="EDGEQ_DATA_DIR", help=_DATA_DIR_HELP
    ),
    channels: bool = typer.Option(
        False, "--channels", help="Also list every channel's weight range."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON."),
) -> None:
    """Per tensor scale, zero point and real range; weight ranges and outliers; per-layer error."""
    from edgeq.host.inspection import inspect_model

    with _progress("quantization debugger") as progress:
        report = inspect_model(
            model_path,
            float_model_path=float_model,
            calibration_size=calibration_size,
            calibration_file=calibration_data,
            seed=seed,
            data_dir=data_dir,
            progress=_updater(progress, "quantization debugger") if float_model else None,
        )
    if as_json:
        _print_json(report)
        return
    _render_inspection(report, channels)


def _short(name: str, width: int = 48) -> str:
    name = name.split(";")[0]
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _render_inspection(report: dict[str, Any], channels: bool) -> None:
    from rich.table import Table

    verdict = (
        "[green]yes[/]"
        if report["full_integer"]
        else "[red]no[/]: " + "; ".join(report["full_integer_problems"])
    )
    console.print(
        f"[bold]{report['file']}[/]: {report['size_bytes'] / 1024:.1f} KB, "
        f"min runtime {report['min_runtime_version']}, full-integer int8: {verdict}"
    )
    console.print("ops: " + ", ".join(f"{op['name']} v{op['version']}" for op in report["ops"]))

    table = Table(
        title="tensors: real range = [(qmin - zero_point) * scale, (qmax - zero_point) * scale]"
    )
    for col, justify in (
        ("#", "right"),
        ("name", "left"),
        ("dtype", "left"),
        ("shape", "left"),
        ("scale", "right"),
        ("zero point", "right"),
        ("real min", "right"),
        ("real max", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for t in report["tensors"]:
        if not t["quantized"]:
            scale = zp = rmin = rmax = "-"
        elif t["per_channel"]:
            scale = f"{t['scale_min']:.3g}..{t['scale_max']:.3g} ({t['channels']} ch)"
            zp = "0" if not any(t["zero_point"]) else "per ch"
            rmin, rmax = f"{min(t['real_min']):.4g}", f"{max(t['real_max']):.4g}"
        else:
            scale, zp = f"{t['scale']:.4g}", str(t["zero_point"])
            rmin = f"{t['real_min']:.4g}" if t["real_min"] is not None else "-"
            rmax = f"{t['real_max']:.4g}" if t["real_max"] is not None else "-"
        table.add_row(
            str(t["index"]), _short(t["name"]), t["dtype"], str(t["shape"]), scale, zp, rmin, rmax
        )
    console.print(table)

    wt = Table(title=f"weights (dequantized); outlier: {report['outlier_rule']}")
    for col in (
        "name",
        "op",
        "shape",
        "granularity",
        "min",
        "max",
        "max|w|/P99.9",
        "outlier",
        "outlier channels",
    ):
        wt.add_column(col, justify="left" if col in ("name", "op", "granularity") else "right")
    for w in report["weights"]:
        ratio = f"{w['outlier_ratio']:.2f}" if w["outlier_ratio"] is not None else "inf"
        wt.add_row(
            _short(w["name"], 32),
            w["op"],
            str(w["shape"]),
            "per-channel" if w["per_channel"] else "per-tensor",
            f"{w['min']:.4g}",
            f"{w['max']:.4g}",
            ratio,
            "[red]yes[/]" if w["outlier"] else "no",
            f"{w['outlier_channels']}/{len(w['channels'])}",
        )
    console.print(wt)
    if channels:
        for w in report["weights"]:
            ct = Table(title=f"channels of {_short(w['name'], 60)}")
            for col in ("channel", "min", "max", "levels used", "max|w|/P99.9", "outlier"):
                ct.add_column(col, justify="right")
            for c in w["channels"]:
                ct.add_row(
                    str(c["channel"]),
                    f"{c['min']:.4g}",
                    f"{c['max']:.4g}",
                    str(c["levels_used"]),
                    f"{c['outlier_ratio']:.2f}" if c["outlier_ratio"] is not None else "inf",
                    "yes" if c["outlier"] else "no",
                )
            console.print(ct)

    errors = report.get("layer_errors")
    if errors:
        cal = errors["calibration"]
        lt = Table(
            title=f"per-layer quantization error (QuantizationDebugger, {cal['size']} images from "
            f"{cal['source']}); rmse/scale ~0.29 is pure rounding"
        )
        for col in ("op", "tensor", "scale", "rmse", "rmse/scale", "max |error|"):
            lt.add_column(col, justify="left" if col in ("op", "tensor") else "right")
        for layer in errors["layers"]:
            fmt = lambda v: f"{v:.4g}" if isinstance(v, (int, float)) else "-"
            lt.add_row(
                layer["op"],
                _short(layer["tensor"], 40),
                fmt(layer.get("scale")),
                fmt(layer.get("rmse")),
                fmt(layer.get("rmse_per_scale")),
                fmt(layer.get("max_abs_error")),
            )
        console.print(lt)
