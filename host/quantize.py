"""Full-integer int8 post-training quantization (Min-Max calibration) with tf.lite.TFLiteConverter.

`quantize(artifacts_dir)` reads `model.keras` (or the user's model: `.keras`, legacy `.h5`, a
SavedModel directory or a float32 `.tflite`) and writes, into the artifacts directory
(docs/SCHEMA.md): `model_float32.tflite`, `model_int8.tflite`, `eval.npz` and `manifest.json`.

The int8 conversion: `TFLiteConverter.from_keras_model` (`from_saved_model`), optimizations
DEFAULT, a representative dataset of N seeded calibration samples from which the converter
takes each activation's min and max (Min-Max calibration), `supported_ops =
[TFLITE_BUILTINS_INT8]` (the converter fails rather than leave a float op behind) and int8
input and output. From a float32 .tflite alone, TensorFlow's calibrator does the same
calibration and quantization on the flatbuffer. Weights are quantized per output channel by
default; `per_channel=False` asks for one scale per weight tensor, which is then verified.
Afterwards the int8 file is parsed and must be full-integer: int8 input/output, no float
tensor anywhere (int32 biases and shape tensors are allowed), no DEQUANTIZE op.

Checks at the door, before anything is written: one input, one [batch, classes] output
("not supported yet" otherwise); calibration and evaluation data loaded by edgeq.host.data
and fitted, checked and preprocessed by edgeq.host.preprocess (the built-in MNIST only for a
model that takes it); then every file is written atomically, the manifest last.

Imports: standard library, numpy, edgeq.device, edgeq.host.{artifacts,preprocess,tflite_file};
TensorFlow and Keras only inside functions. It never imports edgeq.host.inspection (which
imports this module for the QuantizationDebugger's converter).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import sha256_bytes, sha256_file, utc_now
from edgeq.host.artifacts import (
    EVAL_FILE,
    KERAS_FILE,
    TRAIN_JSON,
    eval_data_entry,
    eval_file_bytes,
    model_file_name,
    write_artifacts,
)
from edgeq.host.preprocess import (
    DataFitError,
    ModelInput,
    PreparedData,
    Preprocessing,
    class_names_for,
    prepare_data,
)
from edgeq.host.tflite_file import (
    TfliteFile,
    declared_exception_problems,
    full_integer_problems,
    parse_tflite,
    weight_tensors,
)

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA = "edgeq.manifest/1"
DEFAULT_CALIBRATION_SIZE = 500
MNIST_TRAIN_SOURCE = "mnist-train"

ProgressCallback = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]", Path]


class QuantizeError(EdgeqError):
    """The model could not be converted or quantized as asked."""


class CalibrationError(QuantizeError):
    """The calibration data does not fit the model."""


# ---------------------------------------------------------------------------------------------
# inputs: the model (.keras, .h5, SavedModel or float32 .tflite) and the data


def load_keras_model(path: Path) -> Any:
    """A Keras model from a .keras (or legacy .h5) file, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise QuantizeError(
            f"Keras model {path} does not exist",
            hint="run `edgeq train --out DIR` first, or pass --model PATH",
        )
    if path.suffix not in (".keras", ".h5"):
        raise QuantizeError(
            f"{path} is not a Keras model file (.keras or .h5)",
            hint="save the model with model.save('model.keras') and pass that file",
        )
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantizeError(
            f"{path}: cannot be loaded as a Keras model ({first[:200]})",
            hint="check that it is a Keras .keras (or legacy .h5) file saved with model.save()",
        ) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise QuantizeError(
            f"{path.name}: models with {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs are not supported yet",
            hint="edgeq handles classifiers with one image (or tensor) input and one output",
        )
    return model


def model_input_shape(model: Any) -> tuple[int, ...]:
    """The per-sample input shape of a Keras model (batch dimension dropped)."""
    shape = tuple(model.inputs[0].shape)[1:]
    if any(d is None for d in shape):
        raise QuantizeError(
            f"the model's input shape {list(shape)} has unknown dimensions",
            hint="give the model a fixed input shape, e.g. keras.Input((28, 28, 1))",
        )
    return tuple(int(d) for d in shape)


def _keras_model_input(model: Any, name: str) -> ModelInput:
    out = tuple(model.outputs[0].shape)
    num_classes = int(out[-1]) if len(out) == 2 and out[-1] else 0
    return ModelInput(model_input_shape(model), num_classes, name)


