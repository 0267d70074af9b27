"""The report's figures, drawn with matplotlib and returned as PNG bytes.

Every function takes plain data (lists, numpy arrays, dicts) and returns the PNG of one
figure. Figures are built with `matplotlib.figure.Figure` + the Agg canvas, never pyplot, so
no display, no global state and no GUI backend is ever touched; PNGs carry no timestamp, so
the same data gives the same bytes. The report embeds them as base64 `data:` URIs.
Imports: standard library, numpy; matplotlib lazily inside the functions (it is heavy).
"""
from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: one colour per model, the same in every figure
MODEL_COLORS = {"float32": "#1f77b4", "int8": "#d62728"}
OUTLIER_COLOR = "#ff7f0e"
_DPI = 100


def new_figure(width_in: float, height_in: float) -> "Figure":
    """A Figure on the Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: "Figure") -> bytes:
    """The figure as PNG bytes, without the timestamp/software metadata."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _color(model: str) -> str:
    return MODEL_COLORS.get(model, "#555555")


# ------------------------------------------------------------------ run-level figures


def latency_ecdf(latencies_ms: Mapping[str, Sequence[float]],
                 medians_ci: Optional[Mapping[str, tuple[float, float]]] = None) -> bytes:
    """ECDF of the batch-1 latencies of each model on shared axes (+ histogram below).

    The median of each model is a dashed line, its bootstrap interval a shaded band.
    """
    fig = new_figure(9.0, 6.0)
    ax, hx = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    all_values = np.concatenate([np.asarray(v, dtype=float) for v in latencies_ms.values()
                                 if len(v)] or [np.zeros(1)])
    lo, hi = float(all_values.min()), float(all_values.max())
    use_log = lo > 0 and hi / lo > 20
    bins = (np.geomspace(lo, hi, 60) if use_log else np.linspace(lo, hi if hi > lo else lo + 1, 60))
    for model, values in latencies_ms.items():
        x = np.sort(np.asarray(values, dtype=float))
        if x.size == 0:
            continue
        y = np.arange(1, x.size + 1) / x.size
        med = float(np.median(x))
        ax.step(x, y, where="post", color=_color(model), lw=1.6,
                label=f"{model}: n={x.size}, median {med:.3g} ms")
        ax.axvline(med, color=_color(model), ls="--", lw=1)
        if medians_ci and model in medians_ci:
            ax.axvspan(*medians_ci[model], color=_color(model), alpha=0.15, lw=0)
        hx.hist(x, bins=bins, color=_color(model), alpha=0.5, label=model)
    if use_log:
        ax.set_xscale("log")
    ax.set_ylabel("fraction of runs <= x")
    ax.set_ylim(0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Batch-1 latency per inference (ECDF; dashed = median, band = bootstrap 95% CI)")
    hx.set_xlabel("latency (ms)")
    hx.set_ylabel("runs")
    hx.grid(alpha=0.3)
    return to_png(fig)


def per_class_accuracy(per_class: Mapping[str, Sequence[Optional[float]]],
                       intervals: Optional[Mapping[str, Sequence[tuple[float, float]]]] = None,
                       class_names: Optional[Sequence[str]] = None) -> bytes:
    """Grouped bars: top-1 per class for each model, with Wilson 95% error bars; the x axis
    shows `class_names` (else the class indices)."""
    classes = max((len(v) for v in per_class.values()), default=10)
    names = [str(n) for n in (class_names or [])][:classes]
    names += [str(i) for i in range(len(names), classes)]
    fig = new_figure(min(24.0, max(6.0, 0.45 * classes + 3.0)), 3.8)
    ax = fig.subplots()
    models = list(per_class)
    width = 0.8 / max(1, len(models))
    floor = 1.0
    for i, model in enumerate(models):
        vals = np.array([np.nan if v is None else 100.0 * v for v in per_class[model]], float)
        x = np.arange(len(vals)) + (i - (len(models) - 1) / 2) * width
        yerr = None
        if intervals and model in intervals:
            lo = np.array([100.0 * a for a, _ in intervals[model]])
            hi = np.array([100.0 * b for _, b in intervals[model]])
            yerr = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
            floor = min(floor, float(np.nanmin(lo)) / 100.0)
        ax.bar(x, vals, width=width, color=_color(model), label=model, yerr=yerr, capsize=2,
               error_kw={"lw": 0.8})
        if np.isfinite(vals).any():
            floor = min(floor, float(np.nanmin(vals)) / 100.0)
    ax.set_xticks(range(classes))
    long_names = max((len(n) for n in names), default=1) > 3
    ax.set_xticklabels([_short(n, 16) for n in names], rotation=45 if long_names else 0,
                       ha="right" if long_names else "center", fontsize=8)
    ax.set_xlabel("class")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(max(0.0, math.floor(floor * 100 - 2)), 100.5)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Per-class top-1 (error bars: Wilson 95% CI)")
    return to_png(fig)


def display_image(image: np.ndarray, value_range: tuple[float, float]) -> tuple[np.ndarray, bool]:
    """One evaluation image as something imshow draws: (H, W) grayscale or (H, W, 3) RGB in
    [0, 1], scaled from `value_range` (uint8 pixels: 0..255; model-ready floats: the set's
    own min..max). Returns (array, is_colour); a 1-D tensor is drawn as a one-row strip."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    elif x.ndim == 3 and x.shape[-1] == 4:
        x = x[..., :3]
    elif x.ndim == 3 and x.shape[-1] != 3:
        x = x.mean(axis=-1)
    elif x.ndim == 1:
        x = x[None, :]
    elif x.ndim > 3:
        x = x.reshape(x.shape[0], -1)
    lo, hi = float(value_range[0]), float(value_range[1])
    x = np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    return x, x.ndim == 3


def changed_gallery(images: np.ndarray, labels: Sequence[int], pred_float: Sequence[int],
                    pred_int8: Sequence[int], indices: Sequence[int], columns: int = 8,
                    class_names: Optional[Sequence[str]] = None) -> bytes:
    """The images whose prediction int8 changed: label y, float32 f, int8 q under each.

    Grayscale or colour images of any size: uint8 pixels are shown as 0..255, float32
    model-ready values between the set's own minimum and maximum. Classes are shown by
    `class_names` when given. The title is green when int8 fixed the float32 mistake, red
    when it broke a right answer.
    """
    n = len(indices)
    if n == 0:
        fig = new_figure(6.0, 1.0)
        fig.text(0.5, 0.5, "int8 changed no prediction", ha="center", va="center")
        return to_png(fig)
    arr = np.asarray(images)
    value_range = ((0.0, 255.0) if arr.dtype == np.uint8
                   else (float(np.min(arr)), float(np.max(arr))))
    names = [str(c) for c in (class_names or [])]

    def name(c: int) -> str:
        return _short(names[c], 10) if 0 <= c < len(names) else str(c)

    cols = min(columns, n)
    rows = int(math.ceil(n / cols))
    fig = new_figure(1.25 * cols, 1.45 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, idx in zip(axes, indices):
        y, f, q = int(labels[idx]), int(pred_float[idx]), int(pred_int8[idx])
        shown, colour = display_image(arr[idx], value_range)
        if colour:
            ax.imshow(shown, interpolation="nearest")
        else:
            ax.imshow(shown, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        color = "#2ca02c" if q == y else ("#d62728" if f == y else "#555555")
        ax.set_title(f"#{idx} y={name(y)}\nf={name(f)} q={name(q)}", fontsize=8, color=color)
    return to_png(fig)


# ------------------------------------------------------------------ per-layer figures


def layer_weights(
    name: str,
    weights: np.ndarray,
    scales: Sequence[float],
    zero_points: Sequence[int],
    *,
    axis: Optional[int] = None,
    quantized: Optional[np.ndarray] = None,
    outlier_abs: Optional[float] = None,
    channel_flags: Optional[Sequence[bool]] = None,
) -> bytes:
    """One weight tensor: distribution vs the Min-Max range and int8 grid, per-channel ranges.

    Left: histogram of the float weights whose bins are the int8 grid cells of the widest
    channel (one bar per code), the Min-Max range as solid lines, the int8 range of the widest
    channel shaded, outliers (|w| > outlier_abs) as orange marks on the axis. Middle: min..max
    of each output channel (axis `axis`) with its int8 range; channels flagged in
    `channel_flags` in orange. Right: how often each int8 code is used (the stored grid).
    """
    w = np.asarray(weights, dtype=np.float64)
    sc = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    zp = np.atleast_1d(np.asarray(zero_points, dtype=np.int64))
    fig = new_figure(13.0, 3.4)
    ax_h, ax_c, ax_q = fig.subplots(1, 3, width_ratios=[5, 4, 3])

    # left: distribution on the grid of the widest channel
    wide = int(np.argmax(sc))
    step = float(sc[wide]) if sc[wide] > 0 else (float(np.ptp(w)) / 255 or 1.0)
    q_lo, q_hi = (-128 - int(zp[wide])) * step, (127 - int(zp[wide])) * step
    lo = min(float(w.min()), q_lo)
    hi = max(float(w.max()), q_hi)
    k0 = math.floor((lo - q_lo) / step)
    k1 = math.ceil((hi - q_lo) / step)
    edges = q_lo + (np.arange(k0, k1 + 1) - 0.5) * step
    ax_h.hist(w.ravel(), bins=edges, color="#4c72b0", alpha=0.85)
    ax_h.set_yscale("log")
    ax_h.axvline(float(w.min()), color="k", lw=1.2, label=f"Min-Max [{w.min():.3g}, {w.max():.3g}]")
    ax_h.axvline(float(w.max()), color="k", lw=1.2)
    ax_h.axvspan(q_lo, q_hi, color="#999999", alpha=0.12,
                 label=f"int8 range of widest channel, step {step:.2g}")
    if outlier_abs is not None:
        out = w.ravel()[np.abs(w.ravel()) > outlier_abs]
        if out.size:
            ax_h.plot(out, np.full(out.size, 0.7), "|", color=OUTLIER_COLOR, ms=14, mew=1.5,
                      label=f"{out.size} outliers")
    ax_h.set_xlabel("weight value (bins = int8 grid cells)")
    ax_h.set_ylabel("count")
    ax_h.legend(fontsize=7, loc="upper right")
    ax_h.set_title(f"{name}: weights", fontsize=9)

    # middle: per-channel ranges
    if axis is not None and w.ndim > 0 and sc.size > 1:
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        cmin, cmax = moved.min(axis=1), moved.max(axis=1)
        ch = np.arange(moved.shape[0])
        qmin = (-128 - zp[: ch.size]) * sc[: ch.size]
        qmax = (127 - zp[: ch.size]) * sc[: ch.size]
        ax_c.fill_between(ch, qmin, qmax, step="mid", color="#999999", alpha=0.25,
                          label="int8 range per channel")
        ax_c.vlines(ch, cmin, cmax, color="#4c72b0", lw=2, label="weights min..max")
        flags = (np.asarray(channel_flags, dtype=bool)[: ch.size] if channel_flags is not None
                 else np.zeros(ch.size, dtype=bool))
        if flags.any():
            ax_c.vlines(ch[flags], cmin[flags], cmax[flags], color=OUTLIER_COLOR, lw=2.5,
                        label=f"{int(flags.sum())} channels with outliers")
        ax_c.set_xlabel(f"output channel (axis {axis})")
        ax_c.set_title(f"per-channel ranges ({ch.size} channels)", fontsize=9)
        ax_c.legend(fontsize=7, loc="upper right")
    else:
        ax_c.vlines([0], [w.min()], [w.max()], color="#4c72b0", lw=6)
        ax_c.set_title("per-tensor: one range", fontsize=9)
        ax_c.set_xticks([])
    ax_c.set_ylabel("value")
    ax_c.grid(alpha=0.3)

    # right: int8 code usage
    if quantized is not None:
        qv = np.asarray(quantized).astype(np.int64).ravel()
        counts = np.bincount(qv + 128, minlength=256)
        ax_q.bar(np.arange(-128, 128), counts, width=1.0, color="#55a868")
        used = int(np.count_nonzero(counts))
        ax_q.set_title(f"int8 codes used: {used}/256", fontsize=9)
        ax_q.set_yscale("log")
        ax_q.set_xlim(-129, 128)
    else:
        ax_q.text(0.5, 0.5, "no int8 tensor", ha="center", va="center", transform=ax_q.transAxes)
    ax_q.set_xlabel("int8 code")
    return to_png(fig)


def activation_ranges(tensors: Sequence[Mapping[str, Any]]) -> bytes:
    """Horizontal bars: the real range [min, max] each activation tensor got from calibration.

    Each item: name, min, max, scale, optional `outlier` (bool, drawn in orange) and optional
    p_lo/p_hi (where the bulk of the float values seen lies, drawn as a black bar).
    """
    n = len(tensors)
    fig = new_figure(9.0, max(2.0, 0.32 * n + 1.2))
    ax = fig.subplots()
    if n == 0:
        ax.text(0.5, 0.5, "no activation tensors", ha="center", va="center")
        ax.set_axis_off()
        return to_png(fig)
    y = np.arange(n)[::-1]
    for yi, t in zip(y, tensors):
        color = OUTLIER_COLOR if t.get("outlier") else "#4c72b0"
        ax.plot([t["min"], t["max"]], [yi, yi], color=color, lw=7, solid_capstyle="butt")
        if t.get("p_lo") is not None and t.get("p_hi") is not None:
            ax.plot([t["p_lo"], t["p_hi"]], [yi, yi], color="k", lw=2, solid_capstyle="butt")
        ax.text(t["max"], yi, f"  scale {t['scale']:.3g}", va="center", fontsize=7)
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(y)
    ax.set_yticklabels([_short(str(t["name"])) for t in tensors], fontsize=7)
    ax.set_xlabel("real value range covered by int8 (from calibration)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Activation ranges seen in calibration (orange: flagged as stretched by outliers)")
    return to_png(fig)


def layer_errors(names: Sequence[str], values: Sequence[float], *, metric: str,
                 secondary: Optional[Sequence[float]] = None, secondary_label: str = "") -> bytes:
    """Bars of the per-layer quantization error (e.g. RMSE / scale from QuantizationDebugger)."""
    n = len(names)
    fig = new_figure(9.0, max(2.0, 0.32 * n + 1.2))
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    vals = np.asarray(values, dtype=float)
    ax.barh(y, vals, color="#8172b2", label=metric)
    if secondary is not None:
        ax.plot(np.asarray(secondary, float), y, "o", color=OUTLIER_COLOR, ms=4,
                label=secondary_label)
    ax.set_yticks(y)
    ax.set_yticklabels([_short(n_) for n_ in names], fontsize=7)
    ax.set_xlabel("RMSE in int8 steps (RMSE / scale); 0.29 = rounding alone")
    ax.axvline(1.0 / math.sqrt(12.0), color="k", ls=":", lw=1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Per-layer quantization error, float32 vs int8")
    return to_png(fig)


def sweep_accuracy(points: Sequence[Mapping[str, Any]]) -> bytes:
    """top-1 vs calibration-set size, one line per granularity; the float32 top-1 dashed."""
    fig = new_figure(7.0, 3.6)
    ax = fig.subplots()
    by_gran: dict[str, list[tuple[int, float]]] = {}
    float_top1: Optional[float] = None
    for p in points:
        if p.get("int8_top1") is not None:
            by_gran.setdefault(str(p["granularity"]), []).append(
                (int(p["calibration_size"]), 100.0 * float(p["int8_top1"])))
        if p.get("float32_top1") is not None:
            float_top1 = 100.0 * float(p["float32_top1"])
    for gran, pts in sorted(by_gran.items()):
        pts.sort()
        ax.plot([a for a, _ in pts], [b for _, b in pts], "o-", label=f"int8 {gran}")
    if float_top1 is not None:
        ax.axhline(float_top1, color=_color("float32"), ls="--", label="float32")
    ax.set_xscale("log")
    ax.set_xlabel("calibration images")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Sweep: calibration-set size and granularity")
    return to_png(fig)


def _method_colors(methods: Sequence[str]) -> dict[str, str]:
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3",
               "#8c8c8c", "#ccb974", "#64b5cd"]
    return {m: palette[k % len(palette)] for k, m in enumerate(dict.fromkeys(methods))}


def method_drops(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Horizontal bars: each variant's top-1 drop vs float32 (points) with its 95% interval,
    coloured by method; * marks a McNemar p < 0.05 against the Min-Max baseline.

    Each row: variant, method, drop_pp, drop_ci_low_pp / drop_ci_high_pp (may be None),
    mcnemar_p (may be None)."""
    n = len(rows)
    fig = new_figure(9.0, max(2.2, 0.34 * n + 1.3))
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    colors = _method_colors([str(r["method"]) for r in rows])
    for yi, r in zip(y, rows):
        ax.barh(yi, r["drop_pp"], color=colors[str(r["method"])], height=0.7)
        if r.get("drop_ci_low_pp") is not None:
            ax.plot([r["drop_ci_low_pp"], r["drop_ci_high_pp"]], [yi, yi], color="k", lw=1.2)
        ax.plot([r["drop_pp"]], [yi], "o", color="k", ms=3)
        if r.get("mcnemar_p") is not None and r["mcnemar_p"] < 0.05:
            ax.text(max(r["drop_pp"], r.get("drop_ci_high_pp") or r["drop_pp"]), yi, " *",
                    va="center", fontsize=11, fontweight="bold")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([_short(str(r["variant"]), 40) for r in rows], fontsize=8)
    ax.set_xlabel("top-1 drop vs float32 (points; black: paired 95% interval)")
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=m) for m, c in colors.items()], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.0, 1.0), title="method", title_fontsize=8)
    ax.set_title("Accuracy drop per variant (* McNemar p < 0.05 vs Min-Max)")
    return to_png(fig)


