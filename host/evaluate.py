"""Evaluate the float32 and int8 .tflite files of an artifacts directory on the host.

Both models run with LiteRT through the same runtime adapter the board uses
(`edgeq.device.runtime`), on the artifacts' `eval.npz` (checked against the manifest's sha256)
or on the MNIST test set. The result (`"schema": "edgeq.evaluate/1"`) has, per model, file,
size_bytes, size_kb, top1, correct, count, predictions and eval_s; and the comparison:
`agreement` (fraction of images where both predict the same class), `drop_points`
(float32 top-1 minus int8 top-1, in percentage points) and `size_ratio` (int8 / float32 bytes).

Imports: standard library, numpy, edgeq.device, edgeq.host.{data,quantize}; no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgeq.device.errors import EdgeqError
from edgeq.host.data import load_mnist

logger = logging.getLogger(__name__)

EVALUATE_SCHEMA = "edgeq.evaluate/1"
MODEL_KINDS = ("float32", "int8")
HOST_BATCH_SIZE = 100

ProgressCallback = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]", Path]


class EvaluateError(EdgeqError):
    """The artifacts cannot be evaluated (missing files, mismatched data)."""


def _load_manifest(directory: Path) -> Optional[dict[str, Any]]:
    path = directory / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluateError(
            f"{path}: not valid JSON ({exc})", hint="run `edgeq quantize DIR` again to rewrite it"
        ) from None
    return manifest if isinstance(manifest, dict) else None


def evaluation_data(
    artifacts_dir: Path,
    *,
    limit: Optional[int] = None,
    data_dir: Optional[PathLike] = None,
    manifest: Optional[dict[str, Any]] = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(images uint8, labels, description): eval.npz unless `data_dir` asks for MNIST test."""
    eval_path = artifacts_dir / "eval.npz"
    if data_dir is None and eval_path.is_file():
        from edgeq.device.evaldata import load_eval_data

        raw = eval_path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        expected = ((manifest or {}).get("eval_data") or {}).get("sha256")
        if expected and expected != digest:
            raise EvaluateError(
                f"{eval_path}: sha256 does not match manifest.json",
                hint="run `edgeq quantize DIR` again to rewrite the artifacts",
            )
        images, labels = load_eval_data(eval_path)
        info: dict[str, Any] = {"source": "eval.npz", "sha256": digest}
    else:
        images, labels = load_mnist("test", data_dir)
        info = {"source": "mnist-test"}
    if limit is not None:
        if limit < 1:
            raise EvaluateError(
                f"limit must be at least 1, got {limit}", hint="pass a positive --limit"
            )
        images, labels = images[:limit], labels[:limit]
    info["count"] = len(labels)
    return images, np.asarray(labels, dtype=np.int64), info


def evaluate(
    artifacts_dir: PathLike,
    *,
    limit: Optional[int] = None,
    threads: int = 1,
    data_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    batch_size: int = HOST_BATCH_SIZE,
    xnnpack: bool = True,
    runtime: Optional[str] = None,
) -> dict[str, Any]:
    """Run both models of `artifacts_dir` on the evaluation images; see the module docstring.

    `progress(done, total)` counts images over both models (total = 2 x count).
    """
    from edgeq.device.runtime import load_model

    directory = Path(artifacts_dir)
    if not directory.is_dir():
        raise EvaluateError(
            f"artifacts directory {directory} does not exist",
            hint="run `edgeq train --out DIR` and `edgeq quantize DIR` first",
        )
    manifest = _load_manifest(directory)
    files = {}
    for kind in MODEL_KINDS:
        name = ((manifest or {}).get("models", {}).get(kind) or {}).get(
            "file"
        ) or f"model_{kind}.tflite"
        path = directory / name
        if not path.is_file():
            raise EvaluateError(f"{path} does not exist", hint="run `edgeq quantize DIR` first")
        files[kind] = path
    images, labels, data_info = evaluation_data(
        directory, limit=limit, data_dir=data_dir, manifest=manifest
    )
    n = len(labels)

    results: dict[str, Any] = {}
    runtime_info: dict[str, Any] = {}
    for k, kind in enumerate(MODEL_KINDS):
        model = load_model(files[kind], threads=threads, xnnpack=xnnpack, runtime=runtime)
        runtime_info = {
            "name": model.runtime.name,
            "version": model.runtime.version,
            "xnnpack": xnnpack,
            "xnnpack_applied": model.xnnpack_applied,
        }
        offset = k * n
        cb = (lambda done, total, _o=offset: progress(_o + done, 2 * n)) if progress else None
        t0 = time.perf_counter()
        predictions = model.predict(images, batch_size=batch_size, progress=cb)
        eval_s = time.perf_counter() - t0
        correct = int(np.sum(predictions == labels))
        results[kind] = {
            "file": files[kind].name,
            "sha256": model.sha256,
            "size_bytes": int(model.size_bytes),
            "size_kb": round(model.size_bytes / 1024.0, 1),
            "input": model.input.to_dict(),
            "output": model.output.to_dict(),
            "top1": correct / n,
            "correct": correct,
            "count": n,
            "eval_s": round(eval_s, 3),
            "predictions": [int(p) for p in predictions],
        }
    f32, i8 = results["float32"], results["int8"]
    agreement = float(np.mean(np.asarray(f32["predictions"]) == np.asarray(i8["predictions"])))
    return {
        "schema": EVALUATE_SCHEMA,
        "artifacts_dir": str(directory.resolve()),
        "model_name": (manifest or {}).get("model_name"),
        "data": data_info,
        "runtime": runtime_info,
        "threads": threads,
        "batch_size": batch_size,
        "models": results,
        "agreement": agreement,
        "drop_points": round(100.0 * (f32["top1"] - i8["top1"]), 4),
        "size_ratio": i8["size_bytes"] / f32["size_bytes"],
    }