def classifier_input(f: TfliteFile, name: str) -> ModelInput:
    """What a .tflite classifier takes and gives; QuantizeError ("not supported yet") unless
    it has one input (batch, ...) of known size and one output (batch, classes)."""
    if len(f.inputs) != 1 or len(f.outputs) != 1:
        raise QuantizeError(
            f"{name}: models with {len(f.inputs)} inputs and {len(f.outputs)} outputs are not "
            "supported yet",
            hint="edgeq handles classifiers with one image (or tensor) input and one output")
    inp, out = f.tensors[f.inputs[0]], f.tensors[f.outputs[0]]
    if len(out.shape) != 2 or out.shape[1] < 2:
        raise QuantizeError(
            f"{name}: output {list(out.shape)} is not a [batch, classes] classifier output; "
            "other outputs are not supported yet",
            hint="edgeq evaluates classifiers: one output of shape (batch, number of classes)")
    sample = tuple(int(d) for d in inp.shape[1:])
    sig = inp.shape_signature[1:] if inp.shape_signature else []
    if len(inp.shape) < 2 or any(d < 1 for d in sample) or any(d == -1 for d in sig):
        raise QuantizeError(
            f"{name}: input shape {list(inp.shape_signature or inp.shape)} is not a batch of "
            "fixed-size samples; not supported yet",
            hint="give the model a fixed input shape, e.g. keras.Input((32, 32, 3))")
    return ModelInput(sample, int(out.shape[1]), name)


@dataclass
class ModelSource:
    """The float model quantize starts from: a Keras model (.keras / .h5), a SavedModel
    directory, or a float32 .tflite (`format`: "keras", "h5", "savedmodel", "tflite")."""

    path: Path
    format: str
    keras_model: Any = None
    tflite_bytes: Optional[bytes] = None

    @property
    def api(self) -> str:
        return {"savedmodel": "tf.lite.TFLiteConverter.from_saved_model",
                "tflite": "tensorflow.lite.python.optimize.calibrator.Calibrator"}.get(
                    self.format, "tf.lite.TFLiteConverter.from_keras_model")

    def converter(self) -> Any:
        """A fresh float32 TFLiteConverter for this source (not for .tflite sources)."""
        import tensorflow as tf

        if self.format == "savedmodel":
            return tf.lite.TFLiteConverter.from_saved_model(str(self.path))
        return tf.lite.TFLiteConverter.from_keras_model(self.keras_model)

    def sha256(self) -> str:
        """The file's sha256; for a SavedModel directory, of its files' names and hashes."""
        if self.path.is_file():
            return sha256_file(self.path)
        lines = [f"{p.relative_to(self.path).as_posix()} {sha256_file(p)}\n"
                 for p in sorted(self.path.rglob("*")) if p.is_file()]
        return sha256_bytes("".join(lines).encode("utf-8"))


