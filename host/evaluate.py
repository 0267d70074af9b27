"""Evaluate the float32 and int8 .tflite files of an artifacts directory on the host.

Both models run with LiteRT through the same runtime adapter the board uses
(`edgeq.device.runtime`), on the artifacts' `eval.npz` (checked against the manifest's sha256;
uint8 raw pixels or float32 model-ready images, quantized with the int8 model's own input scale
and zero point) or on the MNIST test set. The result (`"schema": "edgeq.evaluate/1"`) has, per
model, file, size_bytes, size_kb, top1, correct, count, top5 and correct_top5 (null unless the
model has more than 5 classes), per_class_top1 (one entry per class, in `class_names` order),
predictions and eval_s; the classes (`num_classes`, `class_names` from the manifest); and the
comparison: `agreement` (fraction of images where both predict the same class), `drop_points`
(float32 top-1 minus int8 top-1, in percentage points) and `size_ratio` (int8 / float32 bytes).

A damaged .tflite can crash the interpreter's C++ code (a segfault no Python code can catch).
So before a model is loaded in this process, `probe_models` opens every model in a short-lived
child process (load, allocate, one inference) and turns a crash into a one-line ModelLoadError;
the device does the same through its worker.

Imports: standard library, numpy, edgeq.device, edgeq.host.{artifacts,data}; no TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from edgeq.device.bench import accuracy_section, top_k_for
from edgeq.device.errors import EdgeqError, ModelLoadError, raise_from_wire
from edgeq.host.artifacts import MODEL_KINDS, Artifacts, load_artifacts
from edgeq.host.data import load_mnist

logger = logging.getLogger(__name__)

EVALUATE_SCHEMA = "edgeq.evaluate/1"
HOST_BATCH_SIZE = 100
#: a probe that takes longer than this is a hang, reported like a crash
PROBE_TIMEOUT_S = 120.0

ProgressCallback = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]", Path]


class EvaluateError(EdgeqError):
    """The evaluation cannot run as asked (a bad limit); artifacts errors are ArtifactsError."""


# ---------------------------------------------------------------------------------------------
# opening a model where a crash cannot take the CLI down

# The child: for each model, say which one it opens (so a crash names it), then load, allocate
# and run one inference on the first evaluation image (or zeros of the input's shape).
_PROBE_CODE = r"""
import json, sys
import numpy as np
from edgeq.device.errors import EdgeqError, error_to_dict
from edgeq.device.runtime import load_model
args = json.loads(sys.argv[1])
path = "the evaluation data"
try:
    sample = None
    if args["data"]:
        from edgeq.device.evaldata import open_eval_data
        sample = open_eval_data(args["data"]).head(1)
    for path in args["paths"]:
        print(json.dumps({"opening": path}), flush=True)
        m = load_model(path, xnnpack=args["xnnpack"], runtime=args["runtime"])
        x = sample if sample is not None else np.zeros(
            (1, *[max(1, d) for d in m.sample_shape()]), np.float32)
        m.predict(x)
        print(json.dumps({"ok": path}), flush=True)
except EdgeqError as exc:
    print(json.dumps({"error": error_to_dict(exc)}), flush=True)
    sys.exit(2)
except Exception as exc:
    text = " ".join(str(exc).split())[:300]
    print(json.dumps({"error": {"type": "ModelLoadError", "hint": "the file is damaged; convert"
                                " or copy it again", "message": f"{path} cannot be opened: "
                                f"{type(exc).__name__}: {text}"}}), flush=True)
    sys.exit(2)
"""


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def probe_models(paths: Sequence[PathLike], *, data: Optional[PathLike] = None,
                 xnnpack: bool = True, runtime: Optional[str] = None,
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Open each model in a child process (load, allocate, one inference); return quietly when
    all of them work. A model the runtime refuses raises the child's own EdgeqError; one that
    crashes or hangs the interpreter raises ModelLoadError naming the file and the signal."""
    names = {str(Path(p)): Path(p).name for p in paths}
    args = json.dumps({"paths": list(names), "data": None if data is None else str(data),
                       "xnnpack": bool(xnnpack), "runtime": runtime})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE_CODE, args], capture_output=True,
                              text=True, timeout=timeout_s, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"opening {', '.join(names.values())} did not finish within {timeout_s:g} s",
            hint="the model hangs the interpreter; check the .tflite file") from None
    lines = [json.loads(line) for line in proc.stdout.splitlines()
             if line.startswith("{") and line.endswith("}")]
    if proc.returncode == 0:
        return
    errors = [ln["error"] for ln in lines if isinstance(ln.get("error"), dict)]
    if errors:
        raise_from_wire(errors[-1])
    opening = [ln["opening"] for ln in lines if "opening" in ln]
    name = names.get(opening[-1], opening[-1]) if opening else "a model"
    if proc.returncode < 0:
        how = f"crashed the TFLite interpreter ({_signal_name(-proc.returncode)})"
    else:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        how = f"stopped the TFLite interpreter (exit status {proc.returncode}: {tail})"
    raise ModelLoadError(
        f"{name} {how} while it was opened in a child process: the file is damaged",
        hint="convert or copy the model again (edgeq quantize / edgeq import)")


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluation_data(
    artifacts: Artifacts,
    *,
    limit: Optional[int] = None,
    data_dir: Optional[PathLike] = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(images, labels, description): the artifacts' eval data (already checked against the
    manifest's sha256 by load_artifacts; uint8 or float32) unless `data_dir` asks for the
    MNIST test set."""
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


def _class_names(art: Artifacts, num_classes: int) -> list[str]:
    """The manifest's class names, padded with the index for classes it does not name."""
    names = [str(n) for n in art.class_names][:num_classes]
    return names + [str(i) for i in range(len(names), num_classes)]


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
    missing, incomplete or does not match its manifest); the models are opened in a child
    process first (`probe_models`).
    `progress(done, total)` counts images over both models (total = 2 x count).
    """
    from edgeq.device.runtime import load_model

    art = load_artifacts(artifacts_dir)
    images, labels, data_info = evaluation_data(art, limit=limit, data_dir=data_dir)
    n = len(labels)
    probe_models([art.models[k].path for k in MODEL_KINDS],
                 data=art.eval_data.path if data_dir is None and art.eval_data else None,
                 xnnpack=xnnpack, runtime=runtime)

    results: dict[str, Any] = {}
    runtime_info: dict[str, Any] = {}
    num_classes = 0
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
        top = model.predict_top_k(images, top_k_for(model.num_classes), batch_size=batch_size,
                                  progress=cb)
        eval_s = time.perf_counter() - t0
        acc = accuracy_section(top, labels, model.num_classes)
        num_classes = max(num_classes, int(acc["num_classes"]))
        results[kind] = {
            "file": mf.path.name,
            "sha256": model.sha256,
            "size_bytes": int(model.size_bytes),
            "size_kb": round(model.size_bytes / 1024.0, 1),
            "input": model.input.to_dict(),
            "output": model.output.to_dict(),
            "top1": acc["top1"],
            "correct": acc["correct"],
            "count": n,
            "top5": acc["top5"],
            "correct_top5": acc["correct_top5"],
            "per_class_top1": acc["per_class_top1"],
            "eval_s": round(eval_s, 3),
            "predictions": acc["predictions"],
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
        "num_classes": num_classes,
        "class_names": _class_names(art, num_classes),
        "models": results,
        "agreement": agreement,
        "drop_points": round(100.0 * (f32["top1"] - i8["top1"]), 4),
        "size_ratio": i8["size_bytes"] / f32["size_bytes"],
    }
