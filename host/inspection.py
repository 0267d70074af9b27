"""Per-layer analysis of an int8 model: quantization parameters, weight ranges, outliers,
activation ranges and the per-layer quantization error. The `edgeq inspect` command and the
report (which only lays it out) both take their numbers from here.

- `inspect_model(path, float_model_path=...)` is what `edgeq inspect` shows (plain JSON-able
  dicts), with `quantization_error` (TensorFlow's QuantizationDebugger) when the float Keras
  model is given.
- `layer_analysis(artifacts_dir)` puts the int8 model next to its float32 twin: each int8
  weight tensor against the float weights it came from, each int8 activation's calibrated
  range against the float values seen when both models run (through the device runtime's
  loader, edgeq.device.runtime) on evaluation images, and the per-layer error.

The file itself is read by edgeq.host.tflite_file.

Outlier rule (weights, defined here once): for a weight tensor (and each of its channels),
`outlier_ratio` = max|w| / P99.9(|w|) over the dequantized weights. Min-Max quantization spends
its 256 levels on [min, max]; when max|w| is more than OUTLIER_RATIO (2.0) times the 99.9th
percentile, at least 99.9 % of the weights live in less than half of the grid, i.e. a handful of
values cost the rest more than one bit of resolution. `outlier` is True then.
Stretch rule (activations): a calibrated int8 range is "stretched by outliers" when it is more
than STRETCH_FLAG (2.0) times wider than the central 99.8 % of the float values seen.

Imports: standard library, numpy, edgeq.device (errors; runtime and evaldata lazily),
edgeq.host.{tflite_file, artifacts}; edgeq.host.quantize, TensorFlow and Keras only inside
`quantization_error`. Nothing in edgeq.host.quantize imports this module.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from edgeq.device.errors import EdgeqError
from edgeq.host.artifacts import KERAS_FILE, MODEL_KINDS, load_artifacts
from edgeq.host.tflite_file import (
    OperatorRecord,
    TfliteFile,
    WeightTensor,
    full_integer_problems,
    read_tflite,
    weight_tensors,
)

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]", Path]
ProgressCallback = Callable[[int, int], None]

OUTLIER_RATIO = 2.0
OUTLIER_PERCENTILE = 99.9
#: the weight outlier rule in words (shown by `edgeq inspect` and the report)
OUTLIER_RULE = f"max|w| > {OUTLIER_RATIO:g} x P{OUTLIER_PERCENTILE:g}(|w|)"
#: an activation range is "stretched by outliers" when the calibrated int8 range is this many
#: times wider than where the central 99.8 % of the observed float values lie
STRETCH_FLAG = 2.0
#: evaluation images both models run on for the activation ranges
LAYER_IMAGES = 200
#: ops that only move shapes around (their outputs are not analysed)
_SKIP_OPS = ("DELEGATE", "QUANTIZE", "DEQUANTIZE", "SHAPE", "STRIDED_SLICE", "PACK")


class InspectError(EdgeqError):
    """A model that cannot be inspected or analysed layer by layer."""


# ---------------------------------------------------------------------------------------------
# the outlier rule


def _p999(abs_values: np.ndarray) -> float:
    return float(np.percentile(abs_values, OUTLIER_PERCENTILE))


def outlier_threshold(values: np.ndarray) -> float:
    """|w| above which a weight is an outlier: OUTLIER_RATIO x P99.9(|w|)."""
    return OUTLIER_RATIO * _p999(np.abs(np.asarray(values)))


def _outlier_ratio(abs_values: np.ndarray) -> float:
    if abs_values.size == 0:
        return 0.0
    p = _p999(abs_values)
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
        "outlier_rule": f"{OUTLIER_RULE} of the dequantized weights (per tensor and per channel)",
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


# ---------------------------------------------------------------------------------------------
# float32 next to int8, layer by layer


@dataclass
class WeightLayer:
    """One int8 weight tensor next to the float32 weights it was quantized from."""

    label: str  # e.g. "conv_2d_1": op name and its position among ops of that name
    weight: WeightTensor
    float_values: np.ndarray  # float64, same shape as weight.values
    report: dict[str, Any]  # weight_report(weight): ranges, outlier flags per channel
    outlier_abs: float  # outlier_threshold of the float weights
    outliers: int  # float weights above it
    row: dict[str, Any]  # the table row


@dataclass
class LayerAnalysis:
    """What `layer_analysis` found; rows are JSON-able dicts in display order."""

    image_count: int = 0
    weights: list[WeightLayer] = field(default_factory=list)
    tensor_rows: list[dict[str, Any]] = field(default_factory=list)  # activations
    activation_ranges: list[dict[str, Any]] = field(default_factory=list)  # for the figure
    error_rows: list[dict[str, Any]] = field(default_factory=list)
    error_source: str = ""  # "debugger" (isolated per layer) or "end-to-end" (or "")
    debug_note: str = ""  # why the QuantizationDebugger is missing, if it is
    note: str = ""

    @property
    def weight_rows(self) -> list[dict[str, Any]]:
        return [w.row for w in self.weights]


def op_keys(operators: Sequence[OperatorRecord]) -> list[tuple[str, int]]:
    """(op name, n-th op of that name) for each op: how the float and int8 graphs are matched."""
    seen: dict[str, int] = {}
    out = []
    for op in operators:
        seen[op.name] = seen.get(op.name, 0) + 1
        out.append((op.name, seen[op.name]))
    return out


def _short_name(name: str, width: int = 60) -> str:
    """TFLite tensor names can be long ';'-joined lists: keep the last part."""
    last = name.split(";")[-1]
    return last if len(last) <= width else "..." + last[-(width - 3):]


def _weight_layers(pairs: list[Any], qf: TfliteFile, ff: TfliteFile) -> list[WeightLayer]:
    by_index = {w.index: w for w in weight_tensors(qf.path, qf)}
    out: list[WeightLayer] = []
    for (name, nth), fop, qop in pairs:
        if len(qop.inputs) < 2 or qop.inputs[1] not in by_index or len(fop.inputs) < 2:
            continue
        wt = by_index[qop.inputs[1]]
        w = ff.buffer_array(ff.tensors[fop.inputs[1]])
        if w is None or w.shape != wt.values.shape:
            continue
        w = w.astype(np.float64)
        rep = weight_report(wt)
        label = f"{name.lower()}_{nth}"
        per_channel = len(wt.scales) > 1
        outlier_abs = outlier_threshold(w)
        err = wt.dequantized().astype(np.float64) - w
        row = {
            "layer": label, "tensor": wt.name, "shape": "x".join(str(d) for d in w.shape),
            "granularity": f"per-channel ({len(wt.scales)})" if per_channel else "per-tensor",
            "w_min": float(w.min()), "w_max": float(w.max()),
            "scale_min": float(np.min(wt.scales)), "scale_max": float(np.max(wt.scales)),
            "outlier_ratio": rep["outlier_ratio"],
            "outlier": "yes" if rep["outlier"] else "no",
            "outlier_channels": f"{rep['outlier_channels']}/{len(rep['channels'])}",
            "codes_used": int(np.unique(wt.values).size),
            "rounding_rmse_lsb": float(np.sqrt(np.mean(err ** 2)) / float(np.mean(wt.scales))),
        }
        out.append(WeightLayer(label, wt, w, rep, outlier_abs,
                               int(np.sum(np.abs(w) > outlier_abs)), row))
    return out


def _activations(pairs: list[Any], qf: TfliteFile, ff: TfliteFile, files: dict[str, Path],
                 images: np.ndarray) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(table rows, figure items): calibrated int8 ranges vs float values seen at run time."""
    from edgeq.device.runtime import load_model

    acts: list[dict[str, Any]] = []
    for (name, nth), fop, qop in pairs:
        if not qop.outputs or not fop.outputs:
            continue
        qt, ft = qf.tensors[qop.outputs[0]], ff.tensors[fop.outputs[0]]
        if qt.dtype != "INT8" or ft.dtype != "FLOAT32" or len(qt.scales) != 1:
            continue
        d = qt.to_dict()
        acts.append({"label": f"{name.lower()}_{nth}", "f": ft.index, "q": qt.index,
                     "tensor": qt.name, "scale": float(d["scale"]),
                     "zero_point": int(d["zero_point"]), "range_min": float(d["real_min"]),
                     "range_max": float(d["real_max"]), "fvals": [], "err2": 0.0, "n": 0})
    # no delegate, every intermediate tensor kept: the reference kernels' values, layer by layer
    fm, qm = (load_model(files[k], xnnpack=False, preserve_all_tensors=True)
              for k in MODEL_KINDS)
    for i in range(len(images)):
        for m in (fm, qm):
            m.run_prepared(m.prepare_input(images[i:i + 1]))
        for a in acts:
            fv = fm.interpreter.get_tensor(a["f"]).astype(np.float64).ravel()
            qv = (qm.interpreter.get_tensor(a["q"]).astype(np.float64).ravel()
                  - a["zero_point"]) * a["scale"]
            a["fvals"].append(fv)
            a["err2"] += float(np.sum((qv - fv) ** 2))
            a["n"] += fv.size
    rows: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for a in acts:
        fv = np.concatenate(a["fvals"]) if a["fvals"] else np.zeros(1)
        lo, hi = a["range_min"], a["range_max"]
        p_lo, p_hi = (float(v) for v in np.quantile(fv, [0.001, 0.999]))
        stretch = (hi - lo) / (p_hi - p_lo) if p_hi > p_lo else float("inf")
        clipped = float(np.mean((fv < lo - a["scale"] / 2) | (fv > hi + a["scale"] / 2)))
        rmse = math.sqrt(a["err2"] / a["n"]) if a["n"] else float("nan")
        outlier = bool(stretch > STRETCH_FLAG)
        rows.append({
            "layer": a["label"], "tensor": a["tensor"], "scale": a["scale"],
            "zero_point": a["zero_point"], "range_min": lo, "range_max": hi,
            "seen_p0.1": p_lo, "seen_p99.9": p_hi, "seen_min": float(fv.min()),
            "seen_max": float(fv.max()), "stretch": stretch, "clipped_pct": 100.0 * clipped,
            "e2e_rmse_lsb": rmse / a["scale"], "outlier": "yes" if outlier else "no"})
        items.append({"name": a["label"], "min": lo, "max": hi, "scale": a["scale"],
                      "outlier": outlier, "p_lo": p_lo, "p_hi": p_hi})
    return rows, items


