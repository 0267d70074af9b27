"""`edgeq report`: one run of float32 vs int8 as a self-contained HTML page + a Markdown summary.

`build_report(run, artifacts_dir=..., out_dir=...)` takes an `edgeq.compare/1` document (from
bench-remote / history) and the artifacts directory it was measured from, and writes

    OUT/report.html     one file: CSS inline, figures inline as data: URIs, no script, no
                        network (opens offline, from a file:// URL or an e-mail attachment)
    OUT/report.md       the same tables in Markdown, figures linked from OUT/figures/
    OUT/figures/*.png   every figure as its own PNG (for READMEs and slides)

The page has the paper's comparison table (size, top-1 with a Wilson 95% interval,
agreement, latency p50/p90/p99, throughput, init, peak memory, int8/float32), McNemar's test on
the paired predictions, bootstrap intervals for the latency medians, the figures, the per-layer
analysis (weights vs the Min-Max range and int8 grid, per-channel ranges, activation ranges
from calibration, outliers, per-layer error), the device environment (EMULATED shown loudly)
and, when ARTIFACTS/sweep.json / robustness.json are present, the sweep: for a sweep of
calibration methods, the method table and figure (drop vs float32 with intervals, McNemar
against Min-Max), the Min-Max vs clipped range per layer and the converter's vs
ai-edge-quantizer's Min-Max; and the robustness table and figure (edgeq.host.report_sections).

This module only lays out and renders. The numbers come from edgeq.host.stats
(`run_statistics`), edgeq.host.inspection (`layer_analysis`), edgeq.host.compare and the sweep;
the figures from edgeq.host.report_figures. It runs no model and imports no TFLite runtime or
TensorFlow itself.

Every number of a table cell is machine-readable: the HTML cell (or span) carries
`data-metric`, `data-model` and `data-value` (the exact value in the document's unit); the
Markdown tables carry the metric key in a column and the value in the unit of the row label.
The report also embeds its summary as
`<script type="application/json" id="edgeq-report-data">` (data, never executed).
Imports: standard library, numpy, edgeq.device (errors, fileutil, store, evaldata),
edgeq.host.{artifacts, stats, compare, sweep, robustness, report_figures, report_tables,
report_sections}; edgeq.host.inspection and edgeq.host.evaluate (probe_models) lazily.
"""
from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np
from edgeq.device import __version__
from edgeq.device.errors import EdgeqError
from edgeq.device.evaldata import load_eval_data
from edgeq.device.fileutil import utc_now
from edgeq.device.store import atomic_write_bytes
from edgeq.host import stats
from edgeq.host.artifacts import MODEL_KINDS, ArtifactsError, load_artifacts
from edgeq.host.report_figures import Figure, layer_figures, run_figures, sweep_figure
from edgeq.host.report_sections import (
    SWEEP_HEADER,
    Section,
    methods_section,
    plain_sweep,
    ranges_section,
    robustness_section,
    sweep_note,
    sweep_rows,
)
from edgeq.host.report_tables import (
    Cell,
    Part,
    dict_table,
    fmt_num,
    get_path,
    md_dict_table,
    num_cell,
    text_cell,
)
from edgeq.host.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

if TYPE_CHECKING:  # pragma: no cover
    from edgeq.host.inspection import LayerAnalysis

logger = logging.getLogger(__name__)

REPORT_SCHEMA = "edgeq.report/1"

ProgressCallback = Callable[[int, int], None]
_NUM = ' class="num"'
_KIB, _MIB = 2**10, 2**20


class ReportError(EdgeqError):
    """The run does not belong to the artifacts it is reported with."""


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
    Metric("size_bytes", "Size (KB)", _KIB),
    Metric("accuracy", "Top-1 (%)", 0.01),
    Metric("accuracy_top5", "Top-5 (%)", 0.01),  # only when the model has more than 5 classes
    Metric("latency_ms_p50", "Latency p50 (ms)"),
    Metric("latency_ms_p90", "Latency p90 (ms)"),
    Metric("latency_ms_p99", "Latency p99 (ms)"),
    Metric("latency_ms_mean", "Latency mean (ms)"),
    Metric("throughput_samples_per_s", "Throughput (samples/s)"),
    Metric("init_ms", "Init (ms)"),
    Metric("peak_rss_bytes", "Peak memory (MiB)", _MIB),
)

# ------------------------------------------------------------------ tables


