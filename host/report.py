"""`edgeq report`: one run of float32 vs int8 as a self-contained HTML page + a Markdown summary.

`build_report(run, artifacts_dir=..., out_dir=...)` takes an `edgeq.compare/1` document (from
bench-remote / history) and the artifacts directory it was measured from, and writes

    OUT/report.html     one file: CSS inline, figures inline as data: URIs, no script, no
                        network (opens offline, from a file:// URL or an e-mail attachment)
    OUT/report.md       the same tables in Markdown, figures linked from OUT/figures/
    OUT/figures/*.png   every figure as its own PNG (for READMEs and slides)

The page has the paper's comparison table (size, top-1 with a Wilson 95% interval,
agreement, latency p50/p90/p99, throughput, init, peak memory, int8/float32), McNemar's test on
the paired predictions, bootstrap intervals for the latency medians, the figures of
edgeq.host.plots, the per-layer analysis (weights vs the Min-Max range and int8 grid,
per-channel ranges, activation ranges from calibration, outliers, per-layer error), the
device environment (EMULATED shown loudly) and, when `sweep.json` is present, the sweep.

Every number of a table cell is machine-readable: the HTML cell (or span) carries
`data-metric`, `data-model` and `data-value` (the exact value in the document's unit); the
Markdown tables carry the metric key in a column and the value in the unit of the row label.
`parse_html_metrics` reads them back. The report also embeds its summary as
`<script type="application/json" id="edgeq-report-data">` (data, never executed).
Imports: standard library, numpy, edgeq.device.errors, edgeq.host.{stats, plots, compare};
edgeq.host.inspection (TensorFlow) lazily for the per-layer analysis.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from edgeq.device import __version__
from edgeq.device.errors import EdgeqError
from edgeq.device.store import atomic_write_bytes
from edgeq.host import stats

logger = logging.getLogger(__name__)

COMPARE_SCHEMA = "edgeq.compare/1"
REPORT_SCHEMA = "edgeq.report/1"
SWEEP_FILE = "sweep.json"
MODELS = ("float32", "int8")
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MAX_GALLERY = 32

ProgressCallback = Callable[[int, int], None]
_NUM = ' class="num"'


class ReportError(EdgeqError):
    """The run or its artifacts cannot be turned into a report."""


@dataclass(frozen=True)
class ReportPaths:
    """What build_report wrote."""

    out_dir: Path
    html: Path
    markdown: Path
    figures: tuple[Path, ...]


@dataclass(frozen=True)
class Metric:
    """A row of the side-by-side table: `key` of the model entry, shown as value / scale."""

    key: str
    label: str
    scale: float = 1.0


#: the side-by-side table, in order (KB and MiB are 1024-based)
METRICS: tuple[Metric, ...] = (
    Metric("size_bytes", "Size (KB)", 1024.0),
    Metric("accuracy", "Top-1 (%)", 0.01),
    Metric("latency_ms_p50", "Latency p50 (ms)"),
    Metric("latency_ms_p90", "Latency p90 (ms)"),
    Metric("latency_ms_p99", "Latency p99 (ms)"),
    Metric("latency_ms_mean", "Latency mean (ms)"),
    Metric("throughput_samples_per_s", "Throughput (samples/s)"),
    Metric("init_ms", "Init (ms)"),
    Metric("peak_rss_bytes", "Peak memory (MiB)", 1024.0 * 1024.0),
)


# ------------------------------------------------------------------ small helpers


def fmt_num(value: Optional[float], sig: int = 4) -> str:
    """A number with `sig` significant digits, never in exponent notation ("n/a" for None)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    v = float(value)
    if v == 0:
        return "0"
    decimals = max(0, min(12, sig - 1 - int(math.floor(math.log10(abs(v))))))
    return f"{v:.{decimals}f}"


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


@dataclass(frozen=True)
class Figure:
    """One figure of the report."""

    name: str          # file stem under figures/
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Part:
    """One machine-readable number (or a plain text) inside a table cell."""

    text: str
    metric: Optional[str] = None
    model: Optional[str] = None
    value: Optional[float] = None


@dataclass
class Cell:
    parts: list[Part] = field(default_factory=list)
    sep: str = " "

    def markdown(self) -> str:
        return self.sep.join(p.text for p in self.parts).replace("|", "\\|")

    def html(self, tag: str = "td", attrs: str = "") -> str:
        if len(self.parts) == 1:
            return f"<{tag}{_data_attrs(self.parts[0])}{attrs}>{html.escape(self.parts[0].text)}</{tag}>"
        inner = html.escape(self.sep).join(
            f"<span{_data_attrs(p)}>{html.escape(p.text)}</span>" if p.metric
            else html.escape(p.text) for p in self.parts)
        return f"<{tag}{attrs}>{inner}</{tag}>"


def _data_attrs(p: Part) -> str:
    if p.metric is None:
        return ""
    value = "" if p.value is None else repr(float(p.value))
    return (f' data-metric="{html.escape(p.metric)}" data-model="{html.escape(p.model or "")}"'
            f' data-value="{value}"')


def _num_cell(metric: str, model: str, value: Optional[float], scale: float = 1.0,
              suffix: str = "") -> Cell:
    shown = None if value is None else (value if scale == 1.0 else float(value) / scale)
    return Cell([Part(fmt_num(shown) + (suffix if shown is not None else ""), metric, model,
                      None if value is None else float(value))])


def _text_cell(text: str) -> Cell:
    return Cell([Part(text)])


# ------------------------------------------------------------------ the analysis


def _load_eval(artifacts_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    path = artifacts_dir / "eval.npz"
    if not path.is_file():
        raise ReportError(f"no evaluation set at {path}",
                          hint="pass --artifacts, the directory edgeq quantize wrote")
    try:
        with np.load(path) as data:
            return np.asarray(data["images"]), np.asarray(data["labels"]).astype(np.int64)
    except (KeyError, ValueError, OSError) as exc:
        raise ReportError(f"{path} is not an edgeq evaluation set ({exc})",
                          hint="re-create it with edgeq quantize") from exc


def _load_json(path: Path) -> Optional[dict[str, Any]]:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}", hint="re-create it") from exc
    return doc if isinstance(doc, dict) else None


