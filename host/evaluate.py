"""Evaluate the float32 and int8 .tflite files of an artifacts directory on the host.

Both models run with LiteRT through the same runtime adapter the board uses
(`edgeq.device.runtime`), on the artifacts' `eval.npz` (checked against the manifest's sha256)
or on the MNIST test set. The result (`"schema": "edgeq.evaluate/1"`) has, per model, file,
size_bytes, size_kb, top1, correct, count, predictions and eval_s; and the comparison:
`agreement` (fraction of images where both predict the same class), `drop_points`
(float32 top-1 minus int8 top-1, in percentage points) and `size_ratio` (int8 / float32 bytes).

Imports: standard library, numpy, edgeq.device, edgeq.host.{artifacts,data}; no TensorFlow.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgeq.device.errors import EdgeqError
from edgeq.host.artifacts import MODEL_KINDS, Artifacts, load_artifacts
from edgeq.host.data import load_mnist

logger = logging.getLogger(__name__)

EVALUATE_SCHEMA = "edgeq.evaluate/1"
HOST_BATCH_SIZE = 100

ProgressCallback = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]", Path]


class EvaluateError(EdgeqError):
    """The evaluation cannot run as asked (a bad limit); artifacts errors are ArtifactsError."""


def evaluation_data(
    artifacts: Artifacts,
    *,
    limit: Optional[int] = None,
    data_dir: Optional[PathLike] = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(images uint8, labels, description): the artifacts' eval data (already checked against
    the manifest's sha256 by load_artifacts) unless `data_dir` asks for the MNIST test set."""
    if limit is not None and limit < 1:
        raise EvaluateError(f"limit must be at least 1, got {limit}",
                            hint="pass a positive --limit")
    if data_dir is None and artifacts.eval_data is not None:
        from edgeq.device.evaldata import load_eval_data

        images, labels = load_eval_data(artifacts.eval_data.path)
        info: dict[str, Any] = {"source": artifacts.eval_data.path.name,
                                "sha256": artifacts.eval_data.sha256}
    else:
        images, labels = load_mnist("test", data_dir)
        info = {"source": "mnist-test"}
    if limit is not None:
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

    The directory is read with edgeq.host.artifacts.load_artifacts (ArtifactsError when it is
    missing, incomplete or does not match its manifest).
    `progress(done, total)` counts images over both models (total = 2 x count).
    """
    from edgeq.device.runtime import load_model

    art = load_artifacts(artifacts_dir)
    images, labels, data_info = evaluation_data(art, limit=limit, data_dir=data_dir)
    n = len(labels)

    results: dict[str, Any] = {}
    runtime_info: dict[str, Any] = {}
    for k, kind in enumerate(MODEL_KINDS):
        mf = art.models[kind]
        model = load_model(mf.path, threads=threads, xnnpack=xnnpack, runtime=runtime,
                           sha256=mf.sha256)
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
            "file": mf.path.name,
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
        "artifacts_dir": str(art.dir.resolve()),
        "model_name": art.manifest.get("model_name"),
        "data": data_info,
        "runtime": runtime_info,
        "threads": threads,
        "batch_size": batch_size,
        "models": results,
        "agreement": agreement,
        "drop_points": round(100.0 * (f32["top1"] - i8["top1"]), 4),
        "size_ratio": i8["size_bytes"] / f32["size_bytes"],
    }
