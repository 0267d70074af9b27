"""The report's issue-12 sections, laid out as plain tables + figures for edgeq.host.report.

- `methods_section(sweep)`: the calibration-method comparison of an `edgeq.sweep/1` document
  that swept methods (its `methods` key): one row per variant (method x granularity x
  calibration size x fallback) with top-1 and its Wilson 95% interval, the drop vs float32
  with a paired 95% interval and McNemar's test against the converter's Min-Max
  (edgeq.host.stats.method_comparison), the figure of the drops, and, where both were swept,
  the converter's Min-Max next to ai-edge-quantizer's.
- `ranges_section(sweep)`: per activation tensor the Min-Max range next to each variant's
  clipped range (the sweep points' `ranges`, from edgeq.host.inspection.range_comparison),
  and per weighted layer each channel's Min-Max weight range next to each variant's chosen
  thresholds (`weight_ranges`, inspection.weight_range_comparison); outliers marked by
  inspection's rule, and layers whose channel ranges are far apart.
- `robustness_section(doc)`: an `edgeq.robustness/1` document as a table (top-1 per
  corruption and severity, the float32 - int8 gap per corruption) and a figure.
- `sweep_rows` / `SWEEP_HEADER` / `sweep_note`: the converter's Min-Max points of a sweep
  (`plain_sweep`) by calibration size and granularity, the table the report had before.

Each returns a Section (None when there is nothing to show); report.py renders every Section
the same way (HTML and Markdown). Nothing here measures or computes a statistic.
Imports: standard library, numpy, edgeq.host.{stats, report_figures, report_tables};
edgeq.host.inspection (constants) lazily.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from edgeq.host import stats
from edgeq.host.report_figures import (
    Figure,
    methods_figure,
    ranges_figure,
    robustness_figure,
    weight_ranges_figure,
)
from edgeq.host.report_tables import Cell, num_cell, text_cell

#: the method-table columns shown: (column, key of the stats.method_comparison row), in order
METHOD_COLUMNS = (("variant", "variant"), ("method", "method"), ("weights", "weights"),
                  ("calibration", "calibration"), ("fallback", "fallback"),
                  ("top1_pct", "int8_top1_pct"), ("top1_low", "int8_top1_ci_low_pct"),
                  ("top1_high", "int8_top1_ci_high_pct"), ("drop_pp", "drop_pp"),
                  ("drop_low", "drop_ci_low_pp"), ("drop_high", "drop_ci_high_pp"),
                  ("baseline", "baseline"), ("b", "mcnemar_b"), ("c", "mcnemar_c"),
                  ("p", "mcnemar_p"))

#: why ai-edge-quantizer's Min-Max differs from the converter's (edgeq.host.calibration's
#: docstring, `aeq-minmax`)
MINMAX_NOTE = (
    "both quantize the same float32 model with the same calibration set (size and seed), but "
    "ai-edge-quantizer's own Min-Max calibration (MIN_MAX_UNIFORM_QUANT) is not the global "
    "min/max the converter keeps: its default update is a moving average over the "
    "calibration samples, m_k = 0.95 m_(k-1) + 0.05 min(sample k) (the same for max), so on "
    "activations with outliers it gives narrower ranges, i.e. other scales, than the "
    "converter. Where a CONCATENATION joins tensors of different ranges, the converter gives "
    "every input the concatenation's scale while ai-edge-quantizer keeps an input at its own "
    "scale and adds a QUANTIZE op that rescales it (see edgeq.host.calibration; "
    "benchmarks/methods.py compares the two files tensor by tensor).")


@dataclass
class Table:
    """Rows of plain values (float cells are machine-readable in the HTML)."""

    id: str
    rows: list[dict[str, Any]]
    title: str = ""
    key: tuple[str, ...] = ()  # the columns naming a row (default: the first)


@dataclass
class Section:
    """One report section: paragraphs, tables and figures, in that order."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def short_tensor(name: str) -> str:
    """A readable activation name: the first of TFLite's ';'-joined names, its last two
    path parts ("block3_sq_1/Mul")."""
    first = str(name).split(";", 1)[0]
    return "/".join(first.split("/")[-2:])


def is_method_sweep(sweep: Optional[dict[str, Any]]) -> bool:
    """A sweep of more than the converter's Min-Max (other methods or a float fallback)."""
    points = (sweep or {}).get("points") or []
    return any(p.get("method", "minmax") != "minmax" or p.get("float_fallback")
               for p in points)


