"""float32 vs int8: pure functions from device bench results to the comparison.

Used by bench-remote (to build the `edgeq.compare/1` document of docs/SCHEMA.md), by the
CLI (table rows) and by the report. No I/O, no printing.

How rounds are merged (bench-remote alternates float32 and int8 in rounds, ABBA...):
- latency: the timed batch-1 latencies of every round are pooled (concatenated in run
  order) and p50/p90/p99/mean/min/std are computed over the pooled sample with numpy's
  default linear interpolation. Each round follows the device's rule (a minimum count and
  a minimum time), so a round contributes its own number of runs; the per-round p50s are
  kept under `rounds` so drift between rounds stays visible.
- throughput_samples_per_s, init_ms: the median over rounds.
- memory, the headline: model_memory_bytes, the model's own footprint (RSS growth from just
  before load to after the first inference, measured the same way for both models in a fresh
  worker; edgeq.device.bench), the median over rounds, and its int8/float32 ratio in `ratios`.
  peak_rss_bytes (the maximum over rounds) is the whole worker process: Python, numpy and the
  runtime library (~45 MB) under the model, so its ratio says little about the model itself.
- latency_ms_p90_early_stopping (only when bench ran with --mlperf-min-s): MLPerf LoadGen's
  early-stopping p90 of each round's single-stream run (edgeq.device.mlperf); the worst
  (largest) over rounds, the conservative choice, with that round's rule under
  `early_stopping`; every round's value is kept under `rounds`.
- accuracy (top-1), accuracy_top5 (more than 5 classes, else null) and predictions: from the
  one round that evaluated the model (the first).
Imports: standard library, numpy, edgeq.device (errors, store.MODEL_KINDS; bench.latency_stats,
the one latency summary shared with the device).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from edgeq.device.bench import latency_stats
from edgeq.device.errors import EdgeqError
from edgeq.device.store import MODEL_KINDS

COMPARE_SCHEMA = "edgeq.compare/1"
BENCH_SCHEMA = "edgeq.bench/1"

#: per-model keys that get an int8/float32 ratio
RATIO_KEYS = (
    "size_bytes",
    "accuracy",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "latency_ms_mean",
    "throughput_samples_per_s",
    "init_ms",
    "model_memory_bytes",
    "peak_rss_bytes",
    "latency_ms_p90_early_stopping",
)


class ResultError(EdgeqError):
    """A device result that does not have the shape of docs/SCHEMA.md."""


def _require(result: dict[str, Any], *path: str) -> Any:
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise ResultError(
                f"device result has no {'.'.join(path)}",
                hint="the agent on the device is older or newer than this host; run edgeq deploy",
            )
        node = node[key]
    return node


def check_bench_result(result: dict[str, Any]) -> None:
    """Raise ResultError unless `result` is an `edgeq.bench/1` document."""
    if not isinstance(result, dict) or result.get("schema") != BENCH_SCHEMA:
        got = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise ResultError(
            f"device result has schema {got!r}, expected {BENCH_SCHEMA!r}",
            hint="the agent on the device is older or newer than this host; run edgeq deploy",
        )
    for path in (("model", "sha256"), ("model", "size_bytes"), ("timing", "latencies_ms"),
                 ("memory",), ("runtime",), ("environment",)):
        _require(result, *path)


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [float(v) for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def _max(values: Sequence[Optional[int]]) -> Optional[int]:
    present = [int(v) for v in values if v is not None]
    return max(present) if present else None


def _early_stopping(rounds: Sequence[dict[str, Any]]) -> tuple[Optional[float],
                                                               Optional[dict[str, Any]]]:
    """The largest early-stopping p90 over the rounds that ran single-stream, and its rule."""
    best: tuple[Optional[float], Optional[dict[str, Any]]] = (None, None)
    for r in rounds:
        ss = r["timing"].get("single_stream") or {}
        v = ss.get("latency_ms_p90_early_stopping")
        if v is not None and (best[0] is None or float(v) > best[0]):
            best = (float(v), ss.get("early_stopping"))
    return best


def model_summary(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The per-model entry of the compare document from the bench results of its rounds.

    `rounds` are `edgeq.bench/1` documents of the same model in the order they ran; the one
    with `accuracy` (the evaluation pass) becomes `result`. See the module docstring for how
    rounds are merged.
    """
    if not rounds:
        raise ValueError("model_summary needs at least one bench result")
    for r in rounds:
        check_bench_result(r)
    shas = {r["model"]["sha256"] for r in rounds}
    if len(shas) != 1:
        raise ResultError(
            "bench rounds of one model report different sha256s",
            hint="the deployment changed during the benchmark; run bench-remote again",
        )
    evaluated = [r for r in rounds if r.get("accuracy")]
    main = evaluated[0] if evaluated else rounds[0]
    pooled: list[float] = []
    per_round: list[dict[str, Any]] = []
    for index, r in enumerate(rounds):
        timing = r["timing"]
        lat = [float(x) for x in timing.get("latencies_ms") or []]
        pooled.extend(lat)
        stats = latency_stats(lat)
        per_round.append({
            "round": index,
            "time_utc": r.get("time_utc"),
            "runs": len(lat),
            "latency_ms_p50": stats["latency_ms_p50"],
            "throughput_samples_per_s": timing.get("throughput_samples_per_s"),
            "init_ms": timing.get("init_ms"),
            "peak_rss_bytes": r["memory"].get("peak_rss_bytes"),
            "model_memory_bytes": r["memory"].get("model_memory_bytes"),
            "latency_ms_p90_early_stopping": timing.get("latency_ms_p90_early_stopping"),
            "cpu_temperature_c": (r.get("environment") or {}).get("cpu_temperature_c"),
        })
    accuracy = main.get("accuracy") or None
    runtime = dict(main["runtime"])
    es_p90, es_rule = _early_stopping(rounds)
    model_memory = _median([r["model_memory_bytes"] for r in per_round])
    summary: dict[str, Any] = {
        "size_bytes": int(main["model"]["size_bytes"]),
        "sha256": main["model"]["sha256"],
        "accuracy": float(accuracy["top1"]) if accuracy else None,
        "accuracy_top5": (float(accuracy["top5"]) if accuracy and accuracy.get("top5") is not None
                          else None),
        "eval_count": int(accuracy["count"]) if accuracy else None,
        **latency_stats(pooled),
        "runs": len(pooled),
        "throughput_samples_per_s": _median([r["throughput_samples_per_s"] for r in per_round]),
        "init_ms": _median([r["init_ms"] for r in per_round]),
        "model_memory_bytes": None if model_memory is None else int(model_memory),
        "peak_rss_bytes": _max([r["peak_rss_bytes"] for r in per_round]),
        "latency_ms_p90_early_stopping": es_p90,
        "early_stopping": es_rule,
        "runtime": runtime,
        "latencies_ms": pooled,
        "rounds": per_round,
        "result": main,
    }
    return summary