def comparison_rows(summary: dict[str, Any]) -> list[tuple[str, str, Cell, Cell, Cell]]:
    """(label, key, float32 cell, int8 cell, int8/float32 cell) of the side-by-side table."""
    rows: list[tuple[str, str, Cell, Cell, Cell]] = []
    f32, i8 = summary["models"]["float32"], summary["models"]["int8"]
    rat = summary["ratios"]
    pct = 0.01
    top5 = any(e.get("accuracy_top5") is not None for e in (f32, i8))
    for k in METRICS:
        if k.key == "accuracy_top5" and not top5:
            continue
        ratio = num_cell(k.key, "ratio", rat.get(k.key, _ratio(f32.get(k.key), i8.get(k.key))),
                          suffix="x")
        if k.key in ("accuracy", "accuracy_top5"):
            delta = (summary.get("accuracy_delta_pp") if k.key == "accuracy"
                     else _delta_pp(f32.get(k.key), i8.get(k.key)))
            if delta is not None:
                name = "accuracy_delta_pp" if k.key == "accuracy" else "accuracy_top5_delta_pp"
                ratio.parts.append(Part(f"({delta:+.2f} pp)", name, "ratio", delta))
        rows.append((k.label, k.key, num_cell(k.key, "float32", f32.get(k.key), k.scale),
                     num_cell(k.key, "int8", i8.get(k.key), k.scale), ratio))
        if k.key == "accuracy":
            cells = []
            for m, e in (("float32", f32), ("int8", i8)):
                ci = e.get("accuracy_ci")
                cells.append(Cell([
                    Part(fmt_num(ci[0] / pct), "accuracy_ci_low", m, ci[0]),
                    Part("–"),
                    Part(fmt_num(ci[1] / pct), "accuracy_ci_high", m, ci[1])]) if ci
                    else text_cell("n/a"))
            rows.append(("Top-1 95% CI (%, Wilson)", "accuracy_ci", cells[0], cells[1],
                         text_cell("")))
        if k.key == ("accuracy_top5" if top5 else "accuracy"):  # after the last accuracy row
            rows.append(("Float/int8 agreement (%)", "agreement", text_cell(""), text_cell(""),
                         num_cell("agreement", "both", summary.get("agreement"), pct)))
            rows.append(("Evaluated images", "count",
                         num_cell("count", "float32", f32.get("count")),
                         num_cell("count", "int8", i8.get("count")), text_cell("")))
        if k.key == "latency_ms_p50":
            cells = []
            for m, e in (("float32", f32), ("int8", i8)):
                ci = e.get("latency_ms_p50_ci")
                cells.append(Cell([
                    Part(fmt_num(ci[0]), "latency_ms_p50_ci_low", m, ci[0]), Part("–"),
                    Part(fmt_num(ci[1]), "latency_ms_p50_ci_high", m, ci[1])]) if ci
                    else text_cell("n/a"))
            rci = summary.get("latency_ms_p50_ratio_ci")
            ratio = (Cell([Part(fmt_num(rci[0]), "latency_ms_p50_ci_low", "ratio", rci[0]),
                           Part("–"),
                           Part(fmt_num(rci[1]), "latency_ms_p50_ci_high", "ratio", rci[1])])
                     if rci else text_cell("n/a"))
            rows.append(("Latency p50 95% CI (ms, bootstrap)", "latency_ms_p50_ci",
                         cells[0], cells[1], ratio))
    rows.append(("Timed runs", "runs", num_cell("runs", "float32", f32.get("runs")),
                 num_cell("runs", "int8", i8.get("runs")), text_cell("")))
    return rows


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a in (None, 0) or b is None else float(b) / float(a)