def plain_sweep(sweep: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The sweep's converter Min-Max points without fallback (the calibration-size x
    granularity section), or None when it has none."""
    points = [p for p in (sweep or {}).get("points") or []
              if p.get("method", "minmax") == "minmax" and not p.get("float_fallback")]
    return {**(sweep or {}), "points": points} if points else None


def methods_section(sweep: Optional[dict[str, Any]]) -> Optional[Section]:
    if not is_method_sweep(sweep):
        return None
    assert sweep is not None
    rows = stats.method_comparison(sweep)
    n = len(sweep.get("labels") or []) or sweep.get("eval_count") or "?"
    sec = Section("methods", "Calibration methods: accuracy drop vs float32")
    paired = any(r["mcnemar_p"] is not None for r in rows)
    sec.paragraphs.append(
        f"{len(rows)} variants of the same float32 model, each evaluated on the same {n} "
        "images with LiteRT on the host. top1_pct: int8 top-1 (%), top1_low/high: its Wilson "
        "95% interval. drop_pp = float32 top-1 - int8 top-1 in points, drop_low/high: its "
        "paired 95% interval (Newcombe's method 10, built from the Wilson intervals). "
        "McNemar's test pairs each variant with the converter's Min-Max of the same "
        "granularity and calibration size (baseline): b = images Min-Max gets right and the "
        "variant wrong, c = the reverse, p < 0.05 = a significant difference."
        + ("" if paired else " This sweep.json keeps no predictions (made before issue 12): "
                             "no paired interval and no McNemar; run edgeq sweep again."))
    for r in rows:
        if r["mcnemar_p"] is not None and r["mcnemar_p"] < 0.05:
            better = r["mcnemar_c"] > r["mcnemar_b"]
            sec.paragraphs.append(
                f"{r['variant']} is significantly {'better' if better else 'worse'} than "
                f"{r['baseline']} (b = {r['mcnemar_b']}, c = {r['mcnemar_c']}, "
                f"p = {r['mcnemar_p']:.3g}).")
    sec.tables.append(Table("methods-table", [{c: r[k] for c, k in METHOD_COLUMNS}
                                              for r in rows]))
    pairs = _converter_vs_aeq(sweep, rows)
    if pairs:
        sec.tables.append(Table("minmax-quantizers", pairs,
                                "The converter's Min-Max vs ai-edge-quantizer's Min-Max",
                                key=("weights", "calibration")))
        sec.paragraphs.append("Why the two Min-Max files differ: " + MINMAX_NOTE)
    fig = methods_figure(rows)
    if fig:
        sec.figures.append(fig)
    return sec


def _converter_vs_aeq(sweep: dict[str, Any], rows: list[dict[str, Any]]
                      ) -> list[dict[str, Any]]:
    """Rows pairing the converter's minmax with aeq-minmax of the same settings."""
    labels = np.asarray(sweep.get("labels") or [], dtype=np.int64)
    points = sweep.get("points") or []
    out = []
    for p, r in zip(points, rows):
        if p.get("method") != "minmax" or p.get("float_fallback"):
            continue
        for q, s in zip(points, rows):
            same = all(q.get(k) == p.get(k) for k in ("granularity", "calibration_size"))
            if q.get("method") == "aeq-minmax" and same and not q.get("float_fallback") \
                    and q.get("activations", "int8") == "int8":  # not its 16x8 variants
                pa = np.asarray(p.get("int8_predictions") or [], dtype=np.int64)
                pb = np.asarray(q.get("int8_predictions") or [], dtype=np.int64)
                ok = labels.size and pa.size == pb.size == labels.size
                m = stats.mcnemar(pa, pb, labels) if ok else None
                out.append({
                    "weights": p.get("granularity"), "calibration": p.get("calibration_size"),
                    "converter_top1_pct": r["int8_top1_pct"], "aeq_top1_pct": s["int8_top1_pct"],
                    "aeq_minus_converter_pp": s["int8_top1_pct"] - r["int8_top1_pct"],
                    "converter_size_bytes": p.get("int8_size_bytes"),
                    "aeq_size_bytes": q.get("int8_size_bytes"),
                    "predictions_differ": None if not ok else int(np.sum(pa != pb)),
                    "mcnemar_p": None if m is None else m.p_value})
    return out


#: a layer's channel ranges this many times apart (largest / median channel max|w|) are flagged
CHANNEL_SPREAD_FLAG = 10.0