def predictions(summary: dict[str, Any]) -> Optional[list[int]]:
    """The evaluation-set predictions of a model entry (None when it was not evaluated)."""
    acc = (summary.get("result") or {}).get("accuracy")
    if not acc or acc.get("predictions") is None:
        return None
    return [int(p) for p in acc["predictions"]]


def agreement(preds_a: Sequence[int], preds_b: Sequence[int]) -> float:
    """Fraction of images on which both models predict the same class."""
    if len(preds_a) != len(preds_b):
        raise ResultError(
            f"the two models were evaluated on different sets ({len(preds_a)} vs "
            f"{len(preds_b)} predictions)",
            hint="run bench-remote again; both models must use the same --eval-limit",
        )
    if len(preds_a) == 0:
        raise ResultError("no predictions to compare", hint="evaluate on at least one image")
    a = np.asarray(preds_a)
    b = np.asarray(preds_b)
    return float(np.mean(a == b))


def ratios(float32: dict[str, Any], int8: dict[str, Any]) -> dict[str, Optional[float]]:
    """int8 / float32 for every key of RATIO_KEYS (None where a value is missing or zero)."""
    out: dict[str, Optional[float]] = {}
    for key in RATIO_KEYS:
        a, b = float32.get(key), int8.get(key)
        out[key] = float(b) / float(a) if a not in (None, 0) and b is not None else None
    return out