def check_run(run: Any) -> None:
    """Raise ReportError unless `run` is an `edgeq.compare/1` document with both models."""
    if not isinstance(run, dict) or run.get("schema") != COMPARE_SCHEMA:
        got = run.get("schema") if isinstance(run, dict) else type(run).__name__
        raise ReportError(f"the run has schema {got!r}, expected {COMPARE_SCHEMA!r}",
                          hint="pass the JSON that edgeq bench-remote --json wrote, or a run id")
    for model in MODELS:
        if not isinstance(_get(run, "models", model), dict):
            raise ReportError(f"the run has no {model} model entry",
                              hint="pass a complete edgeq.compare/1 document")


def _predictions(entry: dict[str, Any]) -> Optional[np.ndarray]:
    preds = _get(entry, "result", "accuracy", "predictions")
    return None if preds is None else np.asarray(preds, dtype=np.int64)


def _latencies(entry: dict[str, Any]) -> np.ndarray:
    lat = entry.get("latencies_ms")
    if lat is None:
        lat = _get(entry, "result", "timing", "latencies_ms") or []
    return np.asarray(lat, dtype=np.float64)


def analyze(run: dict[str, Any], labels: Optional[np.ndarray]) -> dict[str, Any]:
    """The numbers of the report that are derived from the run (JSON-able).

    Checks that the predictions match the labels of the evaluation set (the `correct` count the
    device reported must be what the labels give), so a report never mixes two runs.
    """
    check_run(run)
    out: dict[str, Any] = {"models": {}, "mcnemar": None, "changed_indices": []}
    preds: dict[str, np.ndarray] = {}
    for model in MODELS:
        entry = run["models"][model]
        m: dict[str, Any] = {k.key: entry.get(k.key) for k in METRICS}
        m["runs"] = entry.get("runs")
        p = _predictions(entry)
        acc = _get(entry, "result", "accuracy") or {}
        if p is not None and labels is not None:
            if p.size > labels.size:
                raise ReportError(
                    f"{model} has {p.size} predictions but the evaluation set only "
                    f"{labels.size} labels",
                    hint="pass the --artifacts directory this run was measured with")
            y = labels[: p.size]
            correct = int(np.sum(p == y))
            if acc.get("correct") is not None and int(acc["correct"]) != correct:
                raise ReportError(
                    f"{model} predictions give {correct} correct with these labels, the device "
                    f"reported {acc['correct']}",
                    hint="pass the --artifacts directory this run was measured with")
            preds[model] = p
            m["count"], m["correct"] = int(p.size), correct
            m["accuracy_ci"] = list(stats.wilson_interval(correct, int(p.size), CONFIDENCE))
            m["per_class"] = [
                {"correct": c, "total": t,
                 "ci": list(stats.wilson_interval(c, t, CONFIDENCE)) if t else None}
                for c, t in stats.class_counts(p, y)
            ]
        elif acc.get("count") and acc.get("correct") is not None:
            m["count"], m["correct"] = int(acc["count"]), int(acc["correct"])
            m["accuracy_ci"] = list(stats.wilson_interval(m["correct"], m["count"], CONFIDENCE))
        m["per_class_top1"] = acc.get("per_class_top1")
        lat = _latencies(entry)
        m["latency_samples"] = int(lat.size)
        m["latency_ms_p50_ci"] = (list(stats.bootstrap_median_interval(
            lat, confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED))
            if lat.size else None)
        out["models"][model] = m
    lat_f, lat_q = _latencies(run["models"]["float32"]), _latencies(run["models"]["int8"])
    out["latency_ms_p50_ratio_ci"] = (list(stats.bootstrap_ratio_interval(
        lat_q, lat_f, confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED))
        if lat_f.size and lat_q.size else None)
    ratios = dict(run.get("ratios") or {})
    for k in METRICS:
        if ratios.get(k.key) is None:
            a, b = out["models"]["float32"].get(k.key), out["models"]["int8"].get(k.key)
            ratios[k.key] = float(b) / float(a) if a not in (None, 0) and b is not None else None
    out["ratios"] = {k.key: ratios.get(k.key) for k in METRICS}
    fa, qa = out["models"]["float32"].get("accuracy"), out["models"]["int8"].get("accuracy")
    out["accuracy_delta_pp"] = None if fa is None or qa is None else (qa - fa) * 100.0
    out["agreement"] = run.get("agreement")
    if "float32" in preds and "int8" in preds and labels is not None:
        pf, pq = preds["float32"], preds["int8"]
        if pf.size != pq.size:
            raise ReportError("the two models were evaluated on different numbers of images",
                              hint="run bench-remote again with one --eval-limit")
        y = labels[: pf.size]
        out["mcnemar"] = stats.mcnemar(pf, pq, y).to_dict()
        out["changed_indices"] = [int(i) for i in np.flatnonzero(pf != pq)]
        if out["agreement"] is None:
            out["agreement"] = float(np.mean(pf == pq))
    return out


# ------------------------------------------------------------------ per-layer analysis


@dataclass
class LayerAnalysis:
    """The per-layer part of the report, whatever produced it."""

    figures: list[Figure] = field(default_factory=list)
    tensor_rows: list[dict[str, Any]] = field(default_factory=list)
    error_rows: list[dict[str, Any]] = field(default_factory=list)
    weight_rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


#: ops that only move shapes around (their outputs are not analysed)
_SKIP_OPS = ("DELEGATE", "QUANTIZE", "DEQUANTIZE", "SHAPE", "STRIDED_SLICE", "PACK")
LAYER_IMAGES = 200
#: an activation range is "stretched by outliers" when the calibrated int8 range is this many
#: times wider than where the central 99.8 % of the observed float values lie
STRETCH_FLAG = 2.0