def _no_data(fig: Any, ax: Any, text: str) -> bytes:
    """The figure with only `text` in it (nothing recorded to draw)."""
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()
    return to_png(fig)


def _flagged_rows(ax: Any, y: np.ndarray, names: Sequence[str], flags: Sequence[bool]) -> None:
    """Row labels at `y`; a flagged row is marked '* ' and drawn in the outlier colour."""
    ax.set_yticks(y)
    ax.set_yticklabels([("* " if f else "") + _short(t, 36) for t, f in zip(names, flags)],
                       fontsize=7)
    for lab, f in zip(ax.get_yticklabels(), flags):
        if f:
            lab.set_color(OUTLIER_COLOR)


def clipped_ranges(tensors: Sequence[str], outliers: Sequence[bool],
                   minmax: Sequence[tuple[float, float]],
                   chosen: Mapping[str, Sequence[Optional[tuple[float, float]]]]) -> bytes:
    """Per activation tensor (rows), the Min-Max range (grey band) and each method's chosen
    range (coloured bars), both divided by the Min-Max max |x| so tensors share one axis;
    tensors with outliers are labelled in orange with a *."""
    n = len(tensors)
    methods = list(chosen)
    fig = new_figure(9.0, max(2.4, 0.42 * n + 1.4))
    ax = fig.subplots()
    if n == 0:
        return _no_data(fig, ax, "no recorded ranges")
    colors = _method_colors(methods)
    y = np.arange(n)[::-1].astype(float)
    k = max(1, len(methods))
    for i, (yi, (lo, hi)) in enumerate(zip(y, minmax)):
        m = max(abs(lo), abs(hi)) or 1.0
        ax.barh(yi, (hi - lo) / m, left=lo / m, height=0.86, color="#dddddd",
                edgecolor="#888888", lw=0.6)
        for j, meth in enumerate(methods):
            r = chosen[meth][i]
            if r is None:
                continue
            off = 0.35 - 0.7 * (j + 0.5) / k
            ax.plot([r[0] / m, r[1] / m], [yi + off, yi + off], color=colors[meth],
                    lw=max(1.5, 6.0 / k), solid_capstyle="butt")
    ax.axvline(0, color="k", lw=0.6)
    _flagged_rows(ax, y, tensors, outliers)
    ax.set_xlabel("range / Min-Max max|x| (grey: Min-Max; bars: the method's clipped range)")
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#dddddd", label="Min-Max")]
              + [Patch(color=c, label=m_) for m_, c in colors.items()], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Activation ranges: Min-Max vs the clipped range (orange *: outliers)")
    return to_png(fig)


