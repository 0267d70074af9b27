"""The TFLite runtime adapter: find a runtime, load a model safely, run predictions.

Runtimes, in order of preference: ai-edge-litert (`ai_edge_litert.interpreter`),
tflite-runtime (`tflite_runtime.interpreter`), and TensorFlow's `tf.lite.Interpreter`
as the last resort on a development host (imported lazily, only then).
XNNPACK is the default delegate of these runtimes; `xnnpack=False` selects the op
resolver BUILTIN_WITHOUT_DEFAULT_DELEGATES so nothing is delegated.
Files are checked (size, flatbuffer identifier "TFL3") before the interpreter sees them.
Imports: standard library, numpy, a TFLite runtime (lazily), edgeq.device (errors, fileutil,
settings.RUNTIME_NAMES).
"""
from __future__ import annotations

import importlib
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Union

import numpy as np
from edgeq.device.errors import InputShapeError, ModelLoadError, RuntimeMissingError, UsageError
from edgeq.device.fileutil import sha256_file
from edgeq.device.settings import RUNTIME_NAMES

logger = logging.getLogger(__name__)

_WHERE: dict[str, tuple[str, str]] = {
    "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow", "tensorflow"),
}
#: runtime name -> (import path of the interpreter module, pip name), in the order of
#: preference of settings.RUNTIME_NAMES (the names a `runtime` setting may take)
RUNTIMES: dict[str, tuple[str, str]] = {name: _WHERE[name] for name in RUNTIME_NAMES}

#: the smallest possible TFLite flatbuffer: root offset (4) + file identifier (4) + a table
MIN_MODEL_BYTES = 16
TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class RuntimeInfo:
    """Which runtime runs the model, and its version."""

    name: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor; scale 0.0 / zero_point 0 for float tensors."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


# ---------------------------------------------------------------------------------------------
# runtime discovery
# ---------------------------------------------------------------------------------------------


def _dist_version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _import_runtime(name: str) -> tuple[Any, Any, str]:
    """(Interpreter class, OpResolverType enum or None, version) of runtime `name`.

    Raises ImportError when the runtime is not installed.
    """
    module_path, dist = RUNTIMES[name]
    if name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        interp_cls = tf.lite.Interpreter
        resolver = getattr(tf.lite.experimental, "OpResolverType", None)
        version = str(getattr(tf, "__version__", None) or _dist_version("tensorflow") or "?")
        return interp_cls, resolver, version
    mod: ModuleType = importlib.import_module(module_path)
    interp_cls = mod.Interpreter
    resolver = getattr(mod, "OpResolverType", None)
    found = _dist_version(dist)
    if found is None:
        pkg = importlib.import_module(module_path.split(".")[0])
        found = str(getattr(pkg, "__version__", "?"))
    return interp_cls, resolver, found


def _missing_runtime_error(tried: list[str], preferred: Optional[str]) -> RuntimeMissingError:
    if preferred:
        return RuntimeMissingError(
            f"the TFLite runtime {preferred!r} is not installed",
            hint=f"pip install {RUNTIMES[preferred][1]} (or leave out --runtime to use any)",
        )
    return RuntimeMissingError(
        f"no TFLite runtime is installed (tried {', '.join(tried)})",
        hint="pip install ai-edge-litert (or tflite-runtime on Python <= 3.11 with numpy < 2)",
    )


def _check_runtime_name(preferred: Optional[str]) -> None:
    if preferred is not None and preferred not in RUNTIMES:
        raise UsageError(
            f"unknown runtime {preferred!r}",
            hint=f"choose one of: {', '.join(RUNTIMES)}",
        )


def _resolve(preferred: Optional[str]) -> tuple[RuntimeInfo, Any, Any]:
    _check_runtime_name(preferred)
    names = [preferred] if preferred else list(RUNTIMES)
    tried: list[str] = []
    for name in names:
        try:
            interp_cls, resolver, version = _import_runtime(name)
        except ImportError as exc:
            logger.debug("runtime %s not importable: %s", name, exc)
            tried.append(name)
            continue
        return RuntimeInfo(name, version), interp_cls, resolver
    raise _missing_runtime_error(tried, preferred)