def _range_variants(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The variants whose ranges are shown: every method x granularity without a fallback,
    each at its largest calibration set (sweep order)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for p in points:
        if p.get("float_fallback") or p.get("activations", "int8") != "int8" \
                or not (p.get("ranges") or p.get("weight_ranges")):
            continue
        key = (str(p.get("method")), str(p.get("granularity")))
        cur = best.get(key)
        if cur is None or int(p.get("calibration_size") or 0) > int(cur.get("calibration_size")
                                                                    or 0):
            best[key] = p
    return list(best.values())


def ranges_section(sweep: Optional[dict[str, Any]]) -> Optional[Section]:
    if not is_method_sweep(sweep):
        return None
    assert sweep is not None
    variants = _range_variants(list(sweep.get("points") or []))
    if not variants:
        return None
    names = [stats.variant_name(p) for p in variants]
    sec = Section("clipped-ranges", "Per layer: the Min-Max range and the clipped ranges")
    from edgeq.host.inspection import OUTLIER_PERCENTILE, OUTLIER_RATIO

    act = [(n, p) for n, p in zip(names, variants) if p.get("ranges")]
    if act:
        first = act[0][1]
        tensors = [r for r in first["ranges"] if not r.get("io")]
        rows: list[dict[str, Any]] = []
        chosen: dict[str, list[Optional[tuple[float, float]]]] = {n: [] for n, _ in act}
        for t in tensors:
            for n, p in act:
                r = next((x for x in p["ranges"] if x["tensor"] == t["tensor"]), None)
                chosen[n].append(None if r is None else (r["min"], r["max"]))
                if r is None:
                    continue
                span = (r["minmax_max"] - r["minmax_min"]) or 1.0
                rows.append({"tensor": short_tensor(t["tensor"]),
                             "outliers": "yes" if t["outliers"] else "",
                             "variant": n, "method": p.get("method"),
                             "minmax_min": r["minmax_min"], "minmax_max": r["minmax_max"],
                             "chosen_min": r["min"], "chosen_max": r["max"],
                             "width_vs_minmax": (r["max"] - r["min"]) / span,
                             "clipped_pct": 100.0 * r["clipped_fraction"],
                             "float": "yes" if r.get("float") else ""})
        sec.paragraphs.append(
            "Activations: each tensor's Min-Max range over the calibration images next to the "
            f"range each variant chose ({len(act)} variants: every method and weight "
            "granularity swept, without fallback). clipped_pct = the share of calibration "
            "values outside the chosen range. outliers = yes when max|x| > "
            f"{OUTLIER_RATIO:g} x P{OUTLIER_PERCENTILE:g}(|x|) (inspection's rule). The model's "
            "input and output keep their Min-Max range and are left out. The converter's own "
            "Min-Max records no activation ranges: the Min-Max columns (grey in the figure) are "
            "min and max of the calibration values as edgeq measures them, the float32 .tflite "
            "run by LiteRT.")
        sec.tables.append(Table("ranges-table", rows, key=("tensor", "variant")))
        fig = ranges_figure([short_tensor(t["tensor"]) for t in tensors],
                            [bool(t["outliers"]) for t in tensors],
                            [(t["minmax_min"], t["minmax_max"]) for t in tensors], chosen)
        if fig:
            sec.figures.append(fig)
    wts = [(n, p) for n, p in zip(names, variants) if p.get("weight_ranges")]
    if wts:
        layers = [w for w in wts[0][1]["weight_ranges"]]
        wrows: list[dict[str, Any]] = []
        wchosen: dict[str, list[Optional[list[float]]]] = {n: [] for n, _ in wts}
        for w in layers:
            for n, p in wts:
                r = next((x for x in p["weight_ranges"] if x["tensor"] == w["tensor"]), None)
                wchosen[n].append(None if r is None else list(r["chosen_abs"]))
                if r is None:
                    continue
                ratios = [c / m for c, m in zip(r["chosen_abs"], r["minmax_abs"]) if m > 0]
                wrows.append({"layer": short_tensor(w["layer"]), "op": w["op"],
                              "outliers": "yes" if w["outliers"] else "",
                              "channel_spread": w["channel_spread"],
                              "variant": n, "weights": r["granularity"],
                              "minmax_max_abs": max(r["minmax_abs"]),
                              "chosen_max_abs": max(r["chosen_abs"]),
                              "chosen_vs_minmax_min": min(ratios) if ratios else None,
                              "chosen_vs_minmax_max": max(ratios) if ratios else None,
                              "clipped_pct": 100.0 * r["clipped_fraction"]})
        sec.paragraphs.append(
            "Weights: int8 weights are symmetric, so a range is one threshold T per tensor "
            "(per-tensor) or per output channel (per-channel), scale = T / 127. Min-Max takes "
            "T = max|w|; percentile:P takes the P-th percentile of |w| and mse the threshold "
            "with the least squared rounding + clipping error (edgeq.host.calibration), and "
            "edgeq clips the float weights to it before ai-edge-quantizer quantizes them. "
            "chosen_vs_minmax_min/max: the smallest and largest T / Min-Max T over the "
            "channels. channel_spread = the largest channel max|w| / the median one: with "
            "per-tensor weights every channel gets the largest channel's scale, so a spread "
            f"of s leaves the median channel about 127 / s levels. Flagged (orange *): "
            f"outliers by the same rule on |w|, or a channel spread above "
            f"{CHANNEL_SPREAD_FLAG:g}.")
        sec.tables.append(Table("weight-ranges-table", wrows, key=("layer", "variant")))
        fig = weight_ranges_figure(
            [short_tensor(w["layer"]) for w in layers],
            [bool(w["outliers"]) or w["channel_spread"] > CHANNEL_SPREAD_FLAG for w in layers],
            [w["channel_max_abs"] for w in layers], wchosen)
        if fig:
            sec.figures.append(fig)
    return sec


def robustness_models(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's models with unique names: "float32", "int8 ... (this run)" for the
    reported artifacts, "int8 <variant directory>" for the others (e.g. the sweep's)."""
    out = []
    for m in doc.get("models") or []:
        d = str(m.get("dir") or ".")
        name = (m["name"] if m.get("kind") == "float32" else f"{m['name']} (this run)"
                if d == "." else "int8 " + d.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1])
        out.append({**m, "name": name})
    return out


def robustness_section(doc: Optional[dict[str, Any]]) -> Optional[Section]:
    if not doc or not doc.get("models"):
        return None
    doc = {**doc, "models": robustness_models(doc)}
    sec = Section("robustness", "Robustness under corruptions")
    sec.paragraphs.append(
        f"Top-1 of float32 and each int8 model on {doc.get('count', '?')} evaluation images, "
        f"corrupted with {', '.join(doc.get('corruptions') or [])} at severities "
        f"{', '.join(str(s) for s in doc.get('severities') or [])} (seed {doc.get('seed')}, "
        f"{(doc.get('runtime') or {}).get('name', 'LiteRT')} on the host). gap = float32 top-1 - "
        "the model's, in points, averaged over the severities (positive: int8 loses more).")
    sec.tables.append(Table("robustness-table", stats.robustness_rows(doc),
                            key=("model", "corruption")))
    means = [{"model": m["name"], "clean_top1_pct": 100.0 * m["clean_top1"],
              "mean_corrupted_top1_pct": 100.0 * m["mean_corrupted_top1"],
              "clean_gap_pp": m.get("clean_gap_points"),
              "mean_gap_pp": m.get("mean_gap_points")} for m in doc["models"]]
    sec.tables.append(Table("robustness-summary", means, "Clean and mean corrupted top-1"))
    fig = robustness_figure(doc)
    if fig:
        sec.figures.append(fig)
    return sec


# ------------------------------------------- the converter's Min-Max sweep (size x granularity)


def sweep_rows(sweep: dict[str, Any]) -> list[tuple[Cell, ...]]:
    out: list[tuple[Cell, ...]] = []
    for p in sorted(sweep.get("points") or [],
                    key=lambda p: (str(p.get("granularity")), int(p.get("calibration_size", 0)))):
        tag = f"{p.get('granularity')}@{p.get('calibration_size')}"
        out.append((
            text_cell(str(p.get("granularity"))),
            num_cell("sweep_calibration_size", tag, p.get("calibration_size")),
            num_cell("sweep_int8_top1", tag, p.get("int8_top1"), 0.01),
            num_cell("sweep_float32_top1", tag, p.get("float32_top1"), 0.01),
            num_cell("sweep_agreement", tag, p.get("agreement"), 0.01),
            num_cell("sweep_int8_size_bytes", tag, p.get("int8_size_bytes"), 1024),
        ))
    return out


SWEEP_HEADER = ("weights", "calibration images", "int8 top-1 (%)", "float32 top-1 (%)",
                "agreement (%)", "int8 size (KB)")


def sweep_note(sweep: dict[str, Any]) -> str:
    return (f"Re-quantized on the host ({sweep.get('runtime', 'LiteRT')}), evaluated on "
            f"{sweep.get('eval_count', '?')} images; calibration images drawn with seed "
            f"{sweep.get('seed', '?')}; created {sweep.get('created_utc', '?')}.")