def _interpreter(path: Path) -> Any:
    """A TFLite interpreter that keeps every intermediate tensor (no delegate)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # pragma: no cover - the host extra installs ai-edge-litert
        import tensorflow as tf

        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp


def _feed(interp: Any, image: np.ndarray) -> None:
    d = interp.get_input_details()[0]
    x = image.astype(np.float32).reshape(d["shape"])
    if d["dtype"] in (np.int8, np.uint8):
        scale, zp = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale + zp), info.min, info.max)
    interp.set_tensor(d["index"], x.astype(d["dtype"]))
    interp.invoke()


def _op_keys(operators: Sequence[Any]) -> list[tuple[str, int]]:
    """(op name, n-th op of that name) for each op: how the float and int8 graphs are matched."""
    seen: dict[str, int] = {}
    out = []
    for op in operators:
        seen[op.name] = seen.get(op.name, 0) + 1
        out.append((op.name, seen[op.name]))
    return out


def layer_analysis(artifacts_dir: Path, *, max_weight_figures: int = 12,
                   images: Optional[np.ndarray] = None, debugger: bool = True) -> LayerAnalysis:
    """Per layer: weights vs the Min-Max range and int8 grid, activation ranges, outliers, error.

    - Quantization parameters, int8 weight tensors, the weight outlier rule and the per-layer
      error of TensorFlow's QuantizationDebugger come from edgeq.host.inspection.
    - The ops of the int8 and float32 graphs are matched by type and position, so each int8
      weight tensor is shown against the float32 weights it came from.
    - Both TFLite models are also run without delegates, every intermediate tensor kept, on up
      to LAYER_IMAGES evaluation images. For each int8 activation, the calibrated range
      [(-128 - zp) * s, (127 - zp) * s] is compared with the float values actually seen: its
      "stretch" is the range width over the width of the central 99.8 % of the values (above
      STRETCH_FLAG the range is set by outliers and the bulk gets less than half of the 256
      levels); its end-to-end error is the RMSE of the dequantized int8 output against the float
      output, in int8 steps (it accumulates through the graph, like the accuracy loss).
    """
    from edgeq.host import inspection, plots

    manifest = _load_json(artifacts_dir / "manifest.json") or {}
    files = {m: artifacts_dir / (_get(manifest, "models", m, "file") or f"model_{m}.tflite")
             for m in MODELS}
    for m, f in files.items():
        if not f.is_file():
            raise ReportError(f"no {m} model at {f}", hint="run edgeq quantize first")
    if images is None:
        images, _ = _load_eval(artifacts_dir)
    images = images[:LAYER_IMAGES]
    qf, ff = inspection.read_tflite(files["int8"]), inspection.read_tflite(files["float32"])
    f_ops = dict(zip(_op_keys(ff.operators), ff.operators))
    pairs = [(key, f_ops[key], qop) for key, qop in zip(_op_keys(qf.operators), qf.operators)
             if key in f_ops and qop.name not in _SKIP_OPS]
    if not pairs:
        raise ReportError("the float32 and int8 graphs have no op in common",
                          hint="re-create both models with edgeq quantize")
    figures: list[Figure] = []

    # -- weights: inspection's int8 tensors and outlier rule, float weights of the float32 model
    by_index = {w.index: w for w in inspection.weight_tensors(files["int8"], qf)}
    weight_rows: list[dict[str, Any]] = []
    for (name, nth), fop, qop in pairs:
        if len(qop.inputs) < 2 or qop.inputs[1] not in by_index or len(fop.inputs) < 2:
            continue
        wt = by_index[qop.inputs[1]]
        w = ff.buffer_array(ff.tensors[fop.inputs[1]])
        if w is None or w.shape != wt.values.shape:
            continue
        w = w.astype(np.float64)
        rep = inspection.weight_report(wt)
        label = f"{name.lower()}_{nth}"
        per_channel = len(wt.scales) > 1
        p999 = float(np.percentile(np.abs(w), inspection.OUTLIER_PERCENTILE))
        outlier_abs = inspection.OUTLIER_RATIO * p999
        n_out = int(np.sum(np.abs(w) > outlier_abs))
        err = wt.dequantized().astype(np.float64) - w
        weight_rows.append({
            "layer": label, "tensor": wt.name, "shape": "x".join(str(d) for d in w.shape),
            "granularity": f"per-channel ({len(wt.scales)})" if per_channel else "per-tensor",
            "w_min": float(w.min()), "w_max": float(w.max()),
            "scale_min": float(np.min(wt.scales)), "scale_max": float(np.max(wt.scales)),
            "outlier_ratio": rep["outlier_ratio"],
            "outlier": "yes" if rep["outlier"] else "no",
            "outlier_channels": f"{rep['outlier_channels']}/{len(rep['channels'])}",
            "codes_used": int(np.unique(wt.values).size),
            "rounding_rmse_lsb": float(np.sqrt(np.mean(err ** 2)) / float(np.mean(wt.scales))),
        })
        if sum(f.name.startswith("weights_") for f in figures) < max_weight_figures:
            figures.append(Figure(
                f"weights_{label}", f"Weights of {label}",
                f"{wt.name} ({'x'.join(str(d) for d in w.shape)}, "
                f"{'per-channel' if per_channel else 'per-tensor'}). Left: the float32 weights "
                "on the int8 grid of the widest channel (one bar per code) and the Min-Max range; "
                f"{n_out} weights above {inspection.OUTLIER_RATIO:g} x P{inspection.OUTLIER_PERCENTILE:g}"
                "(|w|) marked as outliers. Middle: each output channel's range and its int8 "
                "range; orange: channels with outliers. Right: the int8 codes used.",
                plots.layer_weights(label, w, wt.scales, wt.zero_points,
                                    axis=wt.quantized_dimension if per_channel else None,
                                    quantized=wt.values, outlier_abs=outlier_abs,
                                    channel_flags=[c["outlier"] for c in rep["channels"]])))

    # -- activations: inspection's quantization parameters, values seen at run time
    fi, qi = _interpreter(files["float32"]), _interpreter(files["int8"])
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
    for img in images:
        _feed(fi, img)
        _feed(qi, img)
        for a in acts:
            fv = fi.get_tensor(a["f"]).astype(np.float64).ravel()
            qv = (qi.get_tensor(a["q"]).astype(np.float64).ravel() - a["zero_point"]) * a["scale"]
            a["fvals"].append(fv)
            a["err2"] += float(np.sum((qv - fv) ** 2))
            a["n"] += fv.size
    tensor_rows: list[dict[str, Any]] = []
    act_items: list[dict[str, Any]] = []
    for a in acts:
        fv = np.concatenate(a["fvals"]) if a["fvals"] else np.zeros(1)
        lo, hi = a["range_min"], a["range_max"]
        p_lo, p_hi = (float(v) for v in np.quantile(fv, [0.001, 0.999]))
        stretch = (hi - lo) / (p_hi - p_lo) if p_hi > p_lo else float("inf")
        clipped = float(np.mean((fv < lo - a["scale"] / 2) | (fv > hi + a["scale"] / 2)))
        rmse = math.sqrt(a["err2"] / a["n"]) if a["n"] else float("nan")
        outlier = bool(stretch > STRETCH_FLAG)
        tensor_rows.append({
            "layer": a["label"], "tensor": a["tensor"], "scale": a["scale"],
            "zero_point": a["zero_point"], "range_min": lo, "range_max": hi,
            "seen_p0.1": p_lo, "seen_p99.9": p_hi, "seen_min": float(fv.min()),
            "seen_max": float(fv.max()), "stretch": stretch, "clipped_pct": 100.0 * clipped,
            "e2e_rmse_lsb": rmse / a["scale"], "outlier": "yes" if outlier else "no"})
        act_items.append({"name": a["label"], "min": lo, "max": hi, "scale": a["scale"],
                          "outlier": outlier, "p_lo": p_lo, "p_hi": p_hi})
    if act_items:
        figures.append(Figure(
            "activations", "Activation ranges from calibration",
            "The real range each int8 activation covers, set by Min-Max calibration "
            f"(bars), and the central 99.8 % of the float values seen on {len(images)} "
            f"evaluation images (black). Orange: the range is more than {STRETCH_FLAG:g}x wider "
            "than that bulk, i.e. stretched by outliers.",
            plots.activation_ranges(act_items)))

    # -- per-layer error: QuantizationDebugger (isolated per layer) + end-to-end from the run
    debug_layers: list[dict[str, Any]] = []
    debug_note = ""
    if debugger and (artifacts_dir / "model.keras").is_file():
        cal = manifest.get("calibration") or {}
        try:
            debug = inspection.quantization_error(
                artifacts_dir / "model.keras", calibration_size=int(cal.get("size") or 100),
                seed=int(cal.get("seed") or 0), per_channel=bool(cal.get("per_channel", True)))
            debug_layers = list(debug.get("layers") or [])
        except EdgeqError as exc:
            debug_note = f" QuantizationDebugger: not available ({exc.message})."
    e2e = {r["tensor"]: r["e2e_rmse_lsb"] for r in tensor_rows}
    error_rows: list[dict[str, Any]] = []
    if debug_layers:
        for layer in debug_layers:
            error_rows.append({
                "op": layer.get("op"), "tensor": _short_name(str(layer.get("tensor"))),
                "scale": layer.get("scale"), "rmse": layer.get("rmse"),
                "rmse_per_scale": layer.get("rmse_per_scale"),
                "max_abs_error": layer.get("max_abs_error"),
                "e2e_rmse_lsb": e2e.get(str(layer.get("tensor")))})
        names = [f"{r['op']} {r['tensor']}" for r in error_rows]
        figures.append(Figure(
            "layer_errors", "Per-layer quantization error",
            "Bars: RMSE / scale of each quantized layer alone (TensorFlow's QuantizationDebugger, "
            "float and int8 op on the same inputs; 0.29 = 1/sqrt(12) is pure rounding, more means "
            "clipping or outliers). Dots: the end-to-end RMSE of the int8 graph at that layer, in "
            f"int8 steps, on {len(images)} evaluation images.",
            plots.layer_errors(names, [float(r["rmse_per_scale"] or 0.0) for r in error_rows],
                               metric="RMSE / scale (QuantizationDebugger)",
                               secondary=[float("nan") if r["e2e_rmse_lsb"] is None
                                          else r["e2e_rmse_lsb"] for r in error_rows],
                               secondary_label="end-to-end RMSE (int8 steps)")))
    elif tensor_rows:
        error_rows = [{"layer": r["layer"], "tensor": _short_name(r["tensor"]),
                       "e2e_rmse_lsb": r["e2e_rmse_lsb"]} for r in tensor_rows]
        figures.append(Figure(
            "layer_errors", "Per-layer quantization error",
            f"End-to-end RMSE of each int8 layer output against float32, in int8 steps, on "
            f"{len(images)} evaluation images." + debug_note,
            plots.layer_errors([r["layer"] for r in tensor_rows],
                               [r["e2e_rmse_lsb"] for r in tensor_rows],
                               metric="end-to-end RMSE (int8 steps)")))
    return LayerAnalysis(
        figures=figures, tensor_rows=tensor_rows, error_rows=error_rows, weight_rows=weight_rows,
        note=("Weights: int8 tensors, scales and the outlier rule from edgeq inspect "
              f"(max|w| > {inspection.OUTLIER_RATIO:g} x P{inspection.OUTLIER_PERCENTILE:g}(|w|)). "
              f"Activations: both models run without delegates on {len(images)} evaluation "
              "images; stretch = calibrated range / width of the central 99.8 % of the values "
              f"seen, flagged above {STRETCH_FLAG:g}." + debug_note))


def _short_name(name: str, width: int = 60) -> str:
    """TFLite tensor names can be long ';'-joined lists: keep the last part."""
    last = name.split(";")[-1]
    return last if len(last) <= width else "..." + last[-(width - 3):]


# ------------------------------------------------------------------ figures


def run_figures(run: dict[str, Any], summary: dict[str, Any],
                images: Optional[np.ndarray], labels: Optional[np.ndarray]) -> list[Figure]:
    """The figures that come from the run itself (latency, per-class, changed images)."""
    from edgeq.host import plots

    figs: list[Figure] = []
    lat = {m: _latencies(run["models"][m]) for m in MODELS}
    cis = {m: tuple(summary["models"][m]["latency_ms_p50_ci"]) for m in MODELS
           if summary["models"][m].get("latency_ms_p50_ci")}
    if any(v.size for v in lat.values()):
        figs.append(Figure(
            "latency", "Latency distributions",
            "Every timed batch-1 inference of both models on the device (ECDF above, histogram "
            "below). Dashed: the median; band: its percentile-bootstrap 95% interval.",
            plots.latency_ecdf(lat, cis)))
    per_class = {m: summary["models"][m].get("per_class_top1") for m in MODELS}
    if all(per_class.values()):
        intervals = None
        if all(summary["models"][m].get("per_class") for m in MODELS):
            intervals = {m: [tuple(c["ci"]) if c["ci"] else (0.0, 1.0)
                             for c in summary["models"][m]["per_class"]] for m in MODELS}
        figs.append(Figure(
            "per_class", "Per-class top-1",
            "Top-1 per digit for both models, with Wilson 95% intervals.",
            plots.per_class_accuracy(per_class, intervals)))
    changed = summary.get("changed_indices") or []
    if images is not None and labels is not None and summary.get("mcnemar"):
        pf = _predictions(run["models"]["float32"])
        pq = _predictions(run["models"]["int8"])
        assert pf is not None and pq is not None
        shown = changed[:MAX_GALLERY]
        more = f" (the first {len(shown)} of {len(changed)})" if len(changed) > len(shown) else ""
        figs.append(Figure(
            "changed", "Images whose prediction int8 changed",
            f"{len(changed)} images{more}: label y, float32 prediction f, int8 prediction q. "
            "Green: int8 is right, red: int8 broke a right float32 answer, grey: both wrong.",
            plots.changed_gallery(images, labels, pf, pq, shown)))
    return figs


def sweep_figure(sweep: dict[str, Any]) -> Optional[Figure]:
    from edgeq.host import plots

    points = sweep.get("points") or []
    if not points:
        return None
    return Figure("sweep", "Calibration-set size and granularity",
                  "int8 top-1 after re-quantizing the same Keras model with each calibration-set "
                  "size and per-channel / per-tensor weights; dashed: float32.",
                  plots.sweep_accuracy(points))


# ------------------------------------------------------------------ tables


def comparison_rows(summary: dict[str, Any]) -> list[tuple[str, str, Cell, Cell, Cell]]:
    """(label, key, float32 cell, int8 cell, int8/float32 cell) of the side-by-side table."""
    rows: list[tuple[str, str, Cell, Cell, Cell]] = []
    f32, i8 = summary["models"]["float32"], summary["models"]["int8"]
    rat = summary["ratios"]
    pct = 0.01
    for k in METRICS:
        ratio = _num_cell(k.key, "ratio", rat.get(k.key), suffix="x")
        if k.key == "accuracy":
            delta = summary.get("accuracy_delta_pp")
            if delta is not None:
                ratio.parts.append(Part(f"({delta:+.2f} pp)", "accuracy_delta_pp", "ratio", delta))
        rows.append((k.label, k.key, _num_cell(k.key, "float32", f32.get(k.key), k.scale),
                     _num_cell(k.key, "int8", i8.get(k.key), k.scale), ratio))
        if k.key == "accuracy":
            cells = []
            for m, e in (("float32", f32), ("int8", i8)):
                ci = e.get("accuracy_ci")
                cells.append(Cell([
                    Part(fmt_num(ci[0] / pct), "accuracy_ci_low", m, ci[0]),
                    Part("–"),
                    Part(fmt_num(ci[1] / pct), "accuracy_ci_high", m, ci[1])]) if ci
                    else _text_cell("n/a"))
            rows.append(("Top-1 95% CI (%, Wilson)", "accuracy_ci", cells[0], cells[1],
                         _text_cell("")))
            rows.append(("Float/int8 agreement (%)", "agreement", _text_cell(""), _text_cell(""),
                         _num_cell("agreement", "both", summary.get("agreement"), pct)))
            rows.append(("Evaluated images", "count", _num_cell("count", "float32", f32.get("count")),
                         _num_cell("count", "int8", i8.get("count")), _text_cell("")))
        if k.key == "latency_ms_p50":
            cells = []
            for m, e in (("float32", f32), ("int8", i8)):
                ci = e.get("latency_ms_p50_ci")
                cells.append(Cell([
                    Part(fmt_num(ci[0]), "latency_ms_p50_ci_low", m, ci[0]), Part("–"),
                    Part(fmt_num(ci[1]), "latency_ms_p50_ci_high", m, ci[1])]) if ci
                    else _text_cell("n/a"))
            rci = summary.get("latency_ms_p50_ratio_ci")
            ratio = (Cell([Part(fmt_num(rci[0]), "latency_ms_p50_ci_low", "ratio", rci[0]),
                           Part("–"),
                           Part(fmt_num(rci[1]), "latency_ms_p50_ci_high", "ratio", rci[1])])
                     if rci else _text_cell("n/a"))
            rows.append(("Latency p50 95% CI (ms, bootstrap)", "latency_ms_p50_ci",
                         cells[0], cells[1], ratio))
    rows.append(("Timed runs", "runs", _num_cell("runs", "float32", f32.get("runs")),
                 _num_cell("runs", "int8", i8.get("runs")), _text_cell("")))
    return rows


def mcnemar_sentence(mc: Optional[dict[str, Any]]) -> str:
    if not mc:
        return "McNemar's test: not available (no predictions in the run)."
    method = {"exact-binomial": "exact binomial test (b + c < 25)",
              "chi2-cc": "chi-square with continuity correction",
              "none": "no discordant pairs"}[mc["method"]]
    verdict = ("the accuracy difference IS significant at alpha = 0.05"
               if mc["p_value"] < 0.05 else
               "the accuracy difference is NOT significant at alpha = 0.05")
    return (f"McNemar's test on {mc['n']} paired images: float32 right/int8 wrong b = "
            f"{mc['a_only']}, float32 wrong/int8 right c = {mc['b_only']}, "
            f"p = {fmt_num(mc['p_value'])} ({method}): {verdict}.")


def mcnemar_cells(mc: Optional[dict[str, Any]]) -> list[tuple[str, Cell]]:
    if not mc:
        return []
    return [
        ("both right", _num_cell("mcnemar_both_correct", "both", mc["both_correct"])),
        ("float32 right, int8 wrong (b)", _num_cell("mcnemar_b", "both", mc["a_only"])),
        ("float32 wrong, int8 right (c)", _num_cell("mcnemar_c", "both", mc["b_only"])),
        ("both wrong", _num_cell("mcnemar_both_wrong", "both", mc["both_wrong"])),
        ("test", _text_cell(mc["method"])),
        ("statistic", _num_cell("mcnemar_statistic", "both", mc["statistic"])),
        ("p-value", _num_cell("mcnemar_p_value", "both", mc["p_value"])),
        ("significant at 0.05", _text_cell("yes" if mc["p_value"] < 0.05 else "no")),
    ]


def environment_rows(run: dict[str, Any], manifest: Optional[dict[str, Any]]) -> list[tuple[str, str]]:
    """The environment block: the device, its runtime and settings, and the versions."""
    from edgeq.host.compare import environment_rows as compare_env_rows

    rows = list(compare_env_rows(run))
    res = _get(run, "models", "int8", "result") or {}
    rows.append(("batch size (throughput)", str(_get(res, "settings", "batch_size") or "?")))
    rows.append(("edgeq (device / report)", f"{res.get('edgeq_version', '?')} / {__version__}"))
    if manifest:
        cal = manifest.get("calibration") or {}
        rows.append(("TensorFlow (converter)", str(manifest.get("tensorflow_version", "?"))))
        rows.append(("calibration", f"{cal.get('size', '?')} images, seed {cal.get('seed', '?')}, "
                                    f"{'per-channel' if cal.get('per_channel', True) else 'per-tensor'}"
                                    " weights"))
        rows.append(("model", str(manifest.get("model_name", "?"))))
    for m in MODELS:
        rows.append((f"{m} sha256", str(_get(run, "models", m, "sha256") or "?")))
    rows.append(("run", f"{run.get('run_id') if run.get('run_id') is not None else '(not stored)'}"
                        f" at {run.get('time_utc', '?')}"))
    return rows


def sweep_rows(sweep: dict[str, Any]) -> list[tuple[Cell, ...]]:
    out: list[tuple[Cell, ...]] = []
    for p in sorted(sweep.get("points") or [],
                    key=lambda p: (str(p.get("granularity")), int(p.get("calibration_size", 0)))):
        tag = f"{p.get('granularity')}@{p.get('calibration_size')}"
        out.append((
            _text_cell(str(p.get("granularity"))),
            _num_cell("sweep_calibration_size", tag, p.get("calibration_size")),
            _num_cell("sweep_int8_top1", tag, p.get("int8_top1"), 0.01),
            _num_cell("sweep_float32_top1", tag, p.get("float32_top1"), 0.01),
            _num_cell("sweep_agreement", tag, p.get("agreement"), 0.01),
            _num_cell("sweep_int8_size_bytes", tag, p.get("int8_size_bytes"), 1024.0),
        ))
    return out


SWEEP_HEADER = ("weights", "calibration images", "int8 top-1 (%)", "float32 top-1 (%)",
                "agreement (%)", "int8 size (KB)")


# ------------------------------------------------------------------ rendering

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3;text-align:left}td[data-value],td span[data-value]{font-variant-numeric:tabular-nums}
td.num{text-align:right}code{background:#f3f3f3;padding:0 .2em}
.emulated{background:#b00020;color:#fff;font-weight:bold;font-size:1.3em;padding:.8em 1em;
border-radius:4px;margin:1em 0}
.sig{font-weight:bold}.note{color:#666;font-size:.9em}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.scroll{overflow-x:auto;max-width:100%}td{overflow-wrap:anywhere}
"""