def _delta_pp(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else (float(b) - float(a)) * 100.0


def class_names_for(manifest: Optional[dict[str, Any]], classes: int) -> list[str]:
    """The manifest's class names for `classes` classes (the index where it names none)."""
    names = (manifest or {}).get("class_names")
    names = [str(n) for n in names][:classes] if isinstance(names, list) else []
    return names + [str(i) for i in range(len(names), classes)]


def per_class_rows(summary: dict[str, Any], names: Sequence[str]
                   ) -> list[tuple[Cell, Cell, Cell, Cell, Cell]]:
    """(class name, images, float32 top-1 %, int8 top-1 %, int8 - float32 pp) per class."""
    f32 = summary["models"]["float32"].get("per_class") or []
    i8 = summary["models"]["int8"].get("per_class") or []
    rows = []
    for c, (a, b) in enumerate(zip(f32, i8)):
        name = names[c] if c < len(names) else str(c)
        fa = a["correct"] / a["total"] if a["total"] else None
        qa = b["correct"] / b["total"] if b["total"] else None
        rows.append((text_cell(name), num_cell("per_class_count", name, a["total"]),
                     num_cell("per_class_top1", f"float32:{name}", fa, 0.01),
                     num_cell("per_class_top1", f"int8:{name}", qa, 0.01),
                     num_cell("per_class_delta_pp", name, _delta_pp(fa, qa))))
    return rows


PER_CLASS_HEADER = ("class", "images", "float32 top-1 (%)", "int8 top-1 (%)",
                    "int8 - float32 (pp)")


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
        ("both right", num_cell("mcnemar_both_correct", "both", mc["both_correct"])),
        ("float32 right, int8 wrong (b)", num_cell("mcnemar_b", "both", mc["a_only"])),
        ("float32 wrong, int8 right (c)", num_cell("mcnemar_c", "both", mc["b_only"])),
        ("both wrong", num_cell("mcnemar_both_wrong", "both", mc["both_wrong"])),
        ("test", text_cell(mc["method"])),
        ("statistic", num_cell("mcnemar_statistic", "both", mc["statistic"])),
        ("p-value", num_cell("mcnemar_p_value", "both", mc["p_value"])),
        ("significant at 0.05", text_cell("yes" if mc["p_value"] < 0.05 else "no")),
    ]


def environment_rows(run: dict[str, Any], manifest: Optional[dict[str, Any]]
                     ) -> list[tuple[str, str]]:
    """The environment block: the device, its runtime and settings, and the versions."""
    from edgeq.host.compare import environment_rows as compare_env_rows

    rows = list(compare_env_rows(run))
    res = get_path(run, "models", "int8", "result") or {}
    rows.append(("batch size (throughput)", str(get_path(res, "settings", "batch_size") or "?")))
    rows.append(("edgeq (device / report)", f"{res.get('edgeq_version', '?')} / {__version__}"))
    if manifest:
        cal = manifest.get("calibration") or {}
        rows.append(("TensorFlow (converter)", str(manifest.get("tensorflow_version", "?"))))
        weights = "per-channel" if cal.get("per_channel", True) else "per-tensor"
        rows.append(("calibration", f"{cal.get('size', '?')} images, seed {cal.get('seed', '?')}, "
                                    f"{weights} weights"))
        rows.append(("model", str(manifest.get("model_name", "?"))))
        rows += _model_io_rows(manifest)
    for m in MODEL_KINDS:
        rows.append((f"{m} sha256", str(get_path(run, "models", m, "sha256") or "?")))
    rows.append(("run", f"{run.get('run_id') if run.get('run_id') is not None else '(not stored)'}"
                        f" at {run.get('time_utc', '?')}"))
    return rows


def _model_io_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """What the model takes and gives: input shape and type, classes, preprocessing."""
    rows = []
    inp = get_path(manifest, "models", "int8", "input") or {}
    if inp.get("shape"):
        rows.append(("input (int8 model, per image)",
                     f"{'x'.join(str(d) for d in inp['shape'][1:])} {inp.get('dtype', '?')}, "
                     f"scale {fmt_num(inp.get('scale'))}, zero point {inp.get('zero_point')}"))
    out = get_path(manifest, "models", "float32", "output") or {}
    classes = manifest.get("num_classes") or ((out.get("shape") or [None])[-1])
    if classes:
        names = class_names_for(manifest, int(classes))
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        rows.append(("classes", f"{classes}: {shown}"))
    pre = manifest.get("preprocessing")
    if isinstance(pre, dict):
        text = ("identity (raw pixels)" if pre.get("identity") else
                ", ".join(f"{k} {pre[k]}" for k in ("scale", "offset", "mean", "std")
                          if pre.get(k) is not None))
        rows.append(("preprocessing", f"{pre.get('formula', '')}: {text}".strip(": ")))
    return rows