def layer_analysis(artifacts_dir: PathLike, *, images: Optional[np.ndarray] = None,
                   debugger: bool = True, max_images: int = LAYER_IMAGES) -> LayerAnalysis:
    """Per layer: weights vs the Min-Max range and int8 grid, activation ranges, outliers, error.

    - The ops of the int8 and float32 graphs are matched by type and position, so each int8
      weight tensor is shown against the float32 weights it came from (outlier rule above).
    - Both models are loaded with the device runtime's loader, without delegates and with every
      intermediate tensor kept, and run on up to `max_images` evaluation images (`images`, or
      the artifacts' eval data). For each int8 activation, the calibrated range
      [(-128 - zp) * s, (127 - zp) * s] is compared with the float values actually seen: its
      "stretch" is the range width over the width of the central 99.8 % of the values; its
      end-to-end error is the RMSE of the dequantized int8 output against the float output, in
      int8 steps (it accumulates through the graph, like the accuracy loss).
    - With `debugger` and ARTIFACTS/model.keras, the isolated per-layer error comes from
      `quantization_error` with the manifest's calibration settings.
    """
    art = load_artifacts(artifacts_dir, verify=False)
    files = {kind: mf.path for kind, mf in art.models.items()}
    if images is None:
        if art.eval_data is None:
            raise InspectError(f"{art.dir} has no evaluation data",
                               hint="run edgeq quantize again to write eval.npz")
        from edgeq.device.evaldata import load_eval_data

        images, _ = load_eval_data(art.eval_data.path)
    images = images[:max_images]
    qf, ff = read_tflite(files["int8"]), read_tflite(files["float32"])
    f_ops = dict(zip(op_keys(ff.operators), ff.operators))
    pairs = [(key, f_ops[key], qop) for key, qop in zip(op_keys(qf.operators), qf.operators)
             if key in f_ops and qop.name not in _SKIP_OPS]
    if not pairs:
        raise InspectError("the float32 and int8 graphs have no op in common",
                           hint="re-create both models with edgeq quantize")
    result = LayerAnalysis(image_count=len(images), weights=_weight_layers(pairs, qf, ff))
    result.tensor_rows, result.activation_ranges = _activations(pairs, qf, ff, files, images)

    debug_layers: list[dict[str, Any]] = []
    keras_path = art.dir / KERAS_FILE
    if debugger and keras_path.is_file():
        cal = art.manifest.get("calibration") or {}
        try:
            debug = quantization_error(
                keras_path, calibration_size=int(cal.get("size") or 100),
                seed=int(cal.get("seed") or 0), per_channel=bool(cal.get("per_channel", True)))
            debug_layers = list(debug.get("layers") or [])
        except EdgeqError as exc:
            result.debug_note = f" QuantizationDebugger: not available ({exc.message})."
    e2e = {r["tensor"]: r["e2e_rmse_lsb"] for r in result.tensor_rows}
    if debug_layers:
        result.error_source = "debugger"
        result.error_rows = [{
            "op": layer.get("op"), "tensor": _short_name(str(layer.get("tensor"))),
            "scale": layer.get("scale"), "rmse": layer.get("rmse"),
            "rmse_per_scale": layer.get("rmse_per_scale"),
            "max_abs_error": layer.get("max_abs_error"),
            "e2e_rmse_lsb": e2e.get(str(layer.get("tensor")))} for layer in debug_layers]
    elif result.tensor_rows:
        result.error_source = "end-to-end"
        result.error_rows = [{"layer": r["layer"], "tensor": _short_name(r["tensor"]),
                              "e2e_rmse_lsb": r["e2e_rmse_lsb"]} for r in result.tensor_rows]
    result.note = (
        f"Weights: int8 tensors, scales and the outlier rule from edgeq inspect ({OUTLIER_RULE}). "
        f"Activations: both models run without delegates on {len(images)} evaluation images; "
        "stretch = calibrated range / width of the central 99.8 % of the values seen, flagged "
        f"above {STRETCH_FLAG:g}." + result.debug_note)
    return result


