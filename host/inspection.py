"""Look inside a .tflite file: tensors, quantization parameters, weight ranges, outliers, and
(with the float Keras model) the per-layer quantization error.

Functions return plain JSON-able dicts so the CLI and the report can reuse them:

- `read_tflite(path)` parses the flatbuffer (the schema module LiteRT and TensorFlow ship) into
  a `TfliteFile`: op codes with versions, tensors, metadata such as `min_runtime_version`.
- `weight_tensors(path)` gives the constant int8 weight tensors as numpy arrays with their
  scales, zero points and quantized dimension.
- `inspect_model(path, float_model_path=...)` is what `edgeq inspect` shows.

Min-Max formulas (the paper's): an int8 tensor with scale s and zero point z represents
real values in [real_min, real_max] = [(qmin - z) * s, (qmax - z) * s] with qmin=-128, qmax=127.

Outlier flag: for a weight tensor (and each of its channels), `outlier_ratio` =
max|w| / P99.9(|w|) over the dequantized weights. Min-Max quantization spends its 256 levels on
[min, max]; when max|w| is more than OUTLIER_RATIO (2.0) times the 99.9th percentile, at least
99.9 % of the weights live in less than half of the grid, i.e. a handful of values cost the rest
more than one bit of resolution. `outlier` is True then.

Imports: standard library, numpy, flatbuffers schema from ai_edge_litert (or TensorFlow),
edgeq.device.errors; TensorFlow and Keras only inside `quantization_error`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgeq.device.errors import EdgeqError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]", Path]
ProgressCallback = Callable[[int, int], None]

OUTLIER_RATIO = 2.0
OUTLIER_PERCENTILE = 99.9
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "COMPLEX64", "COMPLEX128"})
_QRANGE = {
    "INT8": (-128, 127),
    "UINT8": (0, 255),
    "INT16": (-32768, 32767),
    "INT32": (-(2**31), 2**31 - 1),
    "INT4": (-8, 7),
}
_NP_DTYPES = {
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "BOOL": np.bool_,
}


class InspectError(EdgeqError):
    """A .tflite file that cannot be read or inspected."""


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on the installed runtime
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError:
            raise InspectError(
                "no TFLite flatbuffer schema available",
                hint="pip install ai-edge-litert (or tensorflow)",
            ) from None
    return schema


def _enum_names(enum_cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class TensorRecord:
    """One tensor of subgraph 0, as the flatbuffer describes it."""

    index: int
    name: str
    dtype: str
    shape: list[int]
    shape_signature: list[int]
    scales: list[float]
    zero_points: list[int]
    quantized_dimension: int
    buffer: int
    is_constant: bool
    is_variable: bool

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    def to_dict(self) -> dict[str, Any]:
        """Name, dtype, shape, scale(s), zero point(s) and the real range they imply."""
        d: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "dtype": self.dtype.lower(),
            "shape": self.shape,
            "constant": self.is_constant,
            "quantized": bool(self.scales),
            "per_channel": self.per_channel,
        }
        if not self.scales:
            d.update(scale=0.0, zero_point=0, real_min=None, real_max=None)
            return d
        qmin, qmax = _QRANGE.get(self.dtype, (None, None))
        real_min = (
            [(qmin - z) * s for s, z in zip(self.scales, self.zero_points)]
            if qmin is not None
            else None
        )
        real_max = (
            [(qmax - z) * s for s, z in zip(self.scales, self.zero_points)]
            if qmax is not None
            else None
        )
        if self.per_channel:
            d.update(
                quantized_dimension=self.quantized_dimension,
                channels=len(self.scales),
                scale=self.scales,
                zero_point=self.zero_points,
                scale_min=min(self.scales),
                scale_max=max(self.scales),
                real_min=real_min,
                real_max=real_max,
            )
        else:
            d.update(
                scale=self.scales[0],
                zero_point=self.zero_points[0],
                real_min=real_min[0] if real_min else None,
                real_max=real_max[0] if real_max else None,
            )
        return d

    def tensor_info(self) -> dict[str, Any]:
        """The manifest's TENSOR form (docs/SCHEMA.md): scale 0.0 / zero_point 0 for float."""
        return {
            "name": self.name,
            "dtype": self.dtype.lower(),
            "shape": self.shape,
            "scale": float(self.scales[0]) if len(self.scales) == 1 else 0.0,
            "zero_point": int(self.zero_points[0]) if len(self.zero_points) == 1 else 0,
        }


