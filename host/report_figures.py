"""The report's figures: which ones it shows, with their titles and captions.

Each function takes what another module computed (the run and edgeq.host.stats' summary of it,
edgeq.host.inspection's LayerAnalysis, the sweep document) and has edgeq.host.plots draw it.
Nothing here measures, runs a model or re-derives a rule.
Imports: standard library, numpy, edgeq.host.{artifacts, stats}; edgeq.host.plots (matplotlib)
lazily; edgeq.host.inspection only for type checking.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
from edgeq.host.artifacts import MODEL_KINDS
from edgeq.host.stats import run_latencies, run_predictions

if TYPE_CHECKING:  # pragma: no cover
    from edgeq.host.inspection import LayerAnalysis

#: at most this many changed images in the gallery, and weight figures in the layer section
MAX_GALLERY = 32
MAX_WEIGHT_FIGURES = 12


@dataclass(frozen=True)
class Figure:
    """One figure of the report."""

    name: str  # file stem under figures/
    title: str
    caption: str
    png: bytes


def run_figures(run: dict[str, Any], summary: dict[str, Any],
                images: Optional[np.ndarray], labels: Optional[np.ndarray],
                class_names: Optional[Sequence[str]] = None) -> list[Figure]:
    """The figures that come from the run itself (latency, per-class, changed images), with
    the classes named by `class_names` (the manifest's; else their indices)."""
    from edgeq.host import plots

    figs: list[Figure] = []
    models = summary["models"]
    lat = {m: run_latencies(run["models"][m]) for m in MODEL_KINDS}
    cis = {m: tuple(models[m]["latency_ms_p50_ci"]) for m in MODEL_KINDS
           if models[m].get("latency_ms_p50_ci")}
    if any(v.size for v in lat.values()):
        figs.append(Figure(
            "latency", "Latency distributions",
            "Every timed batch-1 inference of both models on the device (ECDF above, histogram "
            "below). Dashed: the median; band: its percentile-bootstrap 95% interval.",
            plots.latency_ecdf(lat, cis)))
    per_class = {m: models[m].get("per_class_top1") for m in MODEL_KINDS}
    if all(per_class.values()):
        intervals = None
        if all(models[m].get("per_class") for m in MODEL_KINDS):
            intervals = {m: [tuple(c["ci"]) if c["ci"] else (0.0, 1.0)
                             for c in models[m]["per_class"]] for m in MODEL_KINDS}
        figs.append(Figure(
            "per_class", "Per-class top-1",
            f"Top-1 per class ({len(next(iter(per_class.values())))} classes) for both models, "
            "with Wilson 95% intervals.",
            plots.per_class_accuracy(per_class, intervals, class_names)))
    changed = summary.get("changed_indices") or []
    if images is not None and labels is not None and summary.get("mcnemar"):
        pf = run_predictions(run["models"]["float32"])
        pq = run_predictions(run["models"]["int8"])
        assert pf is not None and pq is not None
        shown = changed[:MAX_GALLERY]
        more = f" (the first {len(shown)} of {len(changed)})" if len(changed) > len(shown) else ""
        figs.append(Figure(
            "changed", "Images whose prediction int8 changed",
            f"{len(changed)} images{more}: label y, float32 prediction f, int8 prediction q. "
            "Green: int8 is right, red: int8 broke a right float32 answer, grey: both wrong.",
            plots.changed_gallery(images, labels, pf, pq, shown, class_names=class_names)))
    return figs


def layer_figures(layers: LayerAnalysis, *,
                  max_weight_figures: int = MAX_WEIGHT_FIGURES) -> list[Figure]:
    """Weights per layer (the first `max_weight_figures`), activation ranges, per-layer error."""
    from edgeq.host import plots
    from edgeq.host.inspection import OUTLIER_PERCENTILE, OUTLIER_RATIO, STRETCH_FLAG

    figs: list[Figure] = []
    for wl in layers.weights[:max_weight_figures]:
        wt, w = wl.weight, wl.float_values
        per_channel = len(wt.scales) > 1
        figs.append(Figure(
            f"weights_{wl.label}", f"Weights of {wl.label}",
            f"{wt.name} ({'x'.join(str(d) for d in w.shape)}, "
            f"{'per-channel' if per_channel else 'per-tensor'}). Left: the float32 weights "
            "on the int8 grid of the widest channel (one bar per code) and the Min-Max range; "
            f"{wl.outliers} weights above {OUTLIER_RATIO:g} x P{OUTLIER_PERCENTILE:g}"
            "(|w|) marked as outliers. Middle: each output channel's range and its int8 "
            "range; orange: channels with outliers. Right: the int8 codes used.",
            plots.layer_weights(wl.label, w, wt.scales, wt.zero_points,
                                axis=wt.quantized_dimension if per_channel else None,
                                quantized=wt.values, outlier_abs=wl.outlier_abs,
                                channel_flags=[c["outlier"] for c in wl.report["channels"]])))
    n = layers.image_count
    if layers.activation_ranges:
        figs.append(Figure(
            "activations", "Activation ranges from calibration",
            "The real range each int8 activation covers, set by Min-Max calibration "
            f"(bars), and the central 99.8 % of the float values seen on {n} "
            f"evaluation images (black). Orange: the range is more than {STRETCH_FLAG:g}x wider "
            "than that bulk, i.e. stretched by outliers.",
            plots.activation_ranges(layers.activation_ranges)))
    rows = layers.error_rows
    if layers.error_source == "debugger":
        figs.append(Figure(
            "layer_errors", "Per-layer quantization error",
            "Bars: RMSE / scale of each quantized layer alone (TensorFlow's QuantizationDebugger, "
            "float and int8 op on the same inputs; 0.29 = 1/sqrt(12) is pure rounding, more means "
            "clipping or outliers). Dots: the end-to-end RMSE of the int8 graph at that layer, in "
            f"int8 steps, on {n} evaluation images.",
            plots.layer_errors([f"{r['op']} {r['tensor']}" for r in rows],
                               [float(r["rmse_per_scale"] or 0.0) for r in rows],
                               metric="RMSE / scale (QuantizationDebugger)",
                               secondary=[float("nan") if r["e2e_rmse_lsb"] is None
                                          else r["e2e_rmse_lsb"] for r in rows],
                               secondary_label="end-to-end RMSE (int8 steps)")))
    elif layers.error_source == "end-to-end":
        figs.append(Figure(
            "layer_errors", "Per-layer quantization error",
            f"End-to-end RMSE of each int8 layer output against float32, in int8 steps, on "
            f"{n} evaluation images." + layers.debug_note,
            plots.layer_errors([r["layer"] for r in rows], [r["e2e_rmse_lsb"] for r in rows],
                               metric="end-to-end RMSE (int8 steps)")))
    return figs


def sweep_figure(sweep: dict[str, Any]) -> Optional[Figure]:
    """int8 top-1 per calibration-set size and granularity (None for an empty sweep)."""
    from edgeq.host import plots

    points = sweep.get("points") or []
    if not points:
        return None
    return Figure("sweep", "Calibration-set size and granularity",
                  "int8 top-1 after re-quantizing the same Keras model with each calibration-set "
                  "size and per-channel / per-tensor weights; dashed: float32.",
                  plots.sweep_accuracy(points))


def methods_figure(rows: Sequence[dict[str, Any]]) -> Optional[Figure]:
    """The drop vs float32 per sweep variant (edgeq.host.stats.method_comparison rows)."""
    from edgeq.host import plots

    if not rows:
        return None
    return Figure("methods", "Accuracy drop per calibration method and variant",
                  "Top-1 of float32 minus top-1 of each int8 variant, in points, on the same "
                  "evaluation images; black: the paired 95% interval (Newcombe, from Wilson "
                  "intervals); *: McNemar's test against the converter's Min-Max of the same "
                  "granularity and calibration size gives p < 0.05.",
                  plots.method_drops(rows))


def ranges_figure(tensors: Sequence[str], outliers: Sequence[bool],
                  minmax: Sequence[tuple[float, float]],
                  chosen: dict[str, Sequence[Optional[tuple[float, float]]]]) -> Optional[Figure]:
    """Min-Max vs each method's clipped range per activation tensor (one compact figure)."""
    from edgeq.host import plots
    from edgeq.host.inspection import OUTLIER_PERCENTILE, OUTLIER_RATIO

    if not tensors or not chosen:
        return None
    return Figure("clipped_ranges", "Min-Max range vs the clipped range per layer",
                  "Per activation tensor: the Min-Max range of the calibration values (grey) "
                  "and the range each variant chose (bars), divided by the Min-Max max|x|. "
                  f"Orange *: the tensor has outliers (max|x| > {OUTLIER_RATIO:g} x "
                  f"P{OUTLIER_PERCENTILE:g}(|x|), inspection's rule).",
                  plots.clipped_ranges(tensors, outliers, minmax, chosen))


def weight_ranges_figure(layers: Sequence[str], flagged: Sequence[bool],
                         channel_max_abs: Sequence[Sequence[float]],
                         chosen: dict[str, Sequence[Optional[Sequence[float]]]]
                         ) -> Optional[Figure]:
    """Each channel's Min-Max weight range vs each variant's chosen thresholds, per layer."""
    from edgeq.host import plots

    if not layers or not chosen:
        return None
    return Figure("weight_ranges", "Min-Max weight ranges vs the clipped ones per layer",
                  "Per conv / depthwise / dense layer, on a log axis: each output channel's "
                  "max|w| (grey dots; per-channel Min-Max), the tensor's max|w| (black; "
                  "per-tensor Min-Max) and the threshold each variant chose (coloured: a "
                  "marker for per-tensor variants, the span over the channels for "
                  "per-channel ones; scale = threshold / 127). Orange *: outliers or channel "
                  "ranges more than 10x apart.",
                  plots.weight_ranges(layers, flagged, channel_max_abs, chosen))


def robustness_figure(doc: dict[str, Any]) -> Optional[Figure]:
    """Top-1 vs severity per corruption for float32 and every int8 variant."""
    from edgeq.host import plots

    if not doc.get("models") or not doc.get("corruptions"):
        return None
    return Figure("robustness", "Robustness under corruptions",
                  f"Top-1 on {doc.get('count', '?')} evaluation images corrupted at each "
                  f"severity (0 = clean; seed {doc.get('seed', '?')}); dashed: float32.",
                  plots.robustness_curves(doc["corruptions"], doc.get("severities") or [],
                                          doc["models"]))
