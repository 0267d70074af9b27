"""CLI: the host pipeline — `edgeq train`, `quantize`, `import`, `evaluate`, `inspect`, `models`.

Each command parses options, calls one library function (edgeq.host.train / quantize /
importer / evaluate / inspection) inside `ui.task` (progress on stderr, native logs kept out)
and hands
the result to edgeq.host.cli.render (tables) or `ui.print_json` (`--json` on stdout).
Library modules, numpy and TensorFlow are imported inside the command bodies so
`edgeq --help` stays fast; errors propagate to the CLI root, which maps them to exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from edgeq.host.cli import app, render, ui
from edgeq.host.cli.ui import DataDirOption, JsonOption

SeedOption = Annotated[int, typer.Option("--seed", help="Seed that picks the images used.")]
CalibrationDataOption = Annotated[Optional[Path], typer.Option(
    "--calibration-data", help="Your own calibration images: an .npy, an .npz with an "
                               "'images' array, or a folder of class sub-folders of PNG/JPEG "
                               "(default: the built-in MNIST training set).")]
EvalDataOption = Annotated[Optional[Path], typer.Option(
    "--eval-data", help="Evaluation data stored preprocessed in eval.npz: an .npz with 'images' "
                        "and 'labels' (optional 'class_names'), or a folder with one sub-folder "
                        "of PNG/JPEG images per class (default: the built-in MNIST test set).")]
InputScaleOption = Annotated[float, typer.Option(
    "--input-scale", help="Preprocessing: model input = (pixel - mean) / std * scale + offset; "
                          "e.g. 0.00392 for 0..1 inputs (default 1: raw pixels).")]
InputOffsetOption = Annotated[float, typer.Option(
    "--input-offset", help="Preprocessing: added after the scale (e.g. -1 with scale 0.00784 "
                           "for -1..1 inputs).")]
InputMeanOption = Annotated[Optional[str], typer.Option(
    "--input-mean", help="Preprocessing: per-channel mean subtracted first, e.g. "
                         "123.7,116.3,103.5 (one value or one per channel).")]
InputStdOption = Annotated[Optional[str], typer.Option(
    "--input-std", help="Preprocessing: per-channel standard deviation divided by, e.g. "
                        "58.4,57.1,57.4.")]
ModelPathOption = Annotated[Optional[Path], typer.Option(
    "--model", help="Your own float model: .keras, legacy .h5, a SavedModel directory or a "
                    "float32 .tflite (instead of DIR/model.keras).")]
KerasModelOption = Annotated[Optional[Path], typer.Option(
    "--keras-model", help="Alias of --model (kept for older scripts).")]
EvalLimitOption = Annotated[Optional[int], typer.Option(
    "--eval-limit", min=1, help="Keep only the first N evaluation samples in eval.npz "
                                "(default all; MNIST: 10,000).")]

CalibrationMethodOption = Annotated[str, typer.Option(
    "--calibration-method", help="How activation ranges are set: minmax (the converter's "
                                 "Min-Max, default), aeq-minmax, percentile:P (e.g. "
                                 "percentile:99.99), mse, moving-average.")]
FloatFallbackOption = Annotated[int, typer.Option(
    "--float-fallback", min=0, help="Keep the N layers with the largest quantization error "
                                    "in float (mixed precision; default 0).")]
ActivationsOption = Annotated[str, typer.Option(
    "--activations", help="Activation type: int8 (default) or int16 (16x8: int16 "
                          "activations, int8 weights).")]


@app.command("models")
def models_command(as_json: JsonOption = False) -> None:
    """List the model zoo (the names `edgeq train --model` accepts)."""
    from edgeq.models import available_models, get_model_module

    modules = {name: get_model_module(name) for name in available_models()}
    rows = [{"name": name, "description": getattr(module, "DESCRIPTION", ""),
             "default_epochs": getattr(module, "DEFAULT_EPOCHS", None)}
            for name, module in modules.items()]
    ui.print_json(rows) if as_json else render.models(rows)


@app.command("train")
def train_command(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Artifacts directory to write model.keras and train.json into."),
    model: str = typer.Option(
        "mnist-cnn", "--model", "-m", help="Model from the zoo (see `edgeq models`)."),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", min=1, help="Training epochs (default: the model's own)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for weights, shuffling and dropout."),
    train_limit: Optional[int] = typer.Option(
        None, "--train-limit", min=1, help="Train on the first N training images only."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Train on your own labelled data (.npz or image folder) instead "
                             "of MNIST, resized to the zoo model's input."),
    test_data: Optional[Path] = typer.Option(
        None, "--test-data", help="Test set for the float32 top-1 (default: 20 % of --data "
                                  "held out, or the MNIST test set)."),
    input_scale: InputScaleOption = 1.0,
    input_offset: InputOffsetOption = 0.0,
    input_mean: InputMeanOption = None,
    input_std: InputStdOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the float32 baseline with a fixed seed; saves DIR/model.keras and DIR/train.json.

    With --json: the train.json record.
    """
    from edgeq.host.preprocess import Preprocessing
    from edgeq.host.train import train

    pre = Preprocessing.from_options(input_scale, input_offset, input_mean, input_std)
    with ui.task("training") as progress:
        record = train(out, model_name=model, epochs=epochs, seed=seed, train_limit=train_limit,
                       data_dir=data_dir, progress=progress, data=data, test_data=test_data,
                       preprocessing=None if pre.identity else pre)
    ui.print_json(record) if as_json else render.trained(record, out)


