"""The one reader of the TFLite flatbuffer: tensors, quantization parameters, ops, buffers.

- `read_tflite(path)` / `parse_tflite(data, path)` parse the flatbuffer (the schema module LiteRT
  and TensorFlow ship) into a `TfliteFile`: op codes with versions, tensors with their scales
  and zero points, operators, constant buffers, metadata such as `min_runtime_version`.
- `full_integer_problems(f)` says why a model is not full-integer int8 (quantize's check).
- `weight_tensors(path)` gives the constant int8 weight tensors as numpy arrays with their
  scales, zero points and quantized dimension.

Min-Max formulas (the paper's): an int8 tensor with scale s and zero point z represents
real values in [real_min, real_max] = [(qmin - z) * s, (qmax - z) * s] with qmin=-128, qmax=127.

Used by edgeq.host.quantize (its checks) and edgeq.host.inspection (the analysis); it imports
neither. Imports: standard library, numpy, the flatbuffers schema from ai_edge_litert (or
TensorFlow), edgeq.device.errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from edgeq.device.errors import EdgeqError

PathLike = Union[str, "os.PathLike[str]", Path]

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


class TfliteFileError(EdgeqError):
    """A .tflite file that cannot be read or parsed."""


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on the installed runtime
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError:
            raise TfliteFileError(
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
    """Parse a .tflite file's flatbuffer; TfliteFileError if it is not one."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise TfliteFileError(
            f"{p} does not exist", hint="check the path to the .tflite file"
        ) from None
    except OSError as exc:
        raise TfliteFileError(
            f"{p}: cannot be read ({exc.strerror})", hint="check the file's permissions"
        ) from None
    return parse_tflite(raw, p)


def parse_tflite(raw: bytes, path: PathLike = "<bytes>") -> TfliteFile:
    """Parse the bytes of a .tflite file; `path` names it in errors and in the result."""
    p = Path(path)
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise TfliteFileError(
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
            raise TfliteFileError(
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
    except TfliteFileError:
        raise
    except Exception as exc:  # flatbuffers raises assorted errors on damaged files
        raise TfliteFileError(
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



def declared_exception_problems(tf_file: TfliteFile, *, float_layers: Sequence[str] = (),
                                activations: str = "int8") -> list[str]:
    """Why a mixed-precision file is not exactly what was declared (empty list if it is).

    Declared: the ops producing the tensors named in `float_layers` run in float (their
    outputs are float32, QUANTIZE/DEQUANTIZE ops at their borders), and activations are
    `activations` ("int8", or "int16" for 16x8: int16 activations, int8 weights, int64 or
    int32 biases). Everything else must be as full_integer_problems wants it: the model's
    input and output of the activation type, no other float tensor, no other DEQUANTIZE.
    """
    act = {"int8": "INT8", "int16": "INT16"}.get(activations)
    if act is None:
        return [f"unknown activation type {activations!r}"]
    problems: list[str] = []
    for kind, indices in (("input", tf_file.inputs), ("output", tf_file.outputs)):
        for i in indices:
            t = tf_file.tensors[i]
            if t.dtype != act:
                problems.append(f"{kind} {t.name!r} is {t.dtype.lower()}, not {act.lower()}")
    by_name = {t.name: t for t in tf_file.tensors}
    declared = set(float_layers)
    allowed: set[int] = set()
    float_ops: set[int] = set()
    for name in float_layers:
        t = by_name.get(name)
        if t is None:
            problems.append(f"declared float layer {name!r} is not in the file")
        elif t.dtype != "FLOAT32":
            problems.append(f"declared float layer {name!r} is {t.dtype.lower()}, not float32")
    for op in tf_file.operators:
        if any(tf_file.tensors[o].name in declared for o in op.outputs if o >= 0):
            float_ops.add(op.index)
            allowed.update(i for i in (*op.inputs, *op.outputs) if i >= 0)
    for op in tf_file.operators:  # the borders: DEQUANTIZE into, QUANTIZE out of float ops
        if op.name in ("DEQUANTIZE", "QUANTIZE") and any(i in allowed for i in
                                                          (*op.inputs, *op.outputs)):
            float_ops.add(op.index)
            allowed.update(i for i in (*op.inputs, *op.outputs) if i >= 0)
    stray = [t for t in tf_file.tensors if t.dtype in FLOAT_TYPES and t.index not in allowed]
    if stray:
        names = ", ".join(repr(t.name) for t in stray[:3])
        problems.append(f"{len(stray)} undeclared float tensor(s) (e.g. {names})")
    for op in tf_file.operators:
        if op.name == "DEQUANTIZE" and op.index not in float_ops:
            problems.append(f"op {op.index} is an undeclared DEQUANTIZE")
    if act == "INT16":
        wrong = [t for t in tf_file.tensors if not t.is_constant and t.index not in allowed
                 and t.dtype not in ("INT16", "INT32", "INT64") and t.scales]
        if wrong:
            problems.append(f"{len(wrong)} activation(s) are not int16 (e.g. {wrong[0].name!r} "
                            f"is {wrong[0].dtype.lower()})")
    return problems


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
