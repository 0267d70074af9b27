"""`edgeq sweep`: the paper's future-work comparisons, on the host.

Re-quantizes the same trained Keras model (ARTIFACTS/model.keras) once per calibration
method x weight granularity (per-channel / per-tensor) x calibration-set size x float
fallback, each into its own directory ARTIFACTS/sweep/<name>/ (name: `<granularity>-cal<N>`
for the converter's Min-Max without fallback, as before; else `<method>-<granularity>-cal<N>`
plus `-fb<K>` for a fallback of K layers) through edgeq.host.quantize.quantize, evaluates every
variant on the host with edgeq.host.evaluate.evaluate (LiteRT, the runtime the board uses), and
records top-1 and size per variant in ARTIFACTS/sweep.json (`"schema": "edgeq.sweep/1"`):

    {"schema", "created_utc", "artifacts_dir", "path", "seed", "eval_limit", "eval_count",
     "runtime", "methods", "fallbacks",
     "points": [{"granularity", "per_channel", "calibration_size", "dir",
     "int8_top1", "float32_top1", "agreement", "int8_size_bytes", "float32_size_bytes",
     "int8_sha256", "seconds",
     "method", "method_parameters", "quantizer", "float_fallback", "activations",
     "float_layers",
     "drop_points", "ranges", "weight_ranges", "int8_predictions"}],
     "labels", "float32_predictions"}

`int8_predictions` / `float32_predictions` / `labels`: per evaluated image, in eval.npz order
(the report's McNemar test of each variant against Min-Max, edgeq.host.stats).

`ranges` (edgeq.host.inspection.range_comparison): per activation tensor the Min-Max range next
to the range the method chose, the share of calibration values clipped and whether the
tensor has outliers by inspection's one rule ([] for the converter's Min-Max, which records
no ranges). `weight_ranges` (edgeq.host.inspection.weight_range_comparison): per conv /
depthwise / dense layer the Min-Max weight range (max|w| per channel or per tensor) next to the
one the method chose (percentile and mse clip; the others keep Min-Max). `methods` lists the
method labels swept, `fallbacks` the fallback counts.

`edgeq report` adds the file to the report when it is present.
Imports: standard library, edgeq.device (errors, fileutil, store), edgeq.host.artifacts;
edgeq.host.quantize / evaluate lazily (TensorFlow).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from edgeq.device.errors import EdgeqError, UsageError
from edgeq.device.fileutil import utc_now
from edgeq.device.store import atomic_write_json
from edgeq.host.artifacts import KERAS_FILE, SWEEP_FILE

logger = logging.getLogger(__name__)

SWEEP_SCHEMA = "edgeq.sweep/1"
SWEEP_DIR = "sweep"
GRANULARITIES = ("per-channel", "per-tensor")

ProgressCallback = Callable[[int, int], None]


class SweepError(EdgeqError):
    """The sweep cannot run on this artifacts directory."""


def parse_granularities(text: str) -> tuple[str, ...]:
    """"per-channel,per-tensor" -> ("per-channel", "per-tensor"), rejecting anything else."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in GRANULARITIES]
    if not values or bad:
        raise UsageError(f"unknown granularity {', '.join(bad) or repr(text)}",
                         hint=f"choose from {', '.join(GRANULARITIES)}")
    return values