# ---------------------------------------------------------------------------------------------
# the range a calibration method chose next to Min-Max's


def range_comparison(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per activation tensor of a quantized variant, the Min-Max range next to the range its
    calibration method chose (the manifest's calibration.ranges, edgeq.host.calibration).

    Rows: tensor, minmax_min, minmax_max, min, max (the chosen range), clipped (the chosen
    range is narrower), clipped_fraction (share of calibration values outside it), p999_abs,
    outliers (the one outlier rule, OUTLIER_RULE, on the activations: max|x| >
    OUTLIER_RATIO x P99.9(|x|)), io (the model's input/output: kept at Min-Max), float
    (the layer was left in float by --float-fallback). [] when no ranges were recorded (the
    converter's own Min-Max records none)."""
    cal = manifest.get("calibration") or {}
    ranges = cal.get("ranges") or []
    floats = set((manifest.get("precision") or {}).get("float_layers") or [])
    rows = []
    for r in ranges:
        mm_abs = max(abs(float(r["minmax_min"])), abs(float(r["minmax_max"])))
        p999 = float(r.get("p999_abs") or 0.0)
        rows.append({
            "tensor": r["tensor"],
            "minmax_min": float(r["minmax_min"]), "minmax_max": float(r["minmax_max"]),
            "min": float(r["min"]), "max": float(r["max"]),
            "clipped": float(r["max"]) < float(r["minmax_max"]) - 1e-9
            or float(r["min"]) > float(r["minmax_min"]) + 1e-9,
            "clipped_fraction": float(r.get("clipped_fraction") or 0.0),
            "p999_abs": p999,
            "outliers": bool(p999 > 0 and mm_abs > OUTLIER_RATIO * p999),
            "io": bool(r.get("io")),
            "float": r["tensor"] in floats,
        })
    return rows


def weight_range_comparison(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per weighted layer of a quantized variant, the Min-Max weight range next to the one its
    calibration method chose (the manifest's calibration.weight_ranges, edgeq.host.quantize).

    Rows: tensor, layer, op, granularity, channel_max_abs (each output channel's max|w|),
    minmax_abs / chosen_abs (per channel, or one per tensor: symmetric thresholds, scale =
    T / 127), clipped (some chosen threshold is below Min-Max), clipped_fraction,
    channel_spread (largest / median channel max|w|: how far per-tensor weights stretch the
    small channels), outliers (OUTLIER_RULE on the tensor's weights), float. [] for a manifest
    without weight ranges (made before they were recorded)."""
    rows = []
    for r in (manifest.get("calibration") or {}).get("weight_ranges") or []:
        ch = [float(v) for v in r.get("channel_max_abs") or r["minmax_abs"]]
        top = max(ch) if ch else 0.0
        med = float(np.median(ch)) if ch else 0.0
        p999 = float(r.get("p999_abs") or 0.0)
        mm, chosen = [float(v) for v in r["minmax_abs"]], [float(v) for v in r["chosen_abs"]]
        rows.append({
            "tensor": r["tensor"], "layer": r.get("layer", r["tensor"]), "op": r.get("op", ""),
            "granularity": r.get("granularity", ""), "channel_max_abs": ch,
            "minmax_abs": mm, "chosen_abs": chosen,
            "clipped": any(c < m - 1e-12 for c, m in zip(chosen, mm)),
            "clipped_fraction": float(r.get("clipped_fraction") or 0.0),
            "channel_spread": top / med if med > 0 else float("inf") if top > 0 else 1.0,
            "outliers": bool(p999 > 0 and top > OUTLIER_RATIO * p999),
            "float": bool(r.get("float")),
        })
    return rows