@dataclass
class OperatorRecord:
    index: int
    name: str
    version: int
    inputs: list[int]
    outputs: list[int]


@dataclass
class TfliteFile:
    """The parts of a .tflite flatbuffer edgeq needs (subgraph 0)."""

    path: Path
    size_bytes: int
    schema_version: int
    op_codes: list[dict[str, Any]]
    operators: list[OperatorRecord]
    tensors: list[TensorRecord]
    inputs: list[int]
    outputs: list[int]
    metadata: dict[str, bytes]
    subgraphs: int
    _raw: bytes = field(repr=False, default=b"")
    _model: Any = field(repr=False, default=None)

    @property
    def min_runtime_version(self) -> Optional[str]:
        raw = self.metadata.get("min_runtime_version")
        if raw is None:
            return None
        return raw.split(b"\x00", 1)[0].decode("ascii", "replace") or None

    def ops(self) -> list[dict[str, Any]]:
        """The op list of the manifest: [{"name", "version"}] per distinct op code."""
        return [{"name": c["name"], "version": c["version"]} for c in self.op_codes]

    def buffer_array(self, tensor: TensorRecord) -> Optional[np.ndarray]:
        """A constant tensor's values as a numpy array (None for non-constant tensors)."""
        data = self._buffer_bytes(tensor.buffer)
        if data is None:
            return None
        dtype = _NP_DTYPES.get(tensor.dtype)
        if dtype is None:
            return None
        arr = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"))
        try:
            return arr.reshape(tensor.shape) if tensor.shape else arr.reshape(())
        except ValueError:
            return arr

    def _buffer_bytes(self, index: int) -> Optional[bytes]:
        if index <= 0 or self._model is None or index >= self._model.BuffersLength():
            return None
        buf = self._model.Buffers(index)
        if buf.DataLength() > 0:
            return buf.DataAsNumpy().tobytes()
        offset, size = int(buf.Offset()), int(buf.Size())
        if offset > 1 and size > 0:
            return self._raw[offset : offset + size]
        return None