def weight_ranges(layers: Sequence[str], flagged: Sequence[bool],
                  channel_max_abs: Sequence[Sequence[float]],
                  chosen: Mapping[str, Sequence[Optional[Sequence[float]]]]) -> bytes:
    """Per weighted layer (rows), on a log axis of |w|: each output channel's max|w| (grey
    dots: the per-channel Min-Max ranges; their spread is what per-tensor weights pay for),
    the tensor's max|w| (black bar: per-tensor Min-Max) and each variant's chosen thresholds
    (coloured: one marker per tensor for per-tensor variants, the channels' span for
    per-channel ones). Flagged layers (outliers or a wide channel spread) are labelled in
    orange with a *."""
    n = len(layers)
    variants = list(chosen)
    fig = new_figure(9.0, max(2.4, 0.5 * n + 1.4))
    ax = fig.subplots()
    if n == 0:
        return _no_data(fig, ax, "no recorded weight ranges")
    colors = _method_colors(variants)
    y = np.arange(n)[::-1].astype(float)
    k = max(1, len(variants))
    for i, yi in enumerate(y):
        ch = np.asarray([v for v in channel_max_abs[i] if v > 0], dtype=float)
        if ch.size:
            ax.plot(ch, np.full(ch.size, yi + 0.38), "o", color="#999999", ms=2.5, alpha=0.7)
            ax.plot([ch.max()] * 2, [yi - 0.42, yi + 0.45], color="k", lw=1.6)
        for j, v in enumerate(variants):
            t = chosen[v][i]
            if not t:
                continue
            vals = np.asarray([x for x in t if x > 0], dtype=float)
            if not vals.size:
                continue
            off = 0.28 - 0.66 * (j + 0.5) / k
            if vals.size == 1:
                ax.plot(vals, [yi + off], "v", color=colors[v], ms=5)
            else:
                ax.plot([vals.min(), vals.max()], [yi + off] * 2, color=colors[v],
                        lw=max(1.5, 5.0 / k), solid_capstyle="butt")
    ax.set_xscale("log")
    _flagged_rows(ax, y, layers, flagged)
    ax.set_xlabel("|w| threshold (log; grey dots: each channel's max|w|, black: the tensor's "
                  "max|w|; scale = threshold / 127)", fontsize=8)
    ax.grid(axis="x", alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="#999999", label="channel max|w|"),
               Line2D([], [], color="k", label="tensor max|w|")]
    handles += [Line2D([], [], color=c, lw=3, label=v) for v, c in colors.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Weight ranges: Min-Max vs the clipped range (orange *: outliers or channel "
                 "ranges > 10x apart)", fontsize=9)
    return to_png(fig)


def robustness_curves(corruptions: Sequence[str], severities: Sequence[int],
                      models: Sequence[Mapping[str, Any]]) -> bytes:
    """Per corruption (columns): top-1 (%) vs severity (0 = clean) per model, float32 dashed
    (top row), and each int8 model's gap, float32 top-1 - its top-1 in points (bottom row).

    Each model: name, kind, clean_top1, top1 {corruption: {"severity": top1}}; the first
    float32 model is the gap's reference."""
    cols = max(1, len(corruptions))
    fig = new_figure(2.2 * cols + 1.0, 5.4)
    axes = fig.subplots(2, cols, sharey="row", squeeze=False)
    x = [0] + [int(s) for s in severities]
    ref = next((m for m in models if m.get("kind") == "float32"), None)

    def curve(m: Mapping[str, Any], corr: str) -> np.ndarray:
        return 100.0 * np.asarray([m["clean_top1"]] + [m["top1"][corr][str(s)]
                                                         for s in severities], dtype=float)

    for k, corr in enumerate(corruptions):
        top, gap = axes[0][k], axes[1][k]
        for j, m in enumerate(models):
            is_f = m.get("kind") == "float32"
            color = _color("float32") if is_f else f"C{(j % 9) + 1}"
            top.plot(x, curve(m, corr), "--" if is_f else "o-", ms=3, lw=1.6 if is_f else 1.0,
                     color=color, label=m["name"])
            if ref is not None and not is_f:
                gap.plot(x, curve(ref, corr) - curve(m, corr), "o-", ms=3, lw=1.0, color=color)
        top.set_title(corr.replace("_", " "), fontsize=9)
        gap.axhline(0, color=_color("float32"), ls="--", lw=1)
        for ax in (top, gap):
            ax.set_xticks(x)
            ax.grid(alpha=0.3)
        gap.set_xlabel("severity (0 = clean)", fontsize=8)
    axes[0][0].set_ylabel("top-1 (%)")
    axes[1][0].set_ylabel("float32 - int8 (points)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center",
               ncols=min(3, max(1, len(labels))))
    return to_png(fig)


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]