def int8_speedup_p50(doc: Optional[dict[str, Any]]) -> Optional[float]:
    """float32 p50 / int8 p50 of a compare document (> 1: int8 is faster); None if unknown."""
    models = (doc or {}).get("models") or {}
    f32 = (models.get("float32") or {}).get("latency_ms_p50")
    i8 = (models.get("int8") or {}).get("latency_ms_p50")
    return None if f32 is None or not i8 else float(f32) / float(i8)


def build_compare(
    float32_rounds: Sequence[dict[str, Any]],
    int8_rounds: Sequence[dict[str, Any]],
    *,
    host: str,
    settings: dict[str, Any],
    time_utc: str,
    artifacts_dir: Optional[str],
) -> dict[str, Any]:
    """The `edgeq.compare/1` document (without `run_id`, which history assigns)."""
    f32 = model_summary(float32_rounds)
    i8 = model_summary(int8_rounds)
    pa, pb = predictions(f32), predictions(i8)
    agree = agreement(pa, pb) if pa is not None and pb is not None else None
    device = dict(f32["result"]["environment"])
    return {
        "schema": COMPARE_SCHEMA,
        "run_id": None,
        "time_utc": time_utc,
        "host": host,
        "artifacts_dir": artifacts_dir,
        "settings": dict(settings),
        "device": device,
        "agreement": agree,
        "models": {"float32": f32, "int8": i8},
        "ratios": ratios(f32, i8),
    }


# ---------------------------------------------------------------- table rows


@dataclass(frozen=True)
class Row:
    """One line of the side-by-side table: a metric, both values and int8/float32."""

    name: str
    float32: str
    int8: str
    ratio: str


def _fmt(value: Optional[float], spec: str, scale: float = 1.0) -> str:
    if value is None:
        return "n/a"
    return format(float(value) / scale, spec)


def _ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}x"


# (label, key, format, divisor)
_TABLE_METRICS = (
    ("Size (KB)", "size_bytes", ".1f", 1024.0),
    ("Top-1 (%)", "accuracy", ".2f", 0.01),
    ("Top-5 (%)", "accuracy_top5", ".2f", 0.01),
    ("Latency p50 (ms)", "latency_ms_p50", ".3f", 1.0),
    ("Latency p90 (ms)", "latency_ms_p90", ".3f", 1.0),
    ("Latency p90 MLPerf early stop (ms)", "latency_ms_p90_early_stopping", ".3f", 1.0),
    ("Latency p99 (ms)", "latency_ms_p99", ".3f", 1.0),
    ("Throughput (samples/s)", "throughput_samples_per_s", ".1f", 1.0),
    ("Init (ms)", "init_ms", ".1f", 1.0),
    ("Model memory (MiB)", "model_memory_bytes", ".2f", 2.0**20),
    ("Peak memory (MiB)", "peak_rss_bytes", ".1f", 2.0**20),
)
#: rows shown only when a model reports the value (older agents, runs without the option)
_OPTIONAL_KEYS = ("accuracy_top5", "latency_ms_p90_early_stopping", "model_memory_bytes")


def _metrics(*entries: dict[str, Any]) -> tuple[tuple[str, str, str, float], ...]:
    """The table's metrics; top-5 (more than 5 classes), the MLPerf early-stopping p90
    (--mlperf-min-s) and the model memory (agents since issue 13) only when a model reports
    them."""
    shown = {k for k in _OPTIONAL_KEYS if any(e.get(k) is not None for e in entries)}
    return tuple(m for m in _TABLE_METRICS if m[1] not in _OPTIONAL_KEYS or m[1] in shown)