def _emulated_text(run: dict[str, Any]) -> Optional[str]:
    dev = run.get("device") or {}
    if not dev.get("emulated"):
        return None
    return (f"EMULATED: measured on {dev.get('emulator') or 'an emulator'}, not a real board. "
            "Latency, throughput and init times are NOT the hardware's; sizes and accuracy are.")


def _img(fig: Figure) -> str:
    b64 = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure id="fig-{html.escape(fig.name)}"><img alt="{html.escape(fig.title)}" '
            f'src="data:image/png;base64,{b64}"><figcaption><b>{html.escape(fig.title)}.</b> '
            f"{html.escape(fig.caption)}</figcaption></figure>")


def _title(run: dict[str, Any], manifest: Optional[dict[str, Any]]) -> str:
    model = (manifest or {}).get("model_name") or "model"
    rid = run.get("run_id")
    return (f"edgeq report: {model}, float32 vs int8 on {run.get('host', '?')}"
            + (f" (run {rid})" if rid is not None else ""))


def render_html(run: dict[str, Any], summary: dict[str, Any], manifest: Optional[dict[str, Any]],
                figures: Sequence[Figure], layers: Optional[LayerAnalysis],
                sweep: Optional[dict[str, Any]], sweep_fig: Optional[Figure]) -> str:
    e = html.escape
    out: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(_title(run, manifest))}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(_title(run, manifest))}</h1>",
        f'<p class="note">measured {e(str(run.get("time_utc", "?")))}; report generated '
        f'{e(summary["generated_utc"])} by edgeq {e(__version__)}</p>',
    ]
    emu = _emulated_text(run)
    if emu:
        out.append(f'<div class="emulated" id="emulated">{e(emu)}</div>')
    out.append('<h2 id="table">float32 vs int8</h2><table id="comparison"><thead><tr>'
               "<th>metric</th><th>key</th><th>float32</th><th>int8</th><th>int8 / float32</th>"
               "</tr></thead><tbody>")
    for label, key, a, b, r in comparison_rows(summary):
        out.append(f"<tr><th>{e(label)}</th><td><code>{e(key)}</code></td>"
                   f"{a.html(attrs=_NUM)}{b.html(attrs=_NUM)}"
                   f"{r.html(attrs=_NUM)}</tr>")
    out.append("</tbody></table>")
    mc = summary.get("mcnemar")
    cls = ' class="sig"' if mc and mc["p_value"] < 0.05 else ""
    out.append(f'<p id="mcnemar-verdict"{cls}>{e(mcnemar_sentence(mc))}</p>')
    if mc:
        out.append('<table id="mcnemar">')
        for label, cell in mcnemar_cells(mc):
            out.append(f"<tr><th>{e(label)}</th>{cell.html(attrs=_NUM)}</tr>")
        out.append("</table>")
    out.append('<p class="note">Top-1 intervals: Wilson score, 95%. Latency-median intervals: '
               f"percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; "
               "the int8/float32 interval resamples both models independently. KB = 1024 bytes, "
               "MiB = 1024² bytes.</p>")
    out.append('<h2 id="environment">Environment</h2><table id="env">')
    for k, v in environment_rows(run, manifest):
        emph = ' class="sig"' if k == "emulated" and emu else ""
        out.append(f"<tr><th>{e(k)}</th><td{emph}>{e(v)}</td></tr>")
    out.append("</table>")
    out.append('<h2 id="figures">Figures</h2>')
    out.extend(_img(f) for f in figures)
    out.append('<h2 id="layers">Per-layer analysis: where accuracy goes</h2>')
    if layers is None or (not layers.figures and not layers.tensor_rows):
        out.append(f'<p class="note">{e(layers.note if layers else "not computed")}</p>')
    else:
        if layers.note:
            out.append(f'<p class="note">{e(layers.note)}</p>')
        out.extend(_img(f) for f in layers.figures)
        if layers.weight_rows:
            out.append("<h3>Weights per layer</h3>")
            out.append(_dict_table("weights", layers.weight_rows))
        if layers.tensor_rows:
            out.append("<h3>Activations per layer: int8 range, values seen, error</h3>")
            out.append(_dict_table("activations", layers.tensor_rows))
        if layers.error_rows:
            out.append("<h3>Per-layer quantization error</h3>")
            out.append(_dict_table("layer-errors", layers.error_rows))
    if sweep:
        out.append('<h2 id="sweep">Sweep: calibration-set size and granularity</h2>')
        out.append('<table id="sweep-table"><thead><tr>'
                   + "".join(f"<th>{e(h)}</th>" for h in SWEEP_HEADER) + "</tr></thead><tbody>")
        for row in sweep_rows(sweep):
            out.append("<tr>" + "".join(c.html(attrs=' class="num"') for c in row) + "</tr>")
        out.append("</tbody></table>")
        out.append(f'<p class="note">{e(_sweep_note(sweep))}</p>')
        if sweep_fig:
            out.append(_img(sweep_fig))
    out.append('<h2 id="reproduce">Reproduce</h2><pre>'
               + e(reproduce_text(run)) + "</pre>")
    data = json.dumps(_embedded(run, summary, sweep), sort_keys=True).replace("</", "<\\/")
    out.append(f'<script type="application/json" id="edgeq-report-data">{data}</script>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _sweep_note(sweep: dict[str, Any]) -> str:
    return (f"Re-quantized on the host ({sweep.get('runtime', 'LiteRT')}), evaluated on "
            f"{sweep.get('eval_count', '?')} images; calibration images drawn with seed "
            f"{sweep.get('seed', '?')}; created {sweep.get('created_utc', '?')}.")


def _dict_table(table_id: str, rows: Sequence[dict[str, Any]]) -> str:
    e = html.escape
    cols = list(rows[0])
    out = [f'<div class="scroll"><table id="{e(table_id)}"><thead><tr>'
           + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                cells.append(f'<td class="num" data-metric="{e(table_id)}.{e(c)}" '
                             f'data-model="{e(str(r.get(cols[0])))}" data-value="{v!r}">'
                             f"{e(fmt_num(v))}</td>")
            else:
                cells.append(f"<td>{e('' if v is None else str(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _md_dict_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(
            fmt_num(v) if isinstance(v, float) else ("" if v is None else str(v).replace("|", "\\|"))
            for v in (r.get(c) for c in cols)) + " |")
    return out


def render_markdown(run: dict[str, Any], summary: dict[str, Any],
                    manifest: Optional[dict[str, Any]], figure_files: Sequence[tuple[Figure, str]],
                    layers: Optional[LayerAnalysis], sweep: Optional[dict[str, Any]]) -> str:
    out: list[str] = [f"# {_title(run, manifest)}", ""]
    emu = _emulated_text(run)
    if emu:
        out += [f"> **{emu}**", ""]
    out += [f"Measured {run.get('time_utc', '?')}; generated {summary['generated_utc']} by "
            f"edgeq {__version__}.", "",
            "| metric | key | float32 | int8 | int8 / float32 |",
            "|---|---|---:|---:|---:|"]
    for label, key, a, b, r in comparison_rows(summary):
        out.append(f"| {label} | `{key}` | {a.markdown()} | {b.markdown()} | {r.markdown()} |")
    out += ["", mcnemar_sentence(summary.get("mcnemar")), "",
            f"Top-1 intervals: Wilson score 95%. Latency-median intervals: percentile bootstrap, "
            f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}. KB = 1024 bytes.", "",
            "## Environment", "", "| | |", "|---|---|"]
    for k, v in environment_rows(run, manifest):
        v = v.replace("|", "\\|")
        out.append(f"| {k} | **{v}** |" if k == "emulated" and emu else f"| {k} | {v} |")
    out += ["", "## Figures", ""]
    for fig, rel in figure_files:
        out += [f"### {fig.title}", "", f"![{fig.title}]({rel})", "", fig.caption, ""]
    if layers is not None and (layers.error_rows or layers.tensor_rows or layers.note):
        out += ["## Per-layer analysis", ""]
        if layers.weight_rows:
            out += ["Weights:", ""] + _md_dict_table(
                [{k: v for k, v in r.items() if k != "tensor"} for r in layers.weight_rows]) + [""]
        if layers.tensor_rows:
            out += ["Activations:", ""] + _md_dict_table(
                [{k: v for k, v in r.items() if k != "tensor"} for r in layers.tensor_rows]) + [""]
        if layers.error_rows:
            out += ["Per-layer error:", ""] + _md_dict_table(layers.error_rows) + [""]
        if layers.note:
            out += [layers.note, ""]
    if sweep:
        out += ["## Sweep: calibration-set size and granularity", "",
                "| " + " | ".join(SWEEP_HEADER) + " |", "|---|" + "---:|" * (len(SWEEP_HEADER) - 1)]
        for row in sweep_rows(sweep):
            out.append("| " + " | ".join(c.markdown() for c in row) + " |")
        out += ["", _sweep_note(sweep), ""]
    out += ["## Reproduce", "", "```", reproduce_text(run), "```", ""]
    return "\n".join(out)


