"""Full-integer int8 post-training quantization (Min-Max calibration) with tf.lite.TFLiteConverter.

`quantize(artifacts_dir)` reads `model.keras` (or a user's Keras model) and writes, into the
artifacts directory (docs/SCHEMA.md): `model_float32.tflite`, `model_int8.tflite`, `eval.npz`
and `manifest.json`.

The int8 conversion: `TFLiteConverter.from_keras_model`, optimizations DEFAULT, a representative
dataset of N seeded training images (or the user's .npy/.npz) from which the converter takes
each activation's min and max (Min-Max calibration), `supported_ops = [TFLITE_BUILTINS_INT8]`
(the converter fails rather than leave a float op behind) and int8 input and output.
Weights are quantized per output channel by default; `per_channel=False` asks for one scale per
weight tensor (converter._experimental_disable_per_channel), which is then verified.
Afterwards the int8 file is parsed and must be full-integer: int8 input/output, no float tensor
anywhere (int32 biases and shape tensors are allowed), no DEQUANTIZE op.

Imports: standard library, numpy, edgeq.device, edgeq.host.{artifacts,data,tflite_file};
TensorFlow and Keras only inside functions. It never imports edgeq.host.inspection (which
imports this module for the QuantizationDebugger's converter).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import sha256_bytes, sha256_file, utc_now
from edgeq.device.store import atomic_write_bytes, atomic_write_json
from edgeq.host.artifacts import (
    EVAL_FILE,
    KERAS_FILE,
    MANIFEST_FILE,
    TRAIN_JSON,
    model_file_name,
)
from edgeq.host.data import load_mnist
from edgeq.host.tflite_file import full_integer_problems, parse_tflite, weight_tensors

logger = logging.getLogger(__name__)

MANIFEST_SCHEMA = "edgeq.manifest/1"
DEFAULT_CALIBRATION_SIZE = 500
MNIST_TRAIN_SOURCE = "mnist-train"
_NPZ_KEYS = ("images", "x", "x_calib", "calibration", "x_train", "arr_0")

ProgressCallback = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]", Path]


class QuantizeError(EdgeqError):
    """The model could not be converted or quantized as asked."""


class CalibrationError(QuantizeError):
    """The calibration data does not fit the model."""


# ---------------------------------------------------------------------------------------------
# inputs: the Keras model and the calibration images


def load_keras_model(path: Path) -> Any:
    """A Keras model from a .keras (or legacy .h5) file, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise QuantizeError(
            f"Keras model {path} does not exist",
            hint="run `edgeq train --out DIR` first, or pass --keras-model PATH",
        )
    if path.suffix not in (".keras", ".h5"):
        raise QuantizeError(
            f"{path} is not a Keras model file (.keras)",
            hint="save the model with model.save('model.keras') and pass that file",
        )
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantizeError(
            f"{path}: cannot be loaded as a Keras model ({first[:200]})",
            hint="check that it is a Keras 3 .keras file saved with model.save()",
        ) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise QuantizeError(
            f"{path}: the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs",
            hint="edgeq handles classifiers with one image input and one output",
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


def _fit_to_input(x: np.ndarray, sample_shape: tuple[int, ...], what: str) -> np.ndarray:
    """(N, ...) samples reshaped to (N, *sample_shape) when they differ only by 1-sized dims."""
    if x.ndim >= 1 and tuple(x.shape[1:]) == sample_shape:
        return x
    def squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(d for d in shape if d != 1)

    if x.ndim >= 2 and squeeze(x.shape[1:]) == squeeze(sample_shape):
        return x.reshape((x.shape[0],) + sample_shape)
    raise CalibrationError(
        f"{what} has samples of shape {list(x.shape[1:])}, the model expects {list(sample_shape)}",
        hint=f"give calibration data of shape (N, {', '.join(map(str, sample_shape))})",
    )


def _load_calibration_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise CalibrationError(f"calibration data {path} does not exist", hint="check the path")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.files)
                key = next((k for k in _NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise CalibrationError(
                        f"{path}: no calibration array (it has: {', '.join(keys) or 'nothing'})",
                        hint=f"store the images under one of: {', '.join(_NPZ_KEYS[:3])}",
                    )
                arr = npz[key]
        else:
            raise CalibrationError(
                f"{path}: calibration data must be .npy or .npz",
                hint="save it with numpy.save or numpy.savez",
            )
    except CalibrationError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CalibrationError(
            f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:160]})",
            hint="the file is corrupt or not a numpy file",
        ) from None
    if arr.dtype.kind not in "iuf" or arr.ndim < 2:
        raise CalibrationError(
            f"{path}: holds {arr.dtype} of shape {list(arr.shape)}, not a batch of images",
            hint="store a numeric array of shape (N, 28, 28) or (N, 28, 28, 1)",
        )
    if len(arr) == 0:
        raise CalibrationError(
            f"{path}: holds no samples", hint="give at least one calibration image"
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise CalibrationError(
            f"{path}: holds NaN or infinite values", hint="clean the calibration data"
        )
    return arr


def calibration_images(
    model: Any,
    *,
    size: int,
    seed: int,
    data_dir: Optional[PathLike] = None,
    calibration_file: Optional[PathLike] = None,
) -> tuple[np.ndarray, str]:
    """`size` seeded calibration samples, float32 in the model's input shape, and their source.

    From `calibration_file` (.npy / .npz) when given, else from the MNIST training set. Samples
    are drawn without replacement with numpy's default_rng(seed); a file with fewer than `size`
    samples is used whole. Values stay raw (0..255 for MNIST; the model rescales inside).
    """
    if size < 1:
        raise CalibrationError(
            f"calibration size must be at least 1, got {size}",
            hint="pass --calibration-size 100 or more",
        )
    sample_shape = model_input_shape(model)
    if calibration_file is not None:
        path = Path(calibration_file)
        pool = _load_calibration_file(path)
        source = f"file:{path.name}"
        what = str(path)
    else:
        pool, _ = load_mnist("train", data_dir)
        source = MNIST_TRAIN_SOURCE
        what = "MNIST training images"
    pool = _fit_to_input(pool, sample_shape, what)
    rng = np.random.default_rng(seed)
    n = min(size, len(pool))
    if n < size:
        logger.warning(
            "calibration data has %d samples, fewer than the %d asked for; using all", n, size
        )
    idx = np.sort(rng.choice(len(pool), size=n, replace=False))
    return pool[idx].astype(np.float32), source


# ---------------------------------------------------------------------------------------------
# conversion


def build_int8_converter(
    model: Any, representative_dataset: Callable[[], Iterator[Any]], *, per_channel: bool = True
) -> Any:
    """The full-integer int8 converter edgeq uses (also handed to the QuantizationDebugger)."""
    import tensorflow as tf

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
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    seed: int = 0,
    per_channel: bool = True,
    calibration_file: Optional[PathLike] = None,
    data_dir: Optional[PathLike] = None,
    eval_limit: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    model_name: Optional[str] = None,
) -> dict[str, Any]:
    """Convert the Keras model to float32 and full-integer int8 TFLite; returns the manifest.

    `artifacts_dir` holds model.keras (unless `keras_model_path` is given); outputs go to
    `out_dir` (default: `artifacts_dir`). `eval_limit` keeps the first N test images in
    eval.npz (all 10,000 by default). `progress(done, total)` counts calibration samples.
    """
    src = Path(artifacts_dir)
    out = Path(out_dir) if out_dir is not None else src
    keras_path = Path(keras_model_path) if keras_model_path is not None else src / KERAS_FILE
    if keras_model_path is None and not src.is_dir():
        raise QuantizeError(
            f"artifacts directory {src} does not exist",
            hint="run `edgeq train --out DIR` first, or pass --keras-model PATH",
        )
    if eval_limit is not None and eval_limit < 1:
        raise QuantizeError(
            f"eval limit must be at least 1, got {eval_limit}",
            hint="pass a positive --eval-limit or leave it out",
        )
    model = load_keras_model(keras_path)
    images, source = calibration_images(
        model,
        size=calibration_size,
        seed=seed,
        data_dir=data_dir,
        calibration_file=calibration_file,
    )
    n = len(images)
    eval_images, eval_labels = load_mnist("test", data_dir, limit=eval_limit)

    import tensorflow as tf

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for i in range(n):
            yield [images[i : i + 1]]
            if progress is not None:
                progress(i + 1, n)

    t0 = time.perf_counter()
    float_bytes = _convert(tf.lite.TFLiteConverter.from_keras_model(model), "float32")
    t1 = time.perf_counter()
    int8_bytes = _convert(
        build_int8_converter(model, representative_dataset, per_channel=per_channel), "int8"
    )
    t2 = time.perf_counter()

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QuantizeError(
            f"cannot create output directory {out}: {exc.strerror}",
            hint="choose a writable directory",
        ) from None
    float_path, int8_path = out / model_file_name("float32"), out / model_file_name("int8")
    # Check the int8 bytes before they replace anything.
    _verify_int8(int8_bytes, int8_path, per_channel)
    atomic_write_bytes(float_path, float_bytes, mode=None)
    atomic_write_bytes(int8_path, int8_bytes, mode=None)

    buf = io.BytesIO()
    np.savez_compressed(buf, images=eval_images, labels=eval_labels)
    eval_bytes = buf.getvalue()
    atomic_write_bytes(out / EVAL_FILE, eval_bytes, mode=None)

    name = model_name or _model_name(src, keras_path, model)
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "model_name": name,
        "created_utc": utc_now(),
        "tensorflow_version": tf.__version__,
        "converter": {
            "api": "tf.lite.TFLiteConverter.from_keras_model",
            "version": tf.__version__,
            "optimizations": ["DEFAULT"],
            "supported_ops": ["TFLITE_BUILTINS_INT8"],
            "inference_input_type": "int8",
            "inference_output_type": "int8",
            "weights": "per-channel" if per_channel else "per-tensor",
            "activations": "per-tensor, min-max calibration",
            "float32_convert_s": round(t1 - t0, 3),
            "int8_convert_s": round(t2 - t1, 3),
        },
        "calibration": {
            "size": n,
            "seed": seed,
            "source": source,
            "per_channel": per_channel,
            "method": "min-max",
        },
        "eval_data": {
            "file": EVAL_FILE,
            "sha256": sha256_bytes(eval_bytes),
            "size_bytes": len(eval_bytes),
            "count": len(eval_labels),
        },
        "source_model": {"file": keras_path.name, "sha256": sha256_file(keras_path)},
        "models": {
            "float32": model_entry(float_path, float_bytes),
            "int8": model_entry(int8_path, int8_bytes),
        },
    }
    atomic_write_json(out / MANIFEST_FILE, manifest, mode=None, sort_keys=False)
    logger.info(
        "quantized %s: float32 %d bytes, int8 %d bytes (%.1f %%)",
        name,
        len(float_bytes),
        len(int8_bytes),
        100.0 * len(int8_bytes) / len(float_bytes),
    )
    return manifest


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


def _model_name(src: Path, keras_path: Path, model: Any) -> str:
    record = src / TRAIN_JSON
    if record.is_file() and keras_path == src / KERAS_FILE:
        try:
            name = json.loads(record.read_text(encoding="utf-8")).get("model_name")
            if isinstance(name, str) and name:
                return name
        except (OSError, ValueError):
            pass
    return keras_path.stem if keras_path.stem != "model" else str(getattr(model, "name", "model"))