def _ratio_of(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return float(b) / float(a) if a not in (None, 0) and b is not None else None


def table_rows(doc: dict[str, Any]) -> list[Row]:
    """The rows of the side-by-side table for a compare document (KB and MiB: 1024-based).

    The agreement row carries its value in the ratio column, since it relates the two
    models; the top-1 ratio column also shows the change in percentage points.
    """
    f32 = doc["models"]["float32"]
    i8 = doc["models"]["int8"]
    rat = doc.get("ratios") or ratios(f32, i8)
    rows: list[Row] = []
    metrics = _metrics(f32, i8)
    last_accuracy = [m[1] for m in metrics if m[1].startswith("accuracy")][-1]
    for label, key, spec, div in metrics:
        ratio_text = _ratio(rat.get(key) if key in rat else _ratio_of(f32.get(key), i8.get(key)))
        if key.startswith("accuracy") and f32.get(key) is not None \
                and i8.get(key) is not None:
            ratio_text += f" ({(i8[key] - f32[key]) * 100:+.2f} pt)"
        rows.append(Row(label, _fmt(f32.get(key), spec, div), _fmt(i8.get(key), spec, div),
                        ratio_text))
        if key == last_accuracy:
            agree = doc.get("agreement")
            rows.append(Row("float/int8 agreement (%)", "", "",
                            "n/a" if agree is None else f"{agree * 100:.2f}"))
    return rows


def environment_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) lines of the device environment block."""
    dev = doc.get("device") or {}
    settings = doc.get("settings") or {}
    rt32 = (doc["models"]["float32"].get("runtime") or {})
    rt8 = (doc["models"]["int8"].get("runtime") or {})

    def delegated(rt: dict[str, Any]) -> str:
        if rt.get("delegated_nodes") is None:
            return "?"
        return f"{rt.get('delegated_nodes')}/{rt.get('total_nodes')}"

    xnn = settings.get("xnnpack")
    xnn_text = "off" if not xnn else (
        f"on (float32 {delegated(rt32)} nodes, int8 {delegated(rt8)} nodes delegated)")
    runtime = dev.get("runtime") or {}
    emulated = bool(dev.get("emulated"))
    temp = dev.get("cpu_temperature_c")
    rows = [
        ("device", f"{doc.get('host')} ({dev.get('hostname', '?')})"),
        ("machine", " ".join(str(dev.get(k) or "") for k in ("machine", "system", "kernel"))
         .strip() or "?"),
        ("CPU", f"{dev.get('cpu_model') or '?'} x{dev.get('cpu_count', '?')}"),
        ("runtime", f"{runtime.get('name', rt32.get('name', '?'))} "
                    f"{runtime.get('version', rt32.get('version', '?'))}"),
        ("python / numpy", f"{dev.get('python_version', '?')} / {dev.get('numpy_version', '?')}"),
        ("threads", str(settings.get("threads", "?"))),
        ("XNNPACK", xnn_text),
        ("governor / temp", f"{dev.get('cpu_governor') or '?'} / "
                            f"{'?' if temp is None else f'{temp:.1f} C'}"
                            f"{' / THROTTLED' if dev.get('throttled') else ''}"),
        ("order", f"{settings.get('order', '?')}, {settings.get('rounds', '?')} rounds, "
                  f"via {settings.get('path', '?')}"),
        ("emulated", f"YES ({dev.get('emulator') or 'emulator'}): timings are NOT a real board's"
                     if emulated else "no"),
    ]
    return rows


def delta_rows(doc_a: dict[str, Any], doc_b: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Two runs side by side: (metric, run A, run B, B/A) for both models and agreement."""
    out: list[tuple[str, str, str, str]] = []
    for kind in MODEL_KINDS:
        ma = doc_a["models"][kind]
        mb = doc_b["models"][kind]
        for label, key, spec, div in _metrics(ma, mb):
            a, b = ma.get(key), mb.get(key)
            change = _ratio(float(b) / float(a)) if a not in (None, 0) and b is not None else "n/a"
            out.append((f"{kind} {label}", _fmt(a, spec, div), _fmt(b, spec, div), change))
    aa, ab = doc_a.get("agreement"), doc_b.get("agreement")
    out.append(("float/int8 agreement (%)", _fmt(aa, ".2f", 0.01), _fmt(ab, ".2f", 0.01),
                f"{(ab - aa) * 100:+.2f} pt" if aa is not None and ab is not None else "n/a"))
    return out