def reproduce_text(run: dict[str, Any]) -> str:
    settings = run.get("settings") or {}
    rid = run.get("run_id")
    lines = [f"# measured with: edgeq bench-remote --host {run.get('host', 'HOST')} "
             f"--threads {settings.get('threads', 1)}"
             + ("" if settings.get("xnnpack", True) else " --no-xnnpack")]
    lines.append(f"edgeq report {rid}" if rid is not None
                 else f"edgeq report --result RUN.json --artifacts {run.get('artifacts_dir') or 'DIR'}")
    return "\n".join(lines)


def _embedded(run: dict[str, Any], summary: dict[str, Any],
              sweep: Optional[dict[str, Any]]) -> dict[str, Any]:
    small = {k: v for k, v in summary.items() if k != "changed_indices"}
    small["changed_count"] = len(summary.get("changed_indices") or [])
    return {"schema": REPORT_SCHEMA, "run_id": run.get("run_id"), "time_utc": run.get("time_utc"),
            "host": run.get("host"), "summary": small,
            "sweep_points": (sweep or {}).get("points")}


# ------------------------------------------------------------------ parsing back


class _MetricParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[tuple[str, str], float] = {}
        self.img_srcs: list[str] = []
        self.resource_urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if a.get("data-metric") and a.get("data-value"):
            self.metrics[(a["data-metric"] or "", a.get("data-model") or "")] = float(
                a["data-value"] or "nan")
        if tag == "img":
            self.img_srcs.append(a.get("src") or "")
        for name in ("src", "href", "data", "poster", "action"):
            if a.get(name):
                self.resource_urls.append(a[name] or "")