def parse_fallbacks(text: str) -> tuple[int, ...]:
    """"0,2" -> (0, 2): float-fallback layer counts, whole numbers >= 0."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--fallback takes comma-separated whole numbers, not {text!r}",
                         hint="for example --fallback 0,2") from None
    if not values or any(v < 0 for v in values):
        raise UsageError("--fallback needs at least one number >= 0",
                         hint="for example --fallback 0,2")
    return values


def _model_entry(result: dict[str, Any], kind: str) -> dict[str, Any]:
    models = result.get("models") if isinstance(result.get("models"), dict) else result
    entry = models.get(kind) if isinstance(models, dict) else None
    if not isinstance(entry, dict):
        raise SweepError(f"the host evaluation returned no {kind} result",
                         hint="edgeq.host.evaluate is older or newer than edgeq.host.sweep")
    return entry


def _top1(entry: dict[str, Any]) -> float:
    for key in ("top1", "accuracy"):
        value = entry.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict) and isinstance(value.get("top1"), (int, float)):
            return float(value["top1"])
    raise SweepError("the host evaluation returned no top-1",
                     hint="edgeq.host.evaluate is older or newer than edgeq.host.sweep")


def _count(entry: dict[str, Any]) -> Optional[int]:
    for key in ("count",):
        if isinstance(entry.get(key), int):
            return int(entry[key])
    preds = entry.get("predictions")
    return len(preds) if isinstance(preds, list) else None


def sweep(
    artifacts_dir: Path,
    *,
    calibration_sizes: Sequence[int] = (10, 100, 1000),
    granularities: Sequence[str] = GRANULARITIES,
    methods: Sequence[str] = ("minmax",),
    fallbacks: Sequence[int] = (0,),
    extras: Sequence[tuple[str, str, int, int, str]] = (),
    eval_limit: Optional[int] = None,
    seed: int = 0,
    threads: int = 1,
    progress: Optional[ProgressCallback] = None,
) -> dict[str, Any]:
    """Quantize + evaluate every (method, granularity, calibration size, fallback), then each
    of `extras` (method, granularity, calibration size, fallback, activations "int8" or
    "int16": single variants such as 16x8 that a full product would multiply); save and
    return sweep.json."""
    from edgeq.host.artifacts import load_artifacts
    from edgeq.host.calibration import parse_methods
    from edgeq.host.evaluate import evaluate, evaluation_data
    from edgeq.host.inspection import range_comparison, weight_range_comparison
    from edgeq.host.quantize import quantize

    artifacts_dir = Path(artifacts_dir)
    if not (artifacts_dir / KERAS_FILE).is_file():
        raise SweepError(f"no trained model at {artifacts_dir / KERAS_FILE}",
                         hint="run edgeq train (or edgeq run) first")
    sizes = [int(s) for s in calibration_sizes]
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError("calibration sizes must be whole numbers >= 1",
                         hint="for example --calibration-sizes 10,100,1000")
    grans = list(granularities)
    bad = [g for g in grans if g not in GRANULARITIES]
    if not grans or bad:
        raise UsageError(f"unknown granularity {', '.join(bad)}",
                         hint=f"choose from {', '.join(GRANULARITIES)}")
    labels = [m.label for m in parse_methods(",".join(methods))]
    fbs = [int(k) for k in fallbacks]
    if not fbs or any(k < 0 for k in fbs):
        raise UsageError("fallback counts must be whole numbers >= 0",
                         hint="for example --fallback 0,2")
    combos = [(m, g, s, k, "int8") for m in labels for g in grans for s in sizes for k in fbs]
    for m, g, s, k, act in extras:
        if g not in GRANULARITIES or act not in ("int8", "int16") or int(s) < 1 or int(k) < 0:
            raise UsageError(f"bad extra variant {(m, g, s, k, act)}",
                             hint="(method, per-channel|per-tensor, size >= 1, fallback >= 0, "
                                  "int8|int16)")
        combos.append((parse_methods(m)[0].label, g, int(s), int(k), act))
    points: list[dict[str, Any]] = []
    eval_count: Optional[int] = None
    runtime: Optional[str] = None
    float32_predictions: list[int] = []  # the report's McNemar pairs (edgeq.host.stats)
    eval_labels: list[int] = []
    for done, (method, gran, size, fb, act) in enumerate(combos):
        out = artifacts_dir / SWEEP_DIR / variant_name(method, gran, size, fb, act)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        logger.info("sweep: quantizing %s %s with %d calibration images, fallback %d",
                    method, gran, size, fb)
        manifest = quantize(artifacts_dir, out_dir=out, calibration_size=size, seed=seed,
                            per_channel=(gran == "per-channel"), eval_limit=eval_limit,
                            calibration_method=method, float_fallback=fb, activations=act)
        result = evaluate(out, limit=eval_limit, threads=threads)
        f32, i8 = _model_entry(result, "float32"), _model_entry(result, "int8")
        agreement = result.get("agreement")
        eval_count = _count(i8) or eval_count
        rt = result.get("runtime")
        runtime = (f"{rt.get('name')} {rt.get('version')}" if isinstance(rt, dict)
                   else str(rt) if rt else runtime)
        points.append({
            "granularity": gran,
            "per_channel": gran == "per-channel",
            "calibration_size": size,
            "dir": str(out.relative_to(artifacts_dir)),
            "int8_top1": _top1(i8),
            "float32_top1": _top1(f32),
            "agreement": float(agreement) if isinstance(agreement, (int, float)) else None,
            "int8_size_bytes": int(manifest["models"]["int8"]["size_bytes"]),
            "float32_size_bytes": int(manifest["models"]["float32"]["size_bytes"]),
            "int8_sha256": manifest["models"]["int8"]["sha256"],
            "seconds": round(time.perf_counter() - t0, 3),
            "method": manifest["calibration"]["method"],
            "method_parameters": manifest["calibration"].get("parameters") or {},
            "quantizer": manifest["converter"].get("quantizer", "tflite-converter"),
            "float_fallback": fb,
            "activations": act,
            "float_layers": list((manifest.get("precision") or {}).get("float_layers") or []),
            "drop_points": round(100.0 * (_top1(f32) - _top1(i8)), 4),
            "ranges": range_comparison(manifest),
            "weight_ranges": weight_range_comparison(manifest),
            "int8_predictions": [int(v) for v in i8.get("predictions") or []],
        })
        float32_predictions = float32_predictions or [int(v) for v in
                                                      f32.get("predictions") or []]
        if not eval_labels:  # the images evaluate used, in the same order
            eval_labels = [int(v) for v in
                           evaluation_data(load_artifacts(out), limit=eval_limit)[1]]
        if progress:
            progress(done + 1, len(combos))
    path = artifacts_dir / SWEEP_FILE
    doc: dict[str, Any] = {
        "schema": SWEEP_SCHEMA,
        "created_utc": utc_now(),
        "artifacts_dir": str(artifacts_dir.resolve()),
        "path": str(path),
        "seed": seed,
        "eval_limit": eval_limit,
        "eval_count": eval_count,
        "runtime": runtime or "LiteRT",
        "methods": labels,
        "fallbacks": fbs,
        "points": points,
        "labels": eval_labels,
        "float32_predictions": float32_predictions,
    }
    atomic_write_json(path, doc, mode=None, sort_keys=False)  # like the other artifacts: umask
    return doc


def variant_name(method: str, granularity: str, size: int, fallback: int = 0,
                 activations: str = "int8") -> str:
    """The sweep directory name of one variant ("per-channel-cal100" for the converter's
    Min-Max without fallback, "percentile99.99-per-tensor-cal500-fb2", "minmax-16x8-per-channel-
    cal500" for int16 activations ...)."""
    base = f"{granularity}-cal{size}"
    if activations == "int16":
        base = "16x8-" + base
    if method != "minmax" or activations == "int16":
        base = method.replace(":", "") + "-" + base
    return base + (f"-fb{fallback}" if fallback else "")


def load_sweep(artifacts_dir: Path) -> Optional[dict[str, Any]]:
    """ARTIFACTS/sweep.json, or None when there is none."""
    path = Path(artifacts_dir) / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SweepError(f"cannot read {path}: {exc}", hint="run edgeq sweep again") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SWEEP_SCHEMA:
        raise SweepError(f"{path} is not an {SWEEP_SCHEMA} document", hint="run edgeq sweep again")
    return doc