# ------------------------------------------------------------------ rendering

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3;text-align:left}
td[data-value],td span[data-value]{font-variant-numeric:tabular-nums}
td.num{text-align:right}code{background:#f3f3f3;padding:0 .2em}
.emulated{background:#b00020;color:#fff;font-weight:bold;font-size:1.3em;padding:.8em 1em;
border-radius:4px;margin:1em 0}
.sig{font-weight:bold}.note{color:#666;font-size:.9em}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.scroll{overflow-x:auto;max-width:100%}td{overflow-wrap:anywhere}
#methods-table td,#ranges-table td,#robustness-table td,#minmax-quantizers td,
#robustness-summary td{white-space:nowrap;overflow-wrap:normal}
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
                layer_figs: Sequence[Figure],
                sweep: Optional[dict[str, Any]], sweep_fig: Optional[Figure],
                sections: Sequence[Section] = ()) -> str:
    e = html.escape
    out: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(_title(run, manifest))}</title><style>{CSS}</style></head><body>",
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
    pcr = per_class_rows(summary, summary.get("class_names") or [])
    if pcr:
        out.append('<h2 id="per-class">Per class</h2><div class="scroll"><table id="per-class-'
                   'table"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in PER_CLASS_HEADER)
                   + "</tr></thead><tbody>")
        for row in pcr:
            out.append("<tr>" + row[0].html("th") + "".join(c.html(attrs=_NUM) for c in row[1:])
                       + "</tr>")
        out.append("</tbody></table></div>")
    out.append('<h2 id="environment">Environment</h2><table id="env">')
    for k, v in environment_rows(run, manifest):
        emph = ' class="sig"' if k == "emulated" and emu else ""
        out.append(f"<tr><th>{e(k)}</th><td{emph}>{e(v)}</td></tr>")
    out.append("</table>")
    out.append('<h2 id="figures">Figures</h2>')
    out.extend(_img(f) for f in figures)
    out.append('<h2 id="layers">Per-layer analysis: where accuracy goes</h2>')
    if layers is None or (not layer_figs and not layers.tensor_rows):
        out.append(f'<p class="note">{e(layers.note if layers else "not computed")}</p>')
    else:
        if layers.note:
            out.append(f'<p class="note">{e(layers.note)}</p>')
        out.extend(_img(f) for f in layer_figs)
        if layers.weight_rows:
            out.append("<h3>Weights per layer</h3>")
            out.append(dict_table("weights", layers.weight_rows))
        if layers.tensor_rows:
            out.append("<h3>Activations per layer: int8 range, values seen, error</h3>")
            out.append(dict_table("activations", layers.tensor_rows))
        if layers.error_rows:
            out.append("<h3>Per-layer quantization error</h3>")
            out.append(dict_table("layer-errors", layers.error_rows))
    for sec in sections:
        out.extend(section_html(sec))
    if sweep:
        out.append('<h2 id="sweep">Sweep: calibration-set size and granularity</h2>')
        out.append('<table id="sweep-table"><thead><tr>'
                   + "".join(f"<th>{e(h)}</th>" for h in SWEEP_HEADER) + "</tr></thead><tbody>")
        for row in sweep_rows(sweep):
            out.append("<tr>" + "".join(c.html(attrs=' class="num"') for c in row) + "</tr>")
        out.append("</tbody></table>")
        out.append(f'<p class="note">{e(sweep_note(sweep))}</p>')
        if sweep_fig:
            out.append(_img(sweep_fig))
    out.append('<h2 id="reproduce">Reproduce</h2><pre>'
               + e(reproduce_text(run)) + "</pre>")
    data = json.dumps(_embedded(run, summary, sweep, sections), sort_keys=True)
    data = data.replace("</", "<\\/")
    out.append(f'<script type="application/json" id="edgeq-report-data">{data}</script>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_markdown(run: dict[str, Any], summary: dict[str, Any],
                    manifest: Optional[dict[str, Any]], figure_files: Sequence[tuple[Figure, str]],
                    layers: Optional[LayerAnalysis], sweep: Optional[dict[str, Any]],
                    sections: Sequence[Section] = ()) -> str:
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
            f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}. KB = 1024 bytes.", ""]
    pcr = per_class_rows(summary, summary.get("class_names") or [])
    if pcr:
        out += ["## Per class", "", "| " + " | ".join(PER_CLASS_HEADER) + " |",
                "|---|" + "---:|" * (len(PER_CLASS_HEADER) - 1)]
        out += ["| " + " | ".join(c.markdown() for c in row) + " |" for row in pcr]
        out.append("")
    out += ["## Environment", "", "| | |", "|---|---|"]
    for k, v in environment_rows(run, manifest):
        v = v.replace("|", "\\|")
        out.append(f"| {k} | **{v}** |" if k == "emulated" and emu else f"| {k} | {v} |")
    out += ["", "## Figures", ""]
    for fig, rel in figure_files:
        out += [f"### {fig.title}", "", f"![{fig.title}]({rel})", "", fig.caption, ""]
    if layers is not None and (layers.error_rows or layers.tensor_rows or layers.note):
        out += ["## Per-layer analysis", ""]
        if layers.weight_rows:
            out += ["Weights:", ""] + md_dict_table(
                [{k: v for k, v in r.items() if k != "tensor"} for r in layers.weight_rows]) + [""]
        if layers.tensor_rows:
            out += ["Activations:", ""] + md_dict_table(
                [{k: v for k, v in r.items() if k != "tensor"} for r in layers.tensor_rows]) + [""]
        if layers.error_rows:
            out += ["Per-layer error:", ""] + md_dict_table(layers.error_rows) + [""]
        if layers.note:
            out += [layers.note, ""]
    for sec in sections:
        out += section_markdown(sec)
    if sweep:
        out += ["## Sweep: calibration-set size and granularity", "",
                "| " + " | ".join(SWEEP_HEADER) + " |", "|---|" + "---:|" * (len(SWEEP_HEADER) - 1)]
        for row in sweep_rows(sweep):
            out.append("| " + " | ".join(c.markdown() for c in row) + " |")
        out += ["", sweep_note(sweep), ""]
    out += ["## Reproduce", "", "```", reproduce_text(run), "```", ""]
    return "\n".join(out)