def parse_html_metrics(text: str) -> dict[tuple[str, str], float]:
    """{(metric, model): value} of every machine-readable number of a report page."""
    p = _MetricParser()
    p.feed(text)
    return p.metrics


def html_resources(text: str) -> tuple[list[str], list[str]]:
    """(img src values, every src/href/data/... attribute value) of a report page."""
    p = _MetricParser()
    p.feed(text)
    return p.img_srcs, p.resource_urls


# ------------------------------------------------------------------ the entry point


def build_report(
    run: dict[str, Any],
    *,
    artifacts_dir: Path,
    out_dir: Path,
    sweep: Optional[dict[str, Any]] = None,
    progress: Optional[ProgressCallback] = None,
    layers: bool = True,
) -> ReportPaths:
    """Write OUT/report.html (self-contained), OUT/report.md and OUT/figures/*.png for `run`.

    `sweep` defaults to ARTIFACTS/sweep.json when that file exists. `layers=False` leaves out
    the per-layer analysis (it needs TensorFlow and takes a few seconds).
    """
    check_run(run)
    artifacts_dir = Path(artifacts_dir)
    out_dir = Path(out_dir)
    total = 5
    step = 0

    def tick() -> None:
        nonlocal step
        step += 1
        if progress:
            progress(step, total)

    if not artifacts_dir.is_dir():
        raise ReportError(f"artifacts directory {artifacts_dir} does not exist",
                          hint="pass --artifacts, the directory edgeq train/quantize wrote")
    manifest = _load_json(artifacts_dir / "manifest.json")
    if manifest:
        for m in MODELS:
            want = _get(manifest, "models", m, "sha256")
            got = _get(run, "models", m, "sha256")
            if want and got and want != got:
                raise ReportError(
                    f"the run's {m} model ({got[:12]}) is not the one in {artifacts_dir} "
                    f"({want[:12]})",
                    hint="pass the --artifacts directory this run was measured with")
    images, labels = _load_eval(artifacts_dir)
    if sweep is None:
        from edgeq.host.sweep import load_sweep

        sweep = load_sweep(artifacts_dir)
    summary = analyze(run, labels)
    summary["generated_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    tick()
    figures = run_figures(run, summary, images, labels)
    tick()
    la: Optional[LayerAnalysis] = None
    if layers:
        try:
            la = layer_analysis(artifacts_dir, images=images)
        except EdgeqError as exc:
            logger.warning("per-layer analysis failed: %s", exc)
            la = LayerAnalysis(note=f"per-layer analysis not available: {exc.message}")
        except (ValueError, RuntimeError, OSError) as exc:
            # the interpreter or converter choked on a model: the rest of the report still holds
            logger.warning("per-layer analysis failed: %s: %s", type(exc).__name__, exc)
            la = LayerAnalysis(note=f"per-layer analysis not available: {type(exc).__name__}: "
                                    f"{exc}")
    else:
        la = LayerAnalysis(note="per-layer analysis left out (--no-layers)")
    tick()
    sfig = sweep_figure(sweep) if sweep else None
    all_figs = list(figures) + (list(la.figures) if la else []) + ([sfig] if sfig else [])
    fig_dir = out_dir / "figures"
    written: list[Path] = []
    rels: list[tuple[Figure, str]] = []
    for fig in all_figs:
        path = fig_dir / f"{fig.name}.png"
        atomic_write_bytes(path, fig.png, mode=None)  # a report is meant to be shared
        written.append(path)
        rels.append((fig, f"figures/{fig.name}.png"))
    tick()
    html_path = out_dir / "report.html"
    md_path = out_dir / "report.md"
    html_doc = render_html(run, summary, manifest, figures, la, sweep, sfig)
    atomic_write_bytes(html_path, html_doc.encode("utf-8"), mode=None)
    md_doc = render_markdown(run, summary, manifest, rels, la, sweep)
    atomic_write_bytes(md_path, md_doc.encode("utf-8"), mode=None)
    tick()
    logger.info("report written to %s", html_path)
    return ReportPaths(out_dir=out_dir, html=html_path, markdown=md_path, figures=tuple(written))