def read_tflite(path: PathLike) -> TfliteFile:
    """Parse a .tflite file's flatbuffer; InspectError if it is not one."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InspectError(
            f"{p} does not exist", hint="check the path to the .tflite file"
        ) from None
    except OSError as exc:
        raise InspectError(
            f"{p}: cannot be read ({exc.strerror})", hint="check the file's permissions"
        ) from None
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise InspectError(
            f"{p} is not a TFLite flatbuffer (no TFL3 identifier)",
            hint="pass a .tflite file written by edgeq quantize or the TFLite converter",
        )
    schema = _schema()
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    try:
        model = schema.Model.GetRootAs(raw, 0)
        op_codes: list[dict[str, Any]] = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            name = op_names.get(code, f"BUILTIN_{code}")
            if name == "CUSTOM" and oc.CustomCode():
                name = "CUSTOM:" + oc.CustomCode().decode("utf-8", "replace")
            op_codes.append({"name": name, "version": int(oc.Version()), "builtin_code": code})
        if model.SubgraphsLength() < 1:
            raise InspectError(
                f"{p} has no subgraph", hint="the file is damaged; convert the model again"
            )
        sg = model.Subgraphs(0)
        tensors = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            q = t.Quantization()
            scales = (
                [float(s) for s in q.ScaleAsNumpy()] if q is not None and q.ScaleLength() else []
            )
            zps = (
                [int(z) for z in q.ZeroPointAsNumpy()]
                if q is not None and q.ZeroPointLength()
                else []
            )
            buf_index = int(t.Buffer())
            tensors.append(
                TensorRecord(
                    index=i,
                    name=(t.Name() or b"").decode("utf-8", "replace"),
                    dtype=type_names.get(int(t.Type()), f"TYPE_{t.Type()}"),
                    shape=[int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else [],
                    shape_signature=[int(d) for d in t.ShapeSignatureAsNumpy()]
                    if t.ShapeSignatureLength()
                    else [],
                    scales=scales,
                    zero_points=zps if zps else [0] * len(scales),
                    quantized_dimension=int(q.QuantizedDimension()) if q is not None else 0,
                    buffer=buf_index,
                    is_constant=False,
                    is_variable=bool(t.IsVariable()),
                )
            )
        operators = []
        for i in range(sg.OperatorsLength()):
            o = sg.Operators(i)
            opcode = op_codes[int(o.OpcodeIndex())]
            operators.append(
                OperatorRecord(
                    index=i,
                    name=opcode["name"],
                    version=opcode["version"],
                    inputs=[int(x) for x in o.InputsAsNumpy()] if o.InputsLength() else [],
                    outputs=[int(x) for x in o.OutputsAsNumpy()] if o.OutputsLength() else [],
                )
            )
        metadata: dict[str, bytes] = {}
        for i in range(model.MetadataLength()):
            md = model.Metadata(i)
            name = (md.Name() or b"").decode("utf-8", "replace")
            b = (
                model.Buffers(int(md.Buffer()))
                if int(md.Buffer()) < model.BuffersLength()
                else None
            )
            metadata[name] = b.DataAsNumpy().tobytes() if b is not None and b.DataLength() else b""
        tf_file = TfliteFile(
            path=p,
            size_bytes=len(raw),
            schema_version=int(model.Version()),
            op_codes=op_codes,
            operators=operators,
            tensors=tensors,
            inputs=[int(x) for x in sg.InputsAsNumpy()] if sg.InputsLength() else [],
            outputs=[int(x) for x in sg.OutputsAsNumpy()] if sg.OutputsLength() else [],
            metadata=metadata,
            subgraphs=int(model.SubgraphsLength()),
            _raw=raw,
            _model=model,
        )
    except InspectError:
        raise
    except Exception as exc:  # flatbuffers raises assorted errors on damaged files
        raise InspectError(
            f"{p}: damaged TFLite flatbuffer ({type(exc).__name__}: {exc})",
            hint="convert the model again",
        ) from None
    for t in tf_file.tensors:
        t.is_constant = tf_file._buffer_bytes(t.buffer) is not None
    return tf_file


def full_integer_problems(tf_file: TfliteFile) -> list[str]:
    """Why a model is not full-integer int8 (empty list if it is).

    Full-integer here means: int8 input and output, no float tensor anywhere in the graph
    (so no op can compute in float), and no DEQUANTIZE op. int32 tensors (biases, shapes)
    are integer and allowed.
    """
    problems = []
    for kind, indices in (("input", tf_file.inputs), ("output", tf_file.outputs)):
        for i in indices:
            t = tf_file.tensors[i]
            if t.dtype != "INT8":
                problems.append(f"{kind} {t.name!r} is {t.dtype.lower()}, not int8")
    floats = [t for t in tf_file.tensors if t.dtype in FLOAT_TYPES]
    if floats:
        names = ", ".join(repr(t.name) for t in floats[:3])
        problems.append(f"{len(floats)} float tensor(s) in the graph (e.g. {names})")
    for op in tf_file.operators:
        if op.name == "DEQUANTIZE":
            problems.append(f"op {op.index} is DEQUANTIZE")
    return problems


# ---------------------------------------------------------------------------------------------
# weights


@dataclass
class WeightTensor:
    """A constant int8 weight tensor (conv filter, fully-connected matrix) and its quantization."""

    name: str
    op: str
    index: int
    values: np.ndarray  # int8, the stored values
    scales: np.ndarray  # float32, one per channel (or one)
    zero_points: np.ndarray  # int64, same length as scales
    quantized_dimension: int

    @property
    def channel_axis(self) -> int:
        """Axis of the output channels (the quantized dimension, 0 for per-tensor weights)."""
        return self.quantized_dimension if len(self.scales) > 1 else 0

    def dequantized(self) -> np.ndarray:
        """Real values: (q - zero_point) * scale, broadcast along the quantized dimension."""
        q = self.values.astype(np.float32)
        if len(self.scales) == 1:
            return (q - float(self.zero_points[0])) * float(self.scales[0])
        shape = [1] * q.ndim
        shape[self.quantized_dimension] = -1
        return (q - self.zero_points.reshape(shape).astype(np.float32)) * self.scales.reshape(shape)


_WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}


def weight_tensors(
    tflite_path: PathLike, tf_file: Optional[TfliteFile] = None
) -> list[WeightTensor]:
    """The constant int8 weight tensors of the model, in graph order."""
    f = tf_file if tf_file is not None else read_tflite(tflite_path)
    out: list[WeightTensor] = []
    seen: set[int] = set()
    for op in f.operators:
        pos = _WEIGHT_INPUT.get(op.name)
        if pos is None or len(op.inputs) <= pos or op.inputs[pos] < 0:
            continue
        t = f.tensors[op.inputs[pos]]
        if t.index in seen or t.dtype != "INT8" or not t.is_constant or not t.scales:
            continue
        values = f.buffer_array(t)
        if values is None:
            continue
        seen.add(t.index)
        out.append(
            WeightTensor(
                name=t.name,
                op=op.name,
                index=t.index,
                values=np.array(values, dtype=np.int8),
                scales=np.asarray(t.scales, dtype=np.float32),
                zero_points=np.asarray(t.zero_points, dtype=np.int64),
                quantized_dimension=t.quantized_dimension,
            )
        )
    return out


def _outlier_ratio(abs_values: np.ndarray) -> float:
    if abs_values.size == 0:
        return 0.0
    p = float(np.percentile(abs_values, OUTLIER_PERCENTILE))
    m = float(abs_values.max())
    if p <= 0.0:
        return float("inf") if m > 0 else 0.0
    return m / p


def weight_report(w: WeightTensor) -> dict[str, Any]:
    """Per-tensor and per-channel ranges of the dequantized weights, with the outlier flag."""
    real = w.dequantized()
    axis = w.channel_axis
    moved = np.moveaxis(real, axis, 0).reshape(real.shape[axis], -1)
    q_moved = np.moveaxis(w.values, axis, 0).reshape(real.shape[axis], -1)
    channels = []
    for c in range(moved.shape[0]):
        vals = moved[c]
        ratio = _outlier_ratio(np.abs(vals))
        q_abs = np.abs(q_moved[c].astype(np.int32))
        channels.append(
            {
                "channel": c,
                "min": float(vals.min()),
                "max": float(vals.max()),
                "abs_max": float(np.abs(vals).max()),
                "levels_used": int(np.unique(q_moved[c]).size),
                "q_abs_max": int(q_abs.max()),
                "outlier_ratio": _finite(ratio),
                "outlier": bool(ratio > OUTLIER_RATIO),
            }
        )
    ratio = _outlier_ratio(np.abs(real).ravel())
    return {
        "name": w.name,
        "op": w.op,
        "index": w.index,
        "shape": list(w.values.shape),
        "per_channel": len(w.scales) > 1,
        "channel_axis": axis,
        "min": float(real.min()),
        "max": float(real.max()),
        "mean": float(real.mean()),
        "std": float(real.std()),
        "outlier_ratio": _finite(ratio),
        "outlier": bool(ratio > OUTLIER_RATIO),
        "outlier_channels": sum(1 for c in channels if c["outlier"]),
        "channels": channels,
    }


def _finite(x: float) -> Optional[float]:
    return float(x) if np.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
# the whole inspection


def inspect_model(
    tflite_path: PathLike,
    *,
    float_model_path: Optional[PathLike] = None,
    calibration_size: int = 100,
    seed: int = 0,
    data_dir: Optional[PathLike] = None,
    calibration_file: Optional[PathLike] = None,
    per_channel: Optional[bool] = None,
    progress: Optional[ProgressCallback] = None,
) -> dict[str, Any]:
    """Everything `edgeq inspect` shows, as a JSON-able dict.

    Keys: file, size_bytes, min_runtime_version, ops, full_integer (+ problems), inputs,
    outputs, tensors (per tensor: dtype, shape, scale, zero_point, real_min, real_max),
    weights (per weight tensor: ranges, per-channel ranges, outlier flag), outlier_rule, and
    `layer_errors` (None unless `float_model_path` is given): the per-layer quantization error
    of re-quantizing the float model with the same settings, from TensorFlow's
    QuantizationDebugger on `calibration_size` seeded training images (or `calibration_file`).
    """
    f = read_tflite(tflite_path)
    weights = [weight_report(w) for w in weight_tensors(tflite_path, f)]
    problems = full_integer_problems(f)
    result: dict[str, Any] = {
        "file": str(f.path),
        "size_bytes": f.size_bytes,
        "min_runtime_version": f.min_runtime_version,
        "ops": f.ops(),
        "full_integer": not problems,
        "full_integer_problems": problems,
        "inputs": [f.tensors[i].tensor_info() for i in f.inputs],
        "outputs": [f.tensors[i].tensor_info() for i in f.outputs],
        "tensors": [t.to_dict() for t in f.tensors],
        "weights": weights,
        "outlier_rule": (
            f"max|w| > {OUTLIER_RATIO:g} x P{OUTLIER_PERCENTILE:g}(|w|) of the "
            "dequantized weights (per tensor and per channel)"
        ),
        "layer_errors": None,
    }
    if float_model_path is not None:
        if per_channel is None:
            # same granularity as the file: per-channel if any weight tensor has several scales
            per_channel = any(w["per_channel"] for w in weights) or not weights
        result["layer_errors"] = quantization_error(
            float_model_path,
            calibration_size=calibration_size,
            seed=seed,
            data_dir=data_dir,
            calibration_file=calibration_file,
            per_channel=per_channel,
            progress=progress,
        )
    return result


def quantization_error(
    float_model_path: PathLike,
    *,
    calibration_size: int = 100,
    seed: int = 0,
    data_dir: Optional[PathLike] = None,
    calibration_file: Optional[PathLike] = None,
    per_channel: bool = True,
    progress: Optional[ProgressCallback] = None,
) -> dict[str, Any]:
    """Per-layer quantization error of the float Keras model, via tf.lite QuantizationDebugger.

    For every quantized layer output the debugger runs the float and the quantized op on the
    same inputs and compares them. Per layer (op, tensor): num_elements, stddev, mean_error,
    max_abs_error, mean_squared_error, rmse, scale, zero_point and rmse_per_scale (rmse / scale:
    ~0.29 = 1/sqrt(12) is pure rounding error; much larger means clipping or outliers).
    """
    import tensorflow as tf
    from edgeq.host.quantize import build_int8_converter, calibration_images, load_keras_model

    model = load_keras_model(Path(float_model_path))
    images, source = calibration_images(
        model,
        size=calibration_size,
        seed=seed,
        data_dir=data_dir,
        calibration_file=calibration_file,
    )
    n = len(images)

    def dataset() -> Any:
        for i in range(n):
            if progress is not None:
                progress(i + 1, n)
            yield [images[i : i + 1]]

    converter = build_int8_converter(model, dataset, per_channel=per_channel)
    import contextlib
    import csv
    import io
    import warnings

    try:
        # Keras' export prints to stdout; the debugger's own tf.lite.Interpreter warns it is old.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=dataset
            )
            debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    except Exception as exc:
        raise InspectError(
            f"QuantizationDebugger failed on {float_model_path}: {type(exc).__name__}: {exc}",
            hint="check that the float model matches the .tflite file and the calibration data",
        ) from None
    layers = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        layer: dict[str, Any] = {
            "op": row.get("op_name", ""),
            "tensor": row.get("tensor_name", ""),
            "tensor_index": int(float(row["tensor_idx"])) if row.get("tensor_idx") else None,
        }
        for key in (
            "scale",
            "zero_point",
            "num_elements",
            "stddev",
            "mean_error",
            "max_abs_error",
            "mean_squared_error",
        ):
            if key in row:
                layer[key] = _json_number(row[key])
        if isinstance(layer.get("zero_point"), float):
            layer["zero_point"] = int(layer["zero_point"])
        mse, scale = layer.get("mean_squared_error"), layer.get("scale")
        layer["rmse"] = float(np.sqrt(mse)) if isinstance(mse, float) else None
        layer["rmse_per_scale"] = (
            layer["rmse"] / scale
            if layer["rmse"] is not None and isinstance(scale, float) and scale > 0
            else None
        )
        layers.append(layer)
    return {
        "calibration": {"size": n, "seed": seed, "source": source, "per_channel": per_channel},
        "layers": layers,
    }


def _json_number(v: Any) -> Any:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return v
    return x if np.isfinite(x) else None