def detect_runtime(preferred: Optional[str] = None) -> RuntimeInfo:
    """The runtime that `load_model` would use (ai-edge-litert > tflite-runtime > tensorflow)."""
    return _resolve(preferred)[0]


# ---------------------------------------------------------------------------------------------
# file checks
# ---------------------------------------------------------------------------------------------


def check_tflite_file(path: Union[str, os.PathLike]) -> int:
    """Check that `path` looks like a TFLite flatbuffer; return its size in bytes.

    Catches the common garbage (missing, empty, truncated header, wrong identifier, root
    offset outside the file) in Python so it never reaches the interpreter's C++ code.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise ModelLoadError(f"model file {p} does not exist",
                             hint="check the path, or deploy the model again") from None
    except IsADirectoryError:
        raise ModelLoadError(f"model path {p} is a directory",
                             hint="pass the .tflite file itself") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {p}: {exc.strerror or exc}",
                             hint="check the file's permissions") from None
    if size < MIN_MODEL_BYTES:
        raise ModelLoadError(
            f"{p.name} is not a TFLite model ({size} bytes, too small)",
            hint="the file is empty or truncated; copy or convert it again",
        )
    if head[4:8] != TFLITE_IDENTIFIER:
        raise ModelLoadError(
            f"{p.name} is not a TFLite model (no 'TFL3' flatbuffer identifier)",
            hint="pass a .tflite file written by the TFLite converter",
        )
    root_offset = int.from_bytes(head[0:4], "little")
    if root_offset < 8 or root_offset >= size:
        raise ModelLoadError(
            f"{p.name} is a corrupt TFLite model (root table offset {root_offset} "
            f"outside the {size}-byte file)",
            hint="the file is truncated or damaged; copy or convert it again",
        )
    return size


# ---------------------------------------------------------------------------------------------
# the loaded model
# ---------------------------------------------------------------------------------------------


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0)) or (0.0, 0)
    sig = detail.get("shape_signature")
    shape = sig if sig is not None and len(sig) else detail["shape"]
    return TensorInfo(
        name=str(detail.get("name", "")),
        dtype=np.dtype(detail["dtype"]).name,
        shape=tuple(int(s) for s in shape),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def count_delegated_nodes(ops: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(delegated nodes, original nodes, delegate partitions) from `_get_ops_details()`.

    After a delegate is applied, the graph keeps the model's original nodes and appends one
    "DELEGATE" node per partition whose inputs/outputs are the partition's boundary tensors.
    The nodes a partition replaced are found by walking back from its outputs through the
    original nodes until its inputs: those are exactly the nodes needed to compute them.
    """
    original = [op for op in ops if op.get("op_name") != "DELEGATE"]
    delegates = [op for op in ops if op.get("op_name") == "DELEGATE"]
    producer: dict[int, dict[str, Any]] = {}
    for op in original:
        for t in op.get("outputs", []):
            producer[int(t)] = op
    taken: set[int] = set()
    for d in delegates:
        boundary = {int(t) for t in d.get("inputs", [])}
        stack = [int(t) for t in d.get("outputs", [])]
        seen_tensors: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen_tensors or t in boundary:
                continue
            seen_tensors.add(t)
            node = producer.get(t)
            if node is None:
                continue
            idx = int(node["index"])
            if idx in taken:
                continue
            taken.add(idx)
            stack.extend(int(x) for x in node.get("inputs", []) if int(x) >= 0)
    return len(taken), len(original), len(delegates)


