"""`edgeq import`: a float32 + int8 .tflite pair converted elsewhere becomes an artifacts dir.

`import_pair(float32_path, int8_path, out_dir=...)` checks both files (they parse, each has
one input and one [batch, classes] output, both take the same input shape and give the same
number of classes, and both load in the LiteRT runtime the board uses), loads and preprocesses
the evaluation data for that input exactly as `edgeq quantize` does (edgeq.host.preprocess),
and writes copies of both files, eval.npz and a manifest (sha256, sizes, input/output
quantization and ops through edgeq.host.tflite_file) with edgeq.host.artifacts.write_artifacts.
Whether the int8 file is full-integer is reported (`full_integer`), not required: a pair
made elsewhere may keep float ops, and the measurements should say so. Deploy, bench-remote,
history and report then work on the directory unchanged. Nothing is written until every
check has passed.

Imports: standard library, numpy, edgeq.device (fileutil, runtime), edgeq.host.{artifacts,
preprocess,quantize,tflite_file}; no TensorFlow (quantize imports it only inside functions).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import sha256_bytes, utc_now
from edgeq.host.artifacts import (
    EVAL_FILE,
    eval_data_entry,
    eval_file_bytes,
    model_file_name,
    write_artifacts,
)
from edgeq.host.preprocess import ModelInput, Preprocessing, class_names_for, prepare_data
from edgeq.host.quantize import (
    MANIFEST_SCHEMA,
    classifier_input,
    model_entry,
)
from edgeq.host.tflite_file import TfliteFileError, full_integer_problems, parse_tflite

__all__ = ["PairImportError", "import_pair"]

PathLike = Union[str, "os.PathLike[str]", Path]


class PairImportError(EdgeqError):
    """A .tflite pair that cannot become an artifacts directory."""


def _read(path: Path, kind: str) -> bytes:
    if path.is_dir() or path.suffix != ".tflite":
        raise PairImportError(f"the {kind} model {path} is not a .tflite file",
                           hint="edgeq import FLOAT32.tflite INT8.tflite --out DIR")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PairImportError(f"the {kind} model {path} does not exist",
                           hint="check the path") from None
    except OSError as exc:
        raise PairImportError(f"the {kind} model {path} cannot be read ({exc.strerror})",
                           hint="check the file's permissions") from None
    try:
        parse_tflite(data, path)
    except TfliteFileError as exc:
        raise PairImportError(f"the {kind} model {path.name} is not a TFLite flatbuffer "
                           f"({exc.message})", hint="pass the .tflite files themselves") from None
    return data


def _check_pair(float_in: ModelInput, int8_in: ModelInput, float_dtype: str) -> None:
    if float_dtype != "FLOAT32":
        raise PairImportError(
            f"{float_in.name} takes {float_dtype.lower()} input, not float32",
            hint="the float32 model comes first: edgeq import FLOAT32.tflite INT8.tflite")
    if (float_in.sample_shape, float_in.num_classes) != (int8_in.sample_shape,
                                                        int8_in.num_classes):
        raise PairImportError(
            f"{float_in.name} takes {list(float_in.sample_shape)} and gives "
            f"{float_in.num_classes} classes, {int8_in.name} takes "
            f"{list(int8_in.sample_shape)} and gives {int8_in.num_classes}",
            hint="import the two conversions of the same model")


def _check_loads(path: Path, data: bytes) -> None:
    """The file (as read: its sha256 is checked again) loads and allocates in the LiteRT
    runtime the board uses."""
    from edgeq.device.runtime import load_model

    try:
        load_model(path, sha256=sha256_bytes(data))
    except EdgeqError as exc:
        raise PairImportError(f"{path.name} does not load in the TFLite runtime: {exc.message}",
                           hint=exc.hint or "check the file") from None


def _default_name(path: Path) -> str:
    """The float32 file's stem without _float32; its folder's name when that leaves "model"."""
    stem = path.stem.removesuffix("_float32").removesuffix("-float32")
    return stem if stem != "model" else path.resolve().parent.name


def import_pair(
    float32_path: PathLike,
    int8_path: PathLike,
    *,
    out_dir: PathLike,
    eval_file: Optional[PathLike] = None,
    preprocessing: Optional[Preprocessing] = None,
    data_dir: Optional[PathLike] = None,
    eval_limit: Optional[int] = None,
    model_name: Optional[str] = None,
) -> dict[str, Any]:
    """Make `out_dir` a normal artifacts directory from the pair; returns the manifest.

    `eval_file` is any form edgeq.host.data.load_dataset takes (None: the built-in MNIST
    test set, only for a model that takes it), mapped by `preprocessing` (raw pixels by
    default) and cut to the first `eval_limit` samples.
    """
    fp, ip = Path(float32_path), Path(int8_path)
    if eval_limit is not None and eval_limit < 1:
        raise PairImportError(f"eval limit must be at least 1, got {eval_limit}",
                           hint="pass a positive --eval-limit or leave it out")
    float_bytes, int8_bytes = _read(fp, "float32"), _read(ip, "int8")
    f32, i8 = parse_tflite(float_bytes, fp), parse_tflite(int8_bytes, ip)
    float_in, int8_in = classifier_input(f32, fp.name), classifier_input(i8, ip.name)
    _check_pair(float_in, int8_in, f32.tensors[f32.inputs[0]].dtype)
    _check_loads(fp, float_bytes)
    _check_loads(ip, int8_bytes)
    pre = preprocessing or Preprocessing()
    evalset = prepare_data(eval_file, float_in, pre, purpose="evaluation", data_dir=data_dir,
                           limit=eval_limit)
    eval_bytes = eval_file_bytes(evalset, float_in.num_classes)
    problems = full_integer_problems(i8)
    out = Path(out_dir)
    float_dst, int8_dst = out / model_file_name("float32"), out / model_file_name("int8")
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "model_name": model_name or _default_name(fp),
        "created_utc": utc_now(),
        "tensorflow_version": None,
        "made_by": "import",
        "converter": None,
        "calibration": None,
        "eval_data": eval_data_entry(evalset, eval_bytes),
        "preprocessing": pre.to_dict(),
        "num_classes": float_in.num_classes,
        "class_names": class_names_for(evalset.data, float_in.num_classes),
        "full_integer": {"ok": not problems, "problems": problems},
        "source_model": {"file": fp.name, "sha256": sha256_bytes(float_bytes),
                         "format": "tflite"},
        "imported_from": {"float32": str(fp.resolve()), "int8": str(ip.resolve())},
        "models": {
            "float32": model_entry(float_dst, float_bytes),
            "int8": model_entry(int8_dst, int8_bytes),
        },
    }
    write_artifacts(out, {float_dst.name: float_bytes, int8_dst.name: int8_bytes,
                          EVAL_FILE: eval_bytes}, manifest)
    return manifest