def load_model_source(path: PathLike) -> ModelSource:
    """The float model at `path` in any supported format, with one-line errors."""
    p = Path(path)
    if p.is_dir():
        if not ((p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file()):
            raise QuantizeError(
                f"{p} is a directory but not a TensorFlow SavedModel (no saved_model.pb)",
                hint="pass a .keras, .h5 or float32 .tflite file, or a SavedModel directory")
        return ModelSource(p, "savedmodel")
    if p.suffix == ".tflite":
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise QuantizeError(f"model {p} does not exist", hint="check the path") from None
        f = parse_tflite(data, p)
        if f.inputs and f.tensors[f.inputs[0]].dtype != "FLOAT32":
            raise QuantizeError(
                f"{p.name} takes {f.tensors[f.inputs[0]].dtype.lower()} input: it is already "
                "quantized, not a float32 model",
                hint="to use a pair converted elsewhere: edgeq import FLOAT32.tflite "
                     "INT8.tflite --eval-data E --out DIR")
        return ModelSource(p, "tflite", tflite_bytes=data)
    if not p.exists():
        raise QuantizeError(
            f"model {p} does not exist",
            hint="run `edgeq train --out DIR` first, or pass --model PATH (.keras, .h5, "
                 "SavedModel directory or float32 .tflite)")
    return ModelSource(p, p.suffix.lstrip(".") or "keras", keras_model=load_keras_model(p))


def calibration_images(
    model: Any,
    *,
    size: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    calibration_file: Optional[PathLike] = None,
    preprocessing: Optional[Preprocessing] = None,
    model_in: Optional[ModelInput] = None,
) -> tuple[np.ndarray, str]:
    """`size` seeded calibration samples, float32 in the model's input shape, and their source.

    From `calibration_file` (any form edgeq.host.data.load_dataset takes; labels unused) when
    given, else from the MNIST training set (only for a 28x28 one-channel model). Samples are
    drawn without replacement with numpy's default_rng(seed); a file with fewer than `size`
    samples is used whole. Values are mapped by `preprocessing` (default: raw pixels, 0..255
    for MNIST; the model rescales inside). `model` is a Keras model, or None with `model_in`.
    """
    if size < 1:
        raise CalibrationError(
            f"calibration size must be at least 1, got {size}",
            hint="pass --calibration-size 100 or more",
        )
    mi = model_in or _keras_model_input(model, "the model")
    prepared = prepare_data(calibration_file, mi, preprocessing or Preprocessing(),
                            purpose="calibration", data_dir=data_dir, sample_size=size,
                            seed=seed)
    images = prepared.images.astype(np.float32).reshape((len(prepared.images), *mi.sample_shape))
    return images, MNIST_TRAIN_SOURCE if calibration_file is None else prepared.source


# ---------------------------------------------------------------------------------------------
# conversion


def build_int8_converter(
    model: Any, representative_dataset: Callable[[], Iterator[Any]], *, per_channel: bool = True
) -> Any:
    """The full-integer int8 converter edgeq uses (also handed to the QuantizationDebugger).

    `model` is a Keras model or a ModelSource (Keras or SavedModel)."""
    import tensorflow as tf

    if isinstance(model, ModelSource):
        converter = model.converter()
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if not per_channel:
        converter._experimental_disable_per_channel = True
    return converter


def _convert(converter: Any, what: str) -> bytes:
    import contextlib
    import warnings

    chatter = io.StringIO()
    try:
        # Keras' export prints "Saved artifact at ..." to stdout; keep stdout for the CLI's output.
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            # "Statistics for quantized inputs were expected": the input is int8 by request.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            result = bytes(converter.convert())
        logger.debug("converter (%s) said: %s", what, chatter.getvalue().strip())
        return result
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next(
            (ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(exc).__name__
        )
        raise QuantizeError(
            f"TFLite conversion ({what}) failed: {detail[:240]}",
            hint="the model uses an op with no int8 TFLite builtin kernel; "
            "change that layer or rerun with --debug for the converter log",
        ) from None


def _calibrate_tflite(float_bytes: bytes, representative_dataset: Callable[[], Iterator[Any]],
                      *, per_channel: bool, name: str) -> bytes:
    """Full-integer int8 from a float32 .tflite (no Keras/SavedModel source): TensorFlow's
    calibrator, the same Min-Max calibration and int8 quantizer the converter runs."""
    import contextlib

    import tensorflow as tf

    try:
        from tensorflow.lite.python.optimize.calibrator import Calibrator
    except ImportError:  # pragma: no cover - depends on the TensorFlow build
        raise QuantizeError(
            f"this TensorFlow ({tf.__version__}) cannot quantize a .tflite file",
            hint="pass the Keras model or SavedModel it came from with --model") from None
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            return bytes(Calibrator(float_bytes).calibrate_and_quantize(
                representative_dataset, tf.int8, tf.int8, False,
                disable_per_channel=not per_channel))
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise QuantizeError(
            f"{name}: the calibrator cannot quantize this .tflite "
            f"({(lines[0] if lines else type(exc).__name__)[:200]})",
            hint="pass the Keras model or SavedModel it came from with --model, or convert "
                 "it elsewhere and use edgeq import") from None


def model_entry(path: Path, data: bytes) -> dict[str, Any]:
    """The manifest ENTRY of a .tflite file (docs/SCHEMA.md) whose bytes are `data`."""
    f = parse_tflite(data, path)
    return {
        "file": path.name,
        "sha256": sha256_bytes(data),
        "size_bytes": len(data),
        "input": f.tensors[f.inputs[0]].tensor_info(),
        "output": f.tensors[f.outputs[0]].tensor_info(),
        "ops": f.ops(),
        "min_runtime_version": f.min_runtime_version,
    }


def quantize(
    artifacts_dir: PathLike,
    *,
    out_dir: Optional[PathLike] = None,
    keras_model_path: Optional[PathLike] = None,
    model_path: Optional[PathLike] = None,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    seed: int = 0,
    per_channel: bool = True,
    calibration_file: Optional[PathLike] = None,
    eval_file: Optional[PathLike] = None,
    preprocessing: Optional[Preprocessing] = None,
    data_dir: Optional[PathLike] = None,
    eval_limit: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    model_name: Optional[str] = None,
    calibration_method: str = "minmax",
    float_fallback: int = 0,
    activations: str = "int8",
) -> dict[str, Any]:
    """Convert the float model to float32 and full-integer int8 TFLite; returns the manifest.

    `calibration_method` (edgeq.host.calibration.parse_method): "minmax" is the converter's
    own Min-Max (the reference); the others ("aeq-minmax", "percentile:P", "mse",
    "moving-average") set every activation range from the calibration activations and are
    quantized by ai-edge-quantizer; percentile and mse also choose each weight range (per
    tensor, or per channel with `per_channel`) and the float weights are clipped to it first.
    Every method's weight ranges are recorded (calibration.weight_ranges, `weight_ranges`).
    `float_fallback` N keeps the N layers with the largest normalised quantization error in
    float and `activations="int16"` makes a 16x8 file (both
    with ai-edge-quantizer): the declared exceptions to full-integer, recorded in the
    manifest's `precision` and checked exactly (tflite_file.declared_exception_problems).

    The model is `model_path` (alias `keras_model_path`: .keras, .h5, SavedModel directory or
    float32 .tflite), else `artifacts_dir`/model.keras; outputs go to `out_dir` (default:
    `artifacts_dir`). Calibration and evaluation data come from `calibration_file` /
    `eval_file` (any form edgeq.host.data.load_dataset takes), else the built-in MNIST when
    the model takes it; both are mapped by `preprocessing` (default raw pixels) and checked
    against the model before anything is converted or written. `eval_limit` keeps the first
    N evaluation samples. `progress(done, total)` counts calibration samples.
    """
    src = Path(artifacts_dir)
    out = Path(out_dir) if out_dir is not None else src
    if model_path is not None and keras_model_path is not None \
            and Path(model_path) != Path(keras_model_path):
        raise QuantizeError("both --model and --keras-model were given",
                            hint="--keras-model is an alias of --model; pass one of them")
    given = model_path if model_path is not None else keras_model_path
    source_path = Path(given) if given is not None else src / KERAS_FILE
    if given is None and not src.is_dir():
        raise QuantizeError(
            f"artifacts directory {src} does not exist",
            hint="run `edgeq train --out DIR` first, or pass --model PATH",
        )
    if given is None and not source_path.exists():
        raise QuantizeError(
            f"Keras model {source_path} does not exist",
            hint="run `edgeq train --out DIR` first, or pass --model PATH",
        )
    if eval_limit is not None and eval_limit < 1:
        raise QuantizeError(
            f"eval limit must be at least 1, got {eval_limit}",
            hint="pass a positive --eval-limit or leave it out",
        )
    if calibration_size < 1:
        raise CalibrationError(f"calibration size must be at least 1, got {calibration_size}",
                               hint="pass --calibration-size 100 or more")
    method = _method_for(calibration_method, float_fallback, activations)
    trained = _train_record(src, source_path)
    pre = _trained_preprocessing(preprocessing, trained, calibration_file, eval_file)
    source = load_model_source(source_path)
    if source.keras_model is not None:  # early, before any conversion
        _keras_model_input(source.keras_model, source_path.name)

    import tensorflow as tf

    t0 = time.perf_counter()
    float_bytes = source.tflite_bytes or _convert(source.converter(), "float32")
    t1 = time.perf_counter()
    model_in = classifier_input(parse_tflite(float_bytes, source_path), source_path.name)
    images, cal_source = calibration_images(
        None, size=calibration_size, seed=seed, data_dir=data_dir,
        calibration_file=calibration_file, preprocessing=pre, model_in=model_in)
    evalset = prepare_data(eval_file, model_in, pre, purpose="evaluation", data_dir=data_dir,
                           limit=eval_limit)
    class_names = _class_names(trained, evalset, model_in)
    n = len(images)

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for i in range(n):
            yield [images[i : i + 1]]
            if progress is not None:
                progress(i + 1, n)

    t2 = time.perf_counter()
    method_info: dict[str, Any] = {"quantizer": "tflite-converter", "ranges": None,
                                   "float_layers": [], "weight_ranges": weight_ranges(
                                       float_bytes, method, per_channel=per_channel)[1]}
    if method.quantizer == "ai-edge-quantizer":
        int8_bytes, method_info = quantize_with_method(
            float_bytes, images, method, per_channel=per_channel, float_fallback=float_fallback,
            activations=activations, progress=progress)
    elif source.format == "tflite":
        int8_bytes = _calibrate_tflite(float_bytes, representative_dataset,
                                       per_channel=per_channel, name=source_path.name)
    else:
        int8_bytes = _convert(
            build_int8_converter(source.keras_model or source, representative_dataset,
                                 per_channel=per_channel), "int8")
    t3 = time.perf_counter()
    float_path, int8_path = out / model_file_name("float32"), out / model_file_name("int8")
    # Check the int8 bytes before they replace anything.
    exceptions = bool(method_info["float_layers"]) or activations != "int8"
    if exceptions:
        _verify_exceptions(int8_bytes, int8_path, method_info["float_layers"], activations)
    else:
        _verify_int8(int8_bytes, int8_path, per_channel)
    full_integer = full_integer_problems(parse_tflite(int8_bytes, int8_path))
    eval_bytes = eval_file_bytes(evalset, model_in.num_classes)

    name = model_name or _model_name(src, source_path, source.keras_model)
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "model_name": name,
        "created_utc": utc_now(),
        "tensorflow_version": tf.__version__,
        "made_by": "quantize",
        "converter": {
            "api": (source.api if method_info["quantizer"] == "tflite-converter"
                    else "ai_edge_quantizer.Quantizer"),
            "quantizer": method_info["quantizer"],
            "quantizer_version": method_info.get("quantizer_version", tf.__version__),
            "version": tf.__version__,
            "optimizations": ["DEFAULT"],
            "supported_ops": ["TFLITE_BUILTINS_INT8"],
            "inference_input_type": activations,
            "inference_output_type": activations,
            "weights": "per-channel" if per_channel else "per-tensor",
            "activations": f"per-tensor {activations}, {method.label} calibration",
            "float32_convert_s": round(t1 - t0, 3),
            "int8_convert_s": round(t3 - t2, 3),
        },
        "calibration": {
            "size": n,
            "seed": seed,
            "source": cal_source,
            "per_channel": per_channel,
            "method": method.label,
            "parameters": method.parameters(),
            "ranges": method_info["ranges"],
            "weight_ranges": method_info["weight_ranges"],
        },
        "precision": {
            "activations": activations,
            "weights": "int8",
            "float_fallback": float_fallback,
            "float_layers": method_info["float_layers"],
            "exceptions_ok": True,
        },
        "eval_data": eval_data_entry(evalset, eval_bytes),
        "preprocessing": pre.to_dict(),
        "num_classes": model_in.num_classes,
        "class_names": class_names,
        "full_integer": {"ok": not full_integer, "problems": full_integer},
        "imported_from": None,
        "source_model": {"file": source_path.name, "sha256": source.sha256(),
                         "format": source.format},
        "models": {
            "float32": model_entry(float_path, float_bytes),
            "int8": model_entry(int8_path, int8_bytes),
        },
    }
    write_artifacts(out, {float_path.name: float_bytes, int8_path.name: int8_bytes,
                          EVAL_FILE: eval_bytes}, manifest)
    logger.info(
        "quantized %s: float32 %d bytes, int8 %d bytes (%.1f %%)",
        name,
        len(float_bytes),
        len(int8_bytes),
        100.0 * len(int8_bytes) / len(float_bytes),
    )
    return manifest


def _train_record(src: Path, source_path: Path) -> dict[str, Any]:
    """DIR/train.json when the model quantized is DIR/model.keras (else, or unreadable, {})."""
    record = src / TRAIN_JSON
    if not (record.is_file() and source_path == src / KERAS_FILE):
        return {}
    try:
        got = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def _trained_preprocessing(asked: Optional[Preprocessing], trained: dict[str, Any],
                           calibration_file: Any, eval_file: Any) -> Preprocessing:
    """The preprocessing train.json recorded (or raw pixels); a different one asked for, or
    MNIST defaults for a model trained on other data, are refused."""
    recorded = Preprocessing.from_dict(trained.get("preprocessing"))
    if asked is not None and trained.get("preprocessing") and asked != recorded:
        raise DataFitError(
            f"the preprocessing asked for ({asked.to_dict()}) is not the one {TRAIN_JSON} "
            f"trained with ({recorded.to_dict()})",
            hint="leave the --input-* options out: quantize uses the training's preprocessing")
    source = str((trained.get("data") or {}).get("train_source") or "mnist-train")
    if not source.startswith("mnist-"):
        for given, flag in ((calibration_file, "--calibration-data"), (eval_file, "--eval-data")):
            if given is None:
                raise DataFitError(
                    f"the model was trained on {source}, not MNIST; {flag} is missing",
                    hint=f"pass {flag} (e.g. the data you trained on, or its test set)")
    return asked if asked is not None else recorded


def _class_names(trained_record: dict[str, Any], evalset: PreparedData,
                 model_in: ModelInput) -> list[str]:
    """The evaluation data's class names, else train.json's, padded with class indices;
    DataFitError when the data's disagree with the ones train.json recorded."""
    trained = trained_record.get("class_names")
    given = evalset.data.class_names
    if isinstance(trained, list) and given is not None \
            and list(given) != trained[: len(given)]:
        raise DataFitError(
            f"the evaluation data's classes ({', '.join(given[:6])}) are not the ones "
            f"{TRAIN_JSON} trained on ({', '.join(map(str, trained[:6]))})",
            hint="evaluate on data with the training data's classes, in the same order")
    if given is None and isinstance(trained, list) and len(trained) == model_in.num_classes:
        return [str(n) for n in trained]
    return class_names_for(evalset.data, model_in.num_classes)


def _method_for(text: str, float_fallback: int, activations: str) -> Any:
    """The calibration method, checked with the mixed-precision options before any work;
    minmax with a fallback or int16 becomes aeq-minmax (those files come from
    ai-edge-quantizer)."""
    from edgeq.host.calibration import Method, parse_method

    method = parse_method(text)
    if activations not in ("int8", "int16"):
        raise QuantizeError(f"unknown activation type {activations!r}",
                            hint="pass --activations int8 or --activations int16")
    if float_fallback < 0:
        raise QuantizeError(f"--float-fallback must be 0 or more, got {float_fallback}",
                            hint="e.g. --float-fallback 2")
    if method.name == "minmax" and (float_fallback or activations != "int8"):
        return Method("aeq-minmax")
    return method


def _verify_exceptions(data: bytes, path: Path, float_layers: list[str], activations: str
                       ) -> None:
    """QuantizeError unless the file is exactly its declared exceptions to full-integer."""
    problems = declared_exception_problems(parse_tflite(data, path), float_layers=float_layers,
                                           activations=activations)
    if problems:
        raise QuantizeError(
            "the mixed-precision model is not what was declared: " + "; ".join(problems),
            hint="report this with the model; --float-fallback 0 and --activations int8 give "
                 "a full-integer file")


def _verify_int8(int8_bytes: bytes, path: Path, per_channel: bool) -> None:
    """QuantizeError unless the converted bytes are full-integer (and per-tensor if asked)."""
    parsed = parse_tflite(int8_bytes, path)
    problems = full_integer_problems(parsed)
    if problems:
        raise QuantizeError(
            "the int8 model is not full-integer: " + "; ".join(problems),
            hint="the converter left float tensors; check the model's layers",
        )
    if not per_channel:
        multi = [w.name for w in weight_tensors(path, parsed) if len(w.scales) != 1]
        if multi:
            raise QuantizeError(
                f"per-tensor quantization was asked for but {len(multi)} weight tensor(s) have "
                f"several scales (e.g. {multi[0]!r})",
                hint="this TensorFlow ignores _experimental_disable_per_channel; use per-channel",
            )


def _model_name(src: Path, keras_path: Path, model: Any = None) -> str:
    record = src / TRAIN_JSON
    if record.is_file() and keras_path == src / KERAS_FILE:
        try:
            name = json.loads(record.read_text(encoding="utf-8")).get("model_name")
            if isinstance(name, str) and name:
                return name
        except (OSError, ValueError):
            pass
    stem = keras_path.stem if keras_path.is_file() else keras_path.name
    stem = stem.removesuffix("_float32") if keras_path.suffix == ".tflite" else stem
    if stem == "model" and keras_path.suffix == ".tflite":
        stem = keras_path.resolve().parent.name
    return stem if stem != "model" else str(getattr(model, "name", "model"))


# ---------------------------------------------------------------------------------------------
# calibration methods, float fallback and 16x8 through ai-edge-quantizer


def activation_stats(float_bytes: bytes, images: np.ndarray,
                     progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """Per float activation tensor (by name) its edgeq.host.calibration.TensorStats: the float32
    model run by LiteRT (no delegate, every tensor kept) on each calibration sample, twice
    (min/max per sample, then the histograms over [min, max])."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from edgeq.host.calibration import TensorStats

    f = parse_tflite(float_bytes)
    it = Interpreter(model_content=float_bytes, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    names = {t.index: t.name for t in f.tensors if t.dtype == "FLOAT32" and not t.is_constant}
    stats = {name: TensorStats() for name in names.values()}
    n = len(images)
    for pass_no in (0, 1):
        for i in range(n):
            it.set_tensor(f.inputs[0], images[i:i + 1])
            it.invoke()
            for index, name in names.items():
                try:
                    values = it.get_tensor(index)
                except ValueError:  # a tensor LiteRT does not keep (e.g. scratch)
                    continue
                if pass_no == 0:
                    stats[name].observe_batch(values)
                elif stats[name].count:
                    stats[name].observe_histogram(values)
            if progress is not None:
                progress(pass_no * n + i + 1, 2 * n)
    return {name: s for name, s in stats.items() if s.count}


#: the filter input of the ops whose weights get a range, and its output-channel axis
WEIGHT_OPS = {"CONV_2D": (1, 0), "DEPTHWISE_CONV_2D": (1, 3), "FULLY_CONNECTED": (1, 0)}


def float_weight_tensors(float_bytes: bytes) -> list[tuple[str, Any, Any, np.ndarray]]:
    """The float32 constant weights of the conv / depthwise / dense ops, in graph order:
    (op name, weight TensorRecord, output TensorRecord, values)."""
    f = parse_tflite(float_bytes)
    out, seen = [], set()
    for op in f.operators:
        pos_axis = WEIGHT_OPS.get(op.name)
        if pos_axis is None or len(op.inputs) <= pos_axis[0] or op.inputs[pos_axis[0]] < 0:
            continue
        t = f.tensors[op.inputs[pos_axis[0]]]
        values = f.buffer_array(t) if t.dtype == "FLOAT32" else None
        if values is None or t.index in seen or not op.outputs:
            continue
        seen.add(t.index)
        out.append((op.name, t, f.tensors[op.outputs[0]], np.array(values, dtype=np.float32)))
    return out


def replace_buffers(data: bytes, values: dict[int, np.ndarray]) -> bytes:
    """`data` with the float32 constant buffers `values` (buffer index -> array of the same
    size) written in place; the flatbuffer's layout is unchanged."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on the installed runtime
        from tensorflow.lite.python import schema_py_generated as schema

    raw = bytearray(data)
    model = schema.Model.GetRootAs(raw, 0)
    for index, arr in values.items():
        new = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        buf = model.Buffers(index)
        if buf.DataLength() > 0:
            view = buf.DataAsNumpy()  # a view into `raw`
            if view.size != len(new):
                raise QuantizeError(f"weight buffer {index} changed size",
                                    hint="report this with the model")
            view[:] = np.frombuffer(new, dtype=np.uint8)
        else:
            offset, size = int(buf.Offset()), int(buf.Size())
            if size != len(new):
                raise QuantizeError(f"weight buffer {index} changed size",
                                    hint="report this with the model")
            raw[offset:offset + size] = new
    return bytes(raw)


def weight_ranges(float_bytes: bytes, method: Any, *, per_channel: bool,
                  keep_float: Sequence[str] = ()) -> tuple[bytes, list[dict[str, Any]]]:
    """The weight range `method` chooses per conv / depthwise / dense layer
    (edgeq.host.calibration.weight_thresholds, per channel or per tensor), and `float_bytes`
    with the weights clipped to it (unchanged when no threshold is below max|w|; layers whose
    output is in `keep_float` keep their weights). Rows (the manifest's
    calibration.weight_ranges): tensor, layer (the op's output), op, granularity,
    channel_axis, minmax_abs and chosen_abs (one per channel, or one), clipped_fraction
    (share of weights clipped), float (kept in float), channel_max_abs (each output channel's
    max|w|, whatever the granularity) and p999_abs (P99.9 of |w|, for the outlier rule)."""
    from edgeq.host import calibration as cal

    rows: list[dict[str, Any]] = []
    patched: dict[int, np.ndarray] = {}
    for op, t, out_t, w in float_weight_tensors(float_bytes):
        axis = WEIGHT_OPS[op][1] if per_channel and w.ndim > WEIGHT_OPS[op][1] else None
        top = cal.weight_thresholds(cal.Method("minmax"), w, axis)
        chosen = cal.weight_thresholds(method, w, axis)
        keep = out_t.name in keep_float
        clipped = w if keep else cal.clip_weights(w, chosen, axis)
        if not keep and np.any(chosen < top):
            patched[t.buffer] = clipped
        channel_axis = WEIGHT_OPS[op][1] if w.ndim > WEIGHT_OPS[op][1] else None
        rows.append({
            "tensor": t.name, "layer": out_t.name, "op": op,
            "granularity": "per-channel" if axis is not None else "per-tensor",
            "channel_axis": axis, "minmax_abs": [float(v) for v in top],
            "chosen_abs": [float(v) for v in (top if keep else chosen)],
            "clipped_fraction": float(np.mean(clipped != w)), "float": keep,
            "channel_max_abs": [float(v) for v in cal.weight_thresholds(
                cal.Method("minmax"), w, channel_axis)],
            "p999_abs": float(np.percentile(np.abs(w), 99.9))})
    return (replace_buffers(float_bytes, patched) if patched else float_bytes), rows


def quantize_with_method(
    float_bytes: bytes,
    images: np.ndarray,
    method: Any,
    *,
    per_channel: bool = True,
    float_fallback: int = 0,
    activations: str = "int8",
    progress: Optional[ProgressCallback] = None,
) -> tuple[bytes, dict[str, Any]]:
    """The quantized bytes of `float_bytes` made by ai-edge-quantizer (recipe static_wi8_ai8,
    or static_wi8_ai16 for `activations="int16"`), with each activation's range chosen by
    `method` (edgeq.host.calibration.Method) from the calibration activations, and the
    `float_fallback` layers with the largest normalised quantization error left in float.

    For percentile and mse the weights are first clipped to the range the method chose
    (`weight_ranges`); the activations are calibrated on that model.

    Returns the bytes and what was done: {"ranges": [{tensor, minmax_min, minmax_max, min,
    max, clipped_fraction, noise, p999_abs}], "weight_ranges": [weight_ranges' rows],
    "float_layers": [tensor names], "quantizer"}.
    The model's input and output tensors keep their Min-Max range (raw pixels stay lossless).
    """
    import contextlib
    import warnings

    from edgeq.host import calibration as cal

    try:
        from ai_edge_quantizer import quantizer as aeq_quantizer
        from ai_edge_quantizer import recipe as aeq_recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import QuantGranularity, TFLOperationName
    except ImportError:
        raise QuantizeError(
            f"calibration method {method.label} needs ai-edge-quantizer, which is not installed",
            hint="pip install 'ai-edge-quantizer>=0.10' (Python 3.10 or newer)") from None
    import importlib.metadata

    f = parse_tflite(float_bytes)
    io_names = {f.tensors[i].name for i in (*f.inputs, *f.outputs)}
    # weights first: the activations are calibrated on the model with its clipped weights
    clipped_bytes, w_ranges = weight_ranges(float_bytes, method, per_channel=per_channel)
    stats = activation_stats(clipped_bytes, images, progress)
    ranges: list[dict[str, Any]] = []
    chosen: dict[str, tuple[float, float]] = {}
    for t in f.tensors:
        s = stats.get(t.name)
        if s is None:
            continue
        mm = cal.minmax_range(s)
        lo, hi = mm if t.name in io_names else cal.choose_range(method, s)
        chosen[t.name] = (lo, hi)
        q_lo = cal.percentile_from_histogram(s.hist, s.edges, 100.0 - 99.9)
        q_hi = cal.percentile_from_histogram(s.hist, s.edges, 99.9)
        ranges.append({
            "tensor": t.name, "minmax_min": mm[0], "minmax_max": mm[1], "min": lo, "max": hi,
            "clipped_fraction": cal.clipped_fraction(s, lo, hi),
            "noise": cal.quantization_noise(s, lo, hi),
            "p999_abs": max(abs(q_lo), abs(q_hi)), "io": t.name in io_names})
    producers = {out: op for op in f.operators for out in op.outputs}
    candidates = [r for r in ranges if not r["io"]
                  and f.tensors[[t.name for t in f.tensors].index(r["tensor"])].index in producers]
    if float_fallback < 0 or float_fallback > len(candidates):
        raise QuantizeError(
            f"--float-fallback {float_fallback}: the model has {len(candidates)} layers that "
            "can stay in float", hint=f"pass a number from 0 to {len(candidates)}")
    worst = sorted(candidates, key=lambda r: r["noise"], reverse=True)[:float_fallback]
    float_layers = [r["tensor"] for r in worst]
    if any(w["layer"] in float_layers for w in w_ranges):  # float layers keep their weights
        clipped_bytes, w_ranges = weight_ranges(float_bytes, method, per_channel=per_channel,
                                                keep_float=float_layers)

    bits = 16 if activations == "int16" else 8
    rp = aeq_recipe.recipe_manager.RecipeManager()
    rp.add_static_config(
        regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, activation_num_bits=bits,
        weight_num_bits=8, weight_granularity=(QuantGranularity.CHANNELWISE if per_channel
                                               else QuantGranularity.TENSORWISE))
    import re

    for name in float_layers:
        rp.add_quantization_config(regex=f"^{re.escape(name)};$",  # AEQ scope: "out;"
                                   operation_name=TFLOperationName.ALL_SUPPORTED,
                                   algorithm_key=AlgorithmName.NO_QUANTIZE)
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = aeq_quantizer.Quantizer(clipped_bytes, rp.get_quantization_recipe())
            from ai_edge_litert.interpreter import Interpreter

            sigs = Interpreter(model_content=float_bytes).get_signature_list()
            key = next(iter(sigs))
            in_name = sigs[key]["inputs"][0]
            qsv = q.calibrate({key: [{in_name: images[i:i + 1]} for i in range(len(images))]},
                              num_threads=1)
            if method.name == "aeq-minmax":  # record the ranges its own calibration chose
                for r in ranges:
                    q_r = qsv.get(r["tensor"]) or {}
                    if r["io"] or "min" not in q_r or "max" not in q_r:
                        continue
                    lo, hi = float(np.min(q_r["min"])), float(np.max(q_r["max"]))
                    s = stats[r["tensor"]]
                    # `noise` stays the Min-Max one: it ranked the --float-fallback layers
                    r.update(min=lo, max=hi, clipped_fraction=cal.clipped_fraction(s, lo, hi))
            else:
                for name, (lo, hi) in chosen.items():
                    if name in qsv and "min" in qsv[name] and "max" in qsv[name]:
                        qsv[name]["min"] = np.array([lo], dtype=np.float32)
                        qsv[name]["max"] = np.array([hi], dtype=np.float32)
            result = q.quantize(qsv, enable_progress_report=False)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise QuantizeError(
            f"ai-edge-quantizer failed ({(lines[0] if lines else type(exc).__name__)[:200]})",
            hint="use --calibration-method minmax (the TFLite converter) for this model") from None
    return bytes(result.quantized_model), {
        "quantizer": "ai-edge-quantizer",
        "quantizer_version": importlib.metadata.version("ai-edge-quantizer"),
        "recipe": "static_wi8_ai16" if bits == 16 else "static_wi8_ai8",
        "ranges": ranges,
        "weight_ranges": w_ranges,
        "float_layers": float_layers,
    }