class LoadedModel:
    """A model in an interpreter, ready (after `allocate()`) to predict.

    Attributes: path, sha256, size_bytes, runtime (RuntimeInfo), input/output (TensorInfo),
    interpreter, threads, xnnpack, op_resolver (name), xnnpack_applied, delegated_nodes,
    total_nodes, delegate_partitions, delegate_note (why the count is null, if it is),
    load_ms (file checks + interpreter construction), init_ms (allocate_tensors).
    """

    def __init__(
        self,
        *,
        path: Path,
        sha256: str,
        size_bytes: int,
        runtime: RuntimeInfo,
        interpreter: Any,
        threads: int,
        xnnpack: bool,
        op_resolver: str,
        load_ms: float,
    ) -> None:
        self.path = path
        self.sha256 = sha256
        self.size_bytes = size_bytes
        self.runtime = runtime
        self.interpreter = interpreter
        self.threads = threads
        self.xnnpack = xnnpack
        self.op_resolver = op_resolver
        self.load_ms = load_ms
        self.init_ms: Optional[float] = None
        self.allocated = False
        self.xnnpack_applied: Optional[bool] = None
        self.delegated_nodes: Optional[int] = None
        self.total_nodes: Optional[int] = None
        self.delegate_partitions: Optional[int] = None
        self.delegate_note: Optional[str] = None
        in_details = interpreter.get_input_details()
        out_details = interpreter.get_output_details()
        if len(in_details) != 1 or len(out_details) != 1:
            raise ModelLoadError(
                f"{path.name} has {len(in_details)} inputs and {len(out_details)} outputs",
                hint="edgeq benchmarks image classifiers with one input and one output",
            )
        self._in_index = int(in_details[0]["index"])
        self._out_index = int(out_details[0]["index"])
        self.input = _tensor_info(in_details[0])
        self.output = _tensor_info(out_details[0])
        self._in_dtype = np.dtype(in_details[0]["dtype"])
        self._batch = int(in_details[0]["shape"][0]) if len(in_details[0]["shape"]) else 1
        self._check_input_rank()

    # -- set-up ---------------------------------------------------------------------------

    def _check_input_rank(self) -> None:
        shape = self.input.shape
        if len(shape) < 2:
            raise InputShapeError(
                f"{self.path.name} takes input of shape {list(shape)}, not a batch of images",
                hint="edgeq benchmarks image classifiers with input (batch, H, W[, C])",
            )

    def allocate(self) -> float:
        """allocate_tensors (applies the default delegate); returns and records init_ms."""
        t0 = time.perf_counter()
        try:
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(
                f"{self.path.name} cannot be prepared by {self.runtime.name}: "
                f"{_one_line(exc)}",
                hint="the model uses ops or versions this runtime lacks; update the runtime",
            ) from None
        self.init_ms = (time.perf_counter() - t0) * 1000.0
        self.allocated = True
        self._record_delegation()
        return self.init_ms

    def _record_delegation(self) -> None:
        get_ops = getattr(self.interpreter, "_get_ops_details", None)
        if get_ops is None:
            self.delegate_note = (
                f"{self.runtime.name} {self.runtime.version} does not expose the node list "
                "(_get_ops_details), so delegated nodes cannot be counted")
            self.xnnpack_applied = None if self.xnnpack else False
            return
        try:
            ops = get_ops()
        except Exception as exc:  # the private API may change between runtime versions
            self.delegate_note = f"_get_ops_details failed: {_one_line(exc)}"
            self.xnnpack_applied = None if self.xnnpack else False
            return
        delegated, total, partitions = count_delegated_nodes(ops)
        self.delegated_nodes = delegated
        self.total_nodes = total
        self.delegate_partitions = partitions
        self.xnnpack_applied = partitions > 0

    # -- input handling -------------------------------------------------------------------

    @property
    def batch_dynamic(self) -> bool:
        """Whether the model's batch dimension may be resized (shape signature -1)."""
        return self.input.shape[0] == -1

    @property
    def batch_size(self) -> int:
        """The batch the input tensor is currently sized for."""
        return self._batch

    def sample_shape(self) -> tuple[int, ...]:
        """The input shape of one sample (without the batch dimension)."""
        return tuple(int(s) for s in self.input.shape[1:])

    def set_batch(self, n: int) -> bool:
        """Resize the input to a batch of n; False (and nothing changed) if it is fixed."""
        if n == self._batch:
            return True
        if not self.batch_dynamic:
            return False
        try:
            self.interpreter.resize_tensor_input(self._in_index, [n, *self.sample_shape()],
                                                 strict=True)
        except TypeError:  # older runtimes without `strict`
            self.interpreter.resize_tensor_input(self._in_index, [n, *self.sample_shape()])
        except (RuntimeError, ValueError) as exc:
            logger.info("cannot resize %s to batch %d: %s", self.path.name, n, exc)
            return False
        t0 = time.perf_counter()
        try:
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(
                f"{self.path.name} cannot be prepared for a batch of {n} by "
                f"{self.runtime.name}: {_one_line(exc)}",
                hint="the file is damaged, or the model's batch cannot change; convert it "
                     "again") from None
        logger.debug("re-allocated for batch %d in %.2f ms", n, (time.perf_counter() - t0) * 1e3)
        self._batch = n
        return True

    def prepare_input(self, images: np.ndarray) -> np.ndarray:
        """Evaluation images (N,H,W) or (N,H,W,C), uint8 raw pixels or float32 model-ready
        values -> the model's input dtype and shape.

        int8/uint8 inputs are quantized with the model's own scale and zero-point:
        q = clip(round(x / scale + zero_point), dtype min, dtype max).
        """
        x = np.asarray(images)
        sample = self.sample_shape()
        if x.ndim < 2:
            raise InputShapeError(
                f"input of shape {list(x.shape)} is not a batch of images",
                hint="pass images as (N, H, W) or (N, H, W, C)",
            )
        n = int(x.shape[0])
        want = (n, *sample)
        if x.shape != want:
            if x.ndim >= 1 and int(np.prod(x.shape[1:])) == int(np.prod(sample)) and all(
                s > 0 for s in sample
            ):
                x = x.reshape(want)
            else:
                raise InputShapeError(
                    f"input of shape {list(x.shape)} does not fit {self.path.name}'s input "
                    f"{list(self.input.shape)}",
                    hint="use evaluation data made for this model (edgeq quantize --eval-data)",
                )
        dt = self._in_dtype
        if dt.kind in "iu":
            scale = self.input.scale
            if scale == 0.0:
                raise InputShapeError(
                    f"{self.path.name} has an integer input without quantization parameters",
                    hint="convert the model with float or quantized (scale/zero-point) input",
                )
            info = np.iinfo(dt)
            q = np.round(x.astype(np.float32) / np.float32(scale) + self.input.zero_point)
            return np.clip(q, info.min, info.max).astype(dt)
        return x.astype(dt, copy=False)

    # -- running --------------------------------------------------------------------------

    def run_prepared(self, x: np.ndarray) -> np.ndarray:
        """set_tensor / invoke / get_tensor for one prepared batch matching the input size."""
        it = self.interpreter
        it.set_tensor(self._in_index, x)
        it.invoke()
        return it.get_tensor(self._out_index)

    @property
    def num_classes(self) -> int:
        """The number of scores the output gives per sample (the classifier's classes)."""
        dims = [int(d) for d in self.output.shape[1:]]
        return int(np.prod(dims)) if dims and all(d > 0 for d in dims) else 0

    def predict(self, images: np.ndarray, batch_size: int = 1,
                progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """Class indices (int64, N) for evaluation images: `predict_top_k` with k = 1."""
        return self.predict_top_k(images, 1, batch_size=batch_size, progress=progress)[:, 0]

    def predict_top_k(self, images: Any, k: int, batch_size: int = 1,
                      progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """The k best classes of every image (int64, (N, k)), best first.

        `images` is an array of uint8 raw pixels or float32 model-ready values, or a streamed
        evaluation set (edgeq.device.evaldata.EvalData: `len()`, `head(n)` and
        `batches(batch_size)`); either way images are prepared (reshaped, quantized) one
        batch of `batch_size` at a time, so memory stays small. Ties go to the lower class
        index, as argmax does. Falls back to the model's fixed batch size when it cannot be
        resized.
        """
        if not self.allocated:
            self.allocate()
        streamed = hasattr(images, "batches") and hasattr(images, "head")
        x = images if streamed else np.asarray(images)
        if not streamed and x.ndim < 2:
            raise InputShapeError(
                f"input of shape {list(x.shape)} is not a batch of images",
                hint="pass images as (N, H, W) or (N, H, W, C)",
            )
        n = len(x) if streamed else int(x.shape[0])
        k = max(1, int(k))
        out = np.empty((n, k), dtype=np.int64)
        if n == 0:
            return out
        self.prepare_input(x.head(1) if streamed else x[:1])  # shape errors before any resize
        bs = max(1, min(int(batch_size), n))
        if not self.set_batch(bs):
            bs = self._batch  # a fixed batch dimension
        chunks = x.batches(bs) if streamed else (x[i:i + bs] for i in range(0, n, bs))
        i = 0
        for raw in chunks:
            chunk = self.prepare_input(raw)
            m = int(chunk.shape[0])
            if m != self._batch and not self.set_batch(m):
                # fixed batch: pad the last chunk and drop the padding's answers
                pad = np.zeros((self._batch - m, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            try:
                y = self.run_prepared(chunk)
            except (RuntimeError, ValueError) as exc:
                raise ModelLoadError(
                    f"{self.path.name} fails to run in {self.runtime.name}: {_one_line(exc)}",
                    hint="the file is damaged or uses ops this runtime lacks; convert it "
                         "again or update the runtime") from None
            scores = y.reshape(y.shape[0], -1)[:m].astype(np.float64)
            if scores.shape[1] < k:
                raise InputShapeError(
                    f"{self.path.name} gives {scores.shape[1]} scores per image, fewer than "
                    f"the {k} classes asked for", hint="ask for at most as many classes")
            out[i:i + m] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            i += m
            if progress is not None:
                progress(i, n)
        return out

    def info(self) -> dict[str, Any]:
        """The `model` and `runtime` sections of an edgeq.bench/1 result."""
        return {
            "model": {
                "path": str(self.path),
                "sha256": self.sha256,
                "size_bytes": self.size_bytes,
                "input": self.input.to_dict(),
                "output": self.output.to_dict(),
            },
            "runtime": {
                "name": self.runtime.name,
                "version": self.runtime.version,
                "op_resolver": self.op_resolver,
                "xnnpack_applied": self.xnnpack_applied,
                "delegated_nodes": self.delegated_nodes,
                "total_nodes": self.total_nodes,
                "delegate_partitions": self.delegate_partitions,
                "delegate_note": self.delegate_note,
            },
        }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def open_model(
    path: Union[str, os.PathLike],
    *,
    threads: int = 1,
    xnnpack: bool = True,
    runtime: Optional[str] = None,
    sha256: Optional[str] = None,
    preserve_all_tensors: bool = False,
) -> LoadedModel:
    """Check the file and build its interpreter, without allocating tensors yet.

    `sha256` skips re-hashing when the caller already verified the file.
    `preserve_all_tensors` keeps every intermediate tensor readable after invoke (the host's
    per-layer analysis; it costs memory, so the benchmark never asks for it).
    """
    if not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a positive integer, not {threads!r}",
                         hint="use --threads 1 (the default) or the number of cores")
    p = Path(path)
    t0 = time.perf_counter()
    size = check_tflite_file(p)
    info, interp_cls, resolver = _resolve(runtime)
    digest = sha256 or sha256_file(p)
    kwargs: dict[str, Any] = {"model_path": str(p), "num_threads": threads}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if xnnpack:
        op_resolver = "AUTO"
    else:
        if resolver is None:
            raise UsageError(
                f"{info.name} {info.version} cannot run without its default delegates",
                hint="install ai-edge-litert (it has OpResolverType), or drop --no-xnnpack",
            )
        op_resolver = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it is deprecated; it is the documented last resort
            warnings.simplefilter("ignore", UserWarning)
            interpreter = interp_cls(**kwargs)
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{p.name} cannot be loaded by {info.name}: {_one_line(exc)}",
            hint="the file is corrupt or truncated; copy or convert it again",
        ) from None
    load_ms = (time.perf_counter() - t0) * 1000.0
    return LoadedModel(path=p, sha256=digest, size_bytes=size, runtime=info,
                       interpreter=interpreter, threads=threads, xnnpack=xnnpack,
                       op_resolver=op_resolver, load_ms=load_ms)


def load_model(
    path: Union[str, os.PathLike],
    *,
    threads: int = 1,
    xnnpack: bool = True,
    runtime: Optional[str] = None,
    sha256: Optional[str] = None,
    preserve_all_tensors: bool = False,
) -> LoadedModel:
    """Check, load and allocate a .tflite model; ready to `predict`."""
    model = open_model(path, threads=threads, xnnpack=xnnpack, runtime=runtime, sha256=sha256,
                       preserve_all_tensors=preserve_all_tensors)
    model.allocate()
    return model