def reproduce_text(run: dict[str, Any]) -> str:
    settings = run.get("settings") or {}
    rid = run.get("run_id")
    lines = [f"# measured with: edgeq bench-remote --host {run.get('host', 'HOST')} "
             f"--threads {settings.get('threads', 1)}"
             + ("" if settings.get("xnnpack", True) else " --no-xnnpack")]
    artifacts = run.get("artifacts_dir") or "DIR"
    lines.append(f"edgeq report {rid}" if rid is not None
                 else f"edgeq report --result RUN.json --artifacts {artifacts}")
    return "\n".join(lines)


def _embedded(run: dict[str, Any], summary: dict[str, Any], sweep: Optional[dict[str, Any]],
              sections: Sequence[Section] = ()) -> dict[str, Any]:
    small = {k: v for k, v in summary.items() if k != "changed_indices"}
    small["changed_count"] = len(summary.get("changed_indices") or [])
    return {"schema": REPORT_SCHEMA, "run_id": run.get("run_id"), "time_utc": run.get("time_utc"),
            "host": run.get("host"), "summary": small,
            "sweep_points": [{k: v for k, v in p.items() if k != "int8_predictions"}
                             for p in (sweep or {}).get("points") or []] or None,
            **({"sections": {sec.id: {t.id: t.rows for t in sec.tables} for sec in sections}}
               if sections else {})}


def section_html(sec: Section) -> list[str]:
    """A Section (edgeq.host.report_sections) as HTML: title, notes, tables, figures."""
    e = html.escape
    out = [f'<h2 id="{e(sec.id)}">{e(sec.title)}</h2>']
    out += [f'<p class="note">{e(par)}</p>' for par in sec.paragraphs]
    for t in (t for t in sec.tables if t.rows):
        out += ([f"<h3>{e(t.title)}</h3>"] if t.title else []) + [dict_table(t.id, t.rows, t.key)]
    return out + [_img(f) for f in sec.figures]


def section_markdown(sec: Section) -> list[str]:
    out = [f"## {sec.title}", ""]
    for par in sec.paragraphs:
        out += [par, ""]
    for t in (t for t in sec.tables if t.rows):
        out += ([f"{t.title}:", ""] if t.title else []) + md_dict_table(t.rows) + [""]
    for f in sec.figures:
        out += [f"![{f.title}](figures/{f.name}.png)", "", f.caption, ""]
    return out



# ------------------------------------------------------------------ the entry point

def _check_artifacts(run: dict[str, Any], artifacts_dir: Path) -> Any:
    """The run's artifacts (load_artifacts, files checked); ReportError if the run's models are
    not the ones in the directory."""
    art = load_artifacts(artifacts_dir)
    for m in MODEL_KINDS:
        want = art.models[m].sha256
        got = get_path(run, "models", m, "sha256")
        if want and got and want != got:
            raise ReportError(
                f"the run's {m} model ({got[:12]}) is not the one in {artifacts_dir} "
                f"({want[:12]})",
                hint="pass the --artifacts directory this run was measured with")
    if art.eval_data is None:
        raise ArtifactsError(f"no evaluation set in {artifacts_dir}",
                             hint="run edgeq quantize again to write it")
    return art