@app.command("quantize")
def quantize_command(
    artifacts_dir: Path = typer.Argument(
        ..., help="Artifacts directory holding model.keras (from `edgeq train`)."),
    calibration_size: int = typer.Option(
        500, "--calibration-size", "-n", min=1,
        help="Representative images for Min-Max calibration."),
    seed: SeedOption = 0,
    per_tensor: bool = typer.Option(
        False, "--per-tensor", help="One scale per weight tensor instead of per output channel."),
    model: ModelPathOption = None, keras_model: KerasModelOption = None,
    calibration_data: CalibrationDataOption = None, eval_data: EvalDataOption = None,
    input_scale: InputScaleOption = 1.0, input_offset: InputOffsetOption = 0.0,
    input_mean: InputMeanOption = None, input_std: InputStdOption = None,
    eval_limit: EvalLimitOption = None,
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the outputs here instead of DIR."),
    calibration_method: CalibrationMethodOption = "minmax",
    float_fallback: FloatFallbackOption = 0, activations: ActivationsOption = "int8",
    data_dir: DataDirOption = None, as_json: JsonOption = False,
) -> None:
    """Convert to float32 and int8 TFLite (full-integer unless --float-fallback/int16).

    With --json: the manifest.
    """
    from edgeq.host.preprocess import Preprocessing
    from edgeq.host.quantize import quantize

    pre = Preprocessing.from_options(input_scale, input_offset, input_mean, input_std)
    with ui.task("calibrating") as progress:
        manifest = quantize(
            artifacts_dir, out_dir=out, model_path=model, keras_model_path=keras_model,
            calibration_size=calibration_size, seed=seed, per_channel=not per_tensor,
            calibration_file=calibration_data, eval_file=eval_data,
            preprocessing=None if pre.identity else pre, data_dir=data_dir, eval_limit=eval_limit,
            progress=progress, calibration_method=calibration_method,
            float_fallback=float_fallback, activations=activations)
    ui.print_json(manifest) if as_json else render.quantized(manifest, out or artifacts_dir)


@app.command("import")
def import_command(
    float32_model: Path = typer.Argument(..., help="The float32 .tflite file."),
    int8_model: Path = typer.Argument(..., help="Its int8 .tflite conversion (made anywhere)."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Artifacts directory to write (copies, eval.npz, manifest)."),
    eval_data: EvalDataOption = None,
    input_scale: InputScaleOption = 1.0,
    input_offset: InputOffsetOption = 0.0,
    input_mean: InputMeanOption = None,
    input_std: InputStdOption = None,
    eval_limit: EvalLimitOption = None,
    name: Optional[str] = typer.Option(
        None, "--name", help="Model name in the manifest (default: the float32 file's stem)."),
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a normal artifacts directory from a .tflite pair converted elsewhere.

    Deploy, bench-remote, history and report then work on it. With --json: the manifest.
    """
    from edgeq.host.importer import import_pair
    from edgeq.host.preprocess import Preprocessing

    pre = Preprocessing.from_options(input_scale, input_offset, input_mean, input_std)
    with ui.task("importing"):
        manifest = import_pair(float32_model, int8_model, out_dir=out, eval_file=eval_data,
                               preprocessing=pre, data_dir=data_dir, eval_limit=eval_limit,
                               model_name=name)
    ui.print_json(manifest) if as_json else render.quantized(manifest, out)


@app.command("evaluate")
def evaluate_command(
    artifacts_dir: Path = typer.Argument(..., help="Artifacts directory from `edgeq quantize`."),
    as_json: JsonOption = False,
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Evaluate only the first N images."),
    threads: int = typer.Option(1, "--threads", min=1, help="LiteRT interpreter threads."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", envvar="EDGEQ_DATA_DIR",
        help="Evaluate on the MNIST test set from this folder instead of DIR/eval.npz."),
) -> None:
    """Run float32 and int8 with LiteRT on the host; side by side: size, top-1, agreement, drop.

    With --json: the result, with every prediction.
    """
    from edgeq.host.evaluate import evaluate

    with ui.task("evaluating") as progress:
        result = evaluate(artifacts_dir, limit=limit, threads=threads, data_dir=data_dir,
                          progress=progress)
    ui.print_json(result) if as_json else render.evaluated(result)


@app.command("inspect")
def inspect_command(
    model_path: Path = typer.Argument(..., help="A .tflite file (e.g. DIR/model_int8.tflite)."),
    float_model: Optional[Path] = typer.Option(
        None, "--float-model",
        help="The float Keras model (.keras): adds the per-layer quantization error."),
    calibration_size: int = typer.Option(
        100, "--calibration-size", "-n", min=1,
        help="Images for the per-layer error (with --float-model)."),
    calibration_data: CalibrationDataOption = None,
    seed: SeedOption = 0,
    data_dir: DataDirOption = None,
    channels: bool = typer.Option(
        False, "--channels", help="Also list every channel's weight range."),
    as_json: JsonOption = False,
) -> None:
    """Per tensor scale, zero point and real range; weight ranges and outliers; per-layer error."""
    from edgeq.host.inspection import inspect_model

    with ui.task("quantization debugger") as progress:
        report = inspect_model(model_path, float_model_path=float_model,
                               calibration_size=calibration_size,
                               calibration_file=calibration_data, seed=seed, data_dir=data_dir,
                               progress=progress if float_model else None)
    ui.print_json(report) if as_json else render.inspection(report, channels)