def _layers(artifacts_dir: Path, images: np.ndarray, wanted: bool
            ) -> tuple[LayerAnalysis, list[Figure]]:
    """inspection's layer analysis and its figures, or a note saying why there is none."""
    from edgeq.host.inspection import LayerAnalysis, layer_analysis

    if not wanted:
        return LayerAnalysis(note="per-layer analysis left out (--no-layers)"), []
    try:
        # the analysis loads both models in this process: open them in a child first, so a
        # damaged file that crashes the interpreter is a note here, not a dead report
        from edgeq.host.evaluate import probe_models

        art = load_artifacts(artifacts_dir, verify=False)
        probe_models([art.models[m].path for m in MODEL_KINDS], xnnpack=False)
        la = layer_analysis(artifacts_dir, images=images)
        return la, layer_figures(la)
    except EdgeqError as exc:
        logger.warning("per-layer analysis failed: %s", exc)
        return LayerAnalysis(note=f"per-layer analysis not available: {exc.message}"), []
    except (ValueError, RuntimeError, OSError) as exc:
        # the interpreter or converter choked on a model: the rest of the report still holds
        logger.warning("per-layer analysis failed: %s: %s", type(exc).__name__, exc)
        return LayerAnalysis(note=f"per-layer analysis not available: {type(exc).__name__}: "
                                  f"{exc}"), []


def build_report(
    run: dict[str, Any],
    *,
    artifacts_dir: Path,
    out_dir: Path,
    sweep: Optional[dict[str, Any]] = None,
    robustness: Optional[dict[str, Any]] = None,
    progress: Optional[ProgressCallback] = None,
    layers: bool = True,
) -> ReportPaths:
    """Write OUT/report.html (self-contained), OUT/report.md and OUT/figures/*.png for `run`.

    `sweep` defaults to ARTIFACTS/sweep.json and `robustness` to ARTIFACTS/robustness.json
    when those files exist (edgeq.host.report_sections lays them out). `layers=False` leaves out
    the per-layer analysis (it needs TensorFlow and takes a few seconds).
    """
    from edgeq.host.robustness import load_robustness
    from edgeq.host.sweep import load_sweep

    stats.check_run(run)
    artifacts_dir = Path(artifacts_dir)
    out_dir = Path(out_dir)
    total = 5
    step = 0

    def tick() -> None:
        nonlocal step
        step += 1
        if progress:
            progress(step, total)

    art = _check_artifacts(run, artifacts_dir)
    images, labels = load_eval_data(art.eval_data.path)
    if sweep is None:
        sweep = load_sweep(artifacts_dir)
    if robustness is None:
        robustness = load_robustness(artifacts_dir)
    summary = stats.run_statistics(run, labels)
    summary["generated_utc"] = utc_now()
    classes = max(len(summary["models"][m].get("per_class") or []) for m in MODEL_KINDS)
    summary["class_names"] = class_names_for(art.manifest, classes)
    tick()
    figures = run_figures(run, summary, images, labels, class_names=summary["class_names"])
    tick()
    la, layer_figs = _layers(artifacts_dir, images, layers)
    tick()
    plain = plain_sweep(sweep)  # the converter's Min-Max points: size x granularity
    sections = [sec for sec in (methods_section(sweep), ranges_section(sweep),
                                robustness_section(robustness)) if sec is not None]
    sfig = sweep_figure(plain) if plain else None
    all_figs = (list(figures) + layer_figs + ([sfig] if sfig else [])
                + [f for sec in sections for f in sec.figures])
    written: list[Path] = []
    rels: list[tuple[Figure, str]] = []
    for fig in all_figs:
        path = out_dir / "figures" / f"{fig.name}.png"
        atomic_write_bytes(path, fig.png, mode=None)  # a report is meant to be shared
        written.append(path)
        rels.append((fig, f"figures/{fig.name}.png"))
    tick()
    html_path = out_dir / "report.html"
    md_path = out_dir / "report.md"
    html_doc = render_html(run, summary, art.manifest, figures, la, layer_figs, plain, sfig,
                           sections)
    atomic_write_bytes(html_path, html_doc.encode("utf-8"), mode=None)
    md_doc = render_markdown(run, summary, art.manifest, rels, la, plain, sections)
    atomic_write_bytes(md_path, md_doc.encode("utf-8"), mode=None)
    tick()
    logger.info("report written to %s", html_path)
    return ReportPaths(out_dir=out_dir, html=html_path, markdown=md_path, figures=tuple(written))
