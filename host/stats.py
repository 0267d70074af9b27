"""Small, exact statistics for the float32-vs-int8 report.

- `wilson_interval`: Wilson score interval for a binomial proportion (top-1 accuracy).
- `mcnemar`: McNemar's test on paired predictions of two models over the same images.
  The test only looks at the discordant pairs: b = images float32 gets right and int8 gets
  wrong, c = the reverse. Under H0 (both models equally accurate) b ~ Binomial(b + c, 1/2).
  For b + c < 25 (`EXACT_BELOW`) the two-sided exact binomial p-value is used,
  p = min(1, 2 * P[X <= min(b, c)]); otherwise the chi-square statistic with Edwards'
  continuity correction, (|b - c| - 1)^2 / (b + c), against chi-square with 1 degree of
  freedom (p = erfc(sqrt(stat / 2))). With b + c = 0 there is no evidence: p = 1.
- `bootstrap_median_interval` / `bootstrap_ratio_interval`: percentile bootstrap intervals
  for a latency median and for the ratio of two medians, seeded so reports are reproducible.
- `run_statistics(run, labels)`: all of the above for an `edgeq.compare/1` run, checked
  against the labels of its evaluation set (what the report lays out).
- `paired_difference_interval`: Newcombe's (1998, method 10) interval for the difference of
  two accuracies on the same images, built from Wilson intervals.
- `method_comparison(sweep)`: per `edgeq.sweep/1` variant, top-1 with its Wilson interval, the
  drop vs float32 with the paired interval and McNemar against the converter's Min-Max
  (`minmax_baseline`); `robustness_rows(doc)`: an `edgeq.robustness/1` document as rows.

Pure standard library + numpy (no SciPy): normal quantiles come from statistics.NormalDist,
binomial tails from exact integer arithmetic (math.comb), chi-square(1) tails from math.erfc.
Imports: standard library, numpy, edgeq.device.errors, edgeq.host.compare (pure).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from statistics import NormalDist
from typing import Any, Optional, Sequence

import numpy as np
from edgeq.device.errors import EdgeqError
from edgeq.host.artifacts import MODEL_KINDS
from edgeq.host.compare import COMPARE_SCHEMA, RATIO_KEYS, predictions, ratios

#: below this many discordant pairs McNemar uses the exact binomial test
EXACT_BELOW = 25
#: the report's intervals: Wilson for top-1, percentile bootstrap for latency medians
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0

_BOOTSTRAP_CHUNK = 256


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) for `successes` out of `n` trials.

    Unlike the normal (Wald) interval it stays inside [0, 1] and behaves at p near 0 or 1,
    which matters for MNIST accuracies around 99 %. n = 0 gives (0, 1): no information.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = successes / n
    z2n = z * z / n
    denom = 1.0 + z2n
    center = (p + z2n / 2.0) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / denom
    # clamp the floating-point dust at the edges (the exact interval: low 0 at p=0, high 1 at p=1)
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return (low, high)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of model A vs model B on the same labelled images."""

    n: int                   # paired images
    both_correct: int
    a_only: int              # b: A right, B wrong
    b_only: int              # c: A wrong, B right
    both_wrong: int
    method: str              # "exact-binomial" | "chi2-cc" | "none"
    statistic: float         # chi-square statistic (chi2-cc) or min(b, c) (exact); 0 for none
    p_value: float

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["discordant"] = self.discordant
        return d


def binomial_two_sided_p(b: int, c: int) -> float:
    """Exact two-sided p-value of b successes in b + c fair coin flips (exact arithmetic)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def chi2_cc_p(b: int, c: int) -> tuple[float, float]:
    """(statistic, p) of McNemar's chi-square with continuity correction, 1 d.o.f."""
    n = b + c
    if n == 0:
        return (0.0, 1.0)
    stat = (max(abs(b - c) - 1, 0) ** 2) / n
    return (float(stat), float(math.erfc(math.sqrt(stat / 2.0))))


def mcnemar_counts(b: int, c: int, *, both_correct: int = 0, both_wrong: int = 0) -> McNemarResult:
    """McNemar's test from the discordant counts b (A only right) and c (B only right)."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = both_correct + both_wrong + b + c
    if b + c == 0:
        method, stat, p = "none", 0.0, 1.0
    elif b + c < EXACT_BELOW:
        method, stat, p = "exact-binomial", float(min(b, c)), binomial_two_sided_p(b, c)
    else:
        method = "chi2-cc"
        stat, p = chi2_cc_p(b, c)
    return McNemarResult(n=n, both_correct=both_correct, a_only=b, b_only=c,
                         both_wrong=both_wrong, method=method, statistic=stat, p_value=p)


def mcnemar(pred_a: Sequence[int], pred_b: Sequence[int], labels: Sequence[int]) -> McNemarResult:
    """McNemar's test on the paired predictions of two models over the same labelled images."""
    a = np.asarray(pred_a)
    b = np.asarray(pred_b)
    y = np.asarray(labels)
    if not (a.shape == b.shape == y.shape) or a.ndim != 1:
        raise ValueError(f"predictions and labels must be 1-D of one length, got "
                         f"{a.shape}, {b.shape}, {y.shape}")
    ra, rb = a == y, b == y
    return mcnemar_counts(
        int(np.sum(ra & ~rb)), int(np.sum(~ra & rb)),
        both_correct=int(np.sum(ra & rb)), both_wrong=int(np.sum(~ra & ~rb)),
    )


def _bootstrap_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(resamples, dtype=np.float64)
    n = x.size
    for start in range(0, resamples, _BOOTSTRAP_CHUNK):
        stop = min(resamples, start + _BOOTSTRAP_CHUNK)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(x[idx], axis=1)
    return out


def _check_sample(samples: Sequence[float], name: str = "samples") -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has non-finite values")
    return x


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    _z(confidence)  # validates
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def bootstrap_median_interval(
    samples: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval (low, high) for the median of `samples`.

    Resamples with replacement `resamples` times using numpy's PCG64 seeded with `seed`, so
    the same latencies always give the same interval.
    """
    x = _check_sample(samples)
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    meds = _bootstrap_medians(x, resamples, np.random.default_rng(seed))
    return _percentiles(meds, confidence)


def bootstrap_ratio_interval(
    numerator: Sequence[float], denominator: Sequence[float], *, confidence: float = 0.95,
    resamples: int = 2000, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for median(numerator) / median(denominator).

    The two samples are resampled independently (they are separate timing runs).
    """
    x = _check_sample(numerator, "numerator")
    y = _check_sample(denominator, "denominator")
    rng = np.random.default_rng(seed)
    mx = _bootstrap_medians(x, resamples, rng)
    my = _bootstrap_medians(y, resamples, rng)
    if np.any(my == 0):
        raise ValueError("a bootstrap median of the denominator is zero")
    return _percentiles(mx / my, confidence)


def class_counts(predictions: Sequence[int], labels: Sequence[int], classes: int = 10
                 ) -> list[tuple[int, int]]:
    """(correct, total) per class 0..classes-1."""
    p = np.asarray(predictions)
    y = np.asarray(labels)
    out: list[tuple[int, int]] = []
    for k in range(classes):
        mask = y == k
        out.append((int(np.sum(p[mask] == k)), int(np.sum(mask))))
    return out


# ---------------------------------------------------------------------------------------------
# a whole float32-vs-int8 run


class RunError(EdgeqError):
    """A run that is not an edgeq.compare/1 document or does not fit its evaluation labels."""


def check_run(run: Any) -> None:
    """Raise RunError unless `run` is an `edgeq.compare/1` document with both models."""
    if not isinstance(run, dict) or run.get("schema") != COMPARE_SCHEMA:
        got = run.get("schema") if isinstance(run, dict) else type(run).__name__
        raise RunError(f"the run has schema {got!r}, expected {COMPARE_SCHEMA!r}",
                       hint="pass the JSON that edgeq bench-remote --json wrote, or a run id")
    for kind in MODEL_KINDS:
        if not isinstance((run.get("models") or {}).get(kind), dict):
            raise RunError(f"the run has no {kind} model entry",
                           hint="pass a complete edgeq.compare/1 document")


def run_predictions(entry: dict[str, Any]) -> Optional[np.ndarray]:
    """A model entry's evaluation predictions as int64 (None when it was not evaluated)."""
    preds = predictions(entry)
    return None if preds is None else np.asarray(preds, dtype=np.int64)


def run_latencies(entry: dict[str, Any]) -> np.ndarray:
    """A model entry's timed batch-1 latencies (ms), pooled over its rounds."""
    lat = entry.get("latencies_ms")
    if lat is None:
        lat = ((entry.get("result") or {}).get("timing") or {}).get("latencies_ms") or []
    return np.asarray(lat, dtype=np.float64)


_MISMATCH_HINT = "pass the --artifacts directory this run was measured with"


def _model_statistics(entry: dict[str, Any], labels: Optional[np.ndarray], kind: str
                      ) -> tuple[dict[str, Any], Optional[np.ndarray]]:
    m: dict[str, Any] = {key: entry.get(key) for key in RATIO_KEYS}
    m["runs"] = entry.get("runs")
    p = run_predictions(entry)
    acc = (entry.get("result") or {}).get("accuracy") or {}
    if p is not None and labels is not None:
        if p.size > labels.size:
            raise RunError(f"{kind} has {p.size} predictions but the evaluation set only "
                           f"{labels.size} labels", hint=_MISMATCH_HINT)
        y = labels[: p.size]
        correct = int(np.sum(p == y))
        if acc.get("correct") is not None and int(acc["correct"]) != correct:
            raise RunError(f"{kind} predictions give {correct} correct with these labels, the "
                           f"device reported {acc['correct']}", hint=_MISMATCH_HINT)
        m["count"], m["correct"] = int(p.size), correct
        m["accuracy_ci"] = list(wilson_interval(correct, int(p.size), CONFIDENCE))
        classes = max(len(acc.get("per_class_top1") or []), int(acc.get("num_classes") or 0),
                      int(y.max()) + 1 if y.size else 0)
        m["per_class"] = [
            {"correct": c, "total": t,
             "ci": list(wilson_interval(c, t, CONFIDENCE)) if t else None}
            for c, t in class_counts(p, y, classes)
        ]
    else:
        p = None
        if acc.get("count") and acc.get("correct") is not None:
            m["count"], m["correct"] = int(acc["count"]), int(acc["correct"])
            m["accuracy_ci"] = list(wilson_interval(m["correct"], m["count"], CONFIDENCE))
    m["per_class_top1"] = acc.get("per_class_top1")
    m["accuracy_top5"] = entry.get("accuracy_top5", acc.get("top5"))
    if acc.get("correct_top5") is not None and m.get("count"):
        m["correct_top5"] = int(acc["correct_top5"])
        m["accuracy_top5_ci"] = list(wilson_interval(m["correct_top5"], int(m["count"]),
                                                     CONFIDENCE))
    lat = run_latencies(entry)
    m["latency_samples"] = int(lat.size)
    m["latency_ms_p50_ci"] = (list(bootstrap_median_interval(
        lat, confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED))
        if lat.size else None)
    return m, p


def run_statistics(run: dict[str, Any], labels: Optional[np.ndarray]) -> dict[str, Any]:
    """The derived numbers of a run (JSON-able): per model the run's metrics with the Wilson
    interval of top-1 (and of top-5 when the device reported it), per-class counts (one per
    class the model has) and the bootstrap interval of the latency median;
    int8/float32 ratios (with a bootstrap interval for the latency median's), the accuracy
    delta in points, agreement, McNemar's test and the indices of changed predictions.

    Checks that the predictions match the labels of the evaluation set (the `correct` count the
    device reported must be what the labels give), so a report never mixes two runs.
    """
    check_run(run)
    out: dict[str, Any] = {"models": {}, "mcnemar": None, "changed_indices": []}
    preds: dict[str, np.ndarray] = {}
    for kind in MODEL_KINDS:
        out["models"][kind], p = _model_statistics(run["models"][kind], labels, kind)
        if p is not None:
            preds[kind] = p
    lat_f, lat_q = (run_latencies(run["models"][k]) for k in MODEL_KINDS)
    out["latency_ms_p50_ratio_ci"] = (list(bootstrap_ratio_interval(
        lat_q, lat_f, confidence=CONFIDENCE, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED))
        if lat_f.size and lat_q.size else None)
    given = run.get("ratios") or {}
    derived = ratios(out["models"]["float32"], out["models"]["int8"])
    out["ratios"] = {k: given[k] if given.get(k) is not None else derived[k] for k in RATIO_KEYS}
    fa, qa = out["models"]["float32"].get("accuracy"), out["models"]["int8"].get("accuracy")
    out["accuracy_delta_pp"] = None if fa is None or qa is None else (qa - fa) * 100.0
    out["agreement"] = run.get("agreement")
    if "float32" in preds and "int8" in preds and labels is not None:
        pf, pq = preds["float32"], preds["int8"]
        if pf.size != pq.size:
            raise RunError("the two models were evaluated on different numbers of images",
                           hint="run bench-remote again with one --eval-limit")
        out["mcnemar"] = mcnemar(pf, pq, labels[: pf.size]).to_dict()
        out["changed_indices"] = [int(i) for i in np.flatnonzero(pf != pq)]
        if out["agreement"] is None:
            out["agreement"] = float(np.mean(pf == pq))
    return out


# ------------------------------------------------------------------ calibration methods (sweep)


def paired_difference_interval(both_correct: int, a_only: int, b_only: int, both_wrong: int,
                               confidence: float = 0.95) -> tuple[float, float]:
    """Interval for acc(A) - acc(B) on paired images (Newcombe 1998, method 10).

    Built from the Wilson intervals (l1, u1) of acc(A) = (n11 + n10) / n and (l2, u2) of
    acc(B) = (n11 + n01) / n, corrected for the pairing by phi, the correlation of the 2x2
    table (0 when a margin is empty): with d = acc(A) - acc(B),
        low  = d - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        high = d + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2).
    n11 = both_correct, n10 = a_only (A right, B wrong), n01 = b_only, n00 = both_wrong.
    """
    a, b, c, d = both_correct, a_only, b_only, both_wrong
    if min(a, b, c, d) < 0:
        raise ValueError("the 2x2 counts must be >= 0")
    n = a + b + c + d
    if n == 0:
        return (-1.0, 1.0)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom else 0.0
    diff = p1 - p2
    lo = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)
                              + (u2 - p2) ** 2))
    hi = diff + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2)
                              + (p2 - l2) ** 2))
    return (max(-1.0, lo), min(1.0, hi))


def _is_minmax(p: dict[str, Any]) -> bool:
    return p.get("method", "minmax") == "minmax" and not p.get("float_fallback")


def minmax_baseline(point: dict[str, Any], points: Sequence[dict[str, Any]]
                    ) -> Optional[dict[str, Any]]:
    """The converter's Min-Max variant a sweep point is tested against: same weight
    granularity and calibration size, else same granularity (largest size), else any."""
    mm = [p for p in points if _is_minmax(p)]
    for same in (lambda p: (p.get("granularity"), p.get("calibration_size"))
                 == (point.get("granularity"), point.get("calibration_size")),
                 lambda p: p.get("granularity") == point.get("granularity"),
                 lambda p: True):
        found = sorted((p for p in mm if same(p)), key=lambda p: -int(p.get("calibration_size")
                                                                        or 0))
        if found:
            return found[0]
    return None


def variant_name(p: dict[str, Any]) -> str:
    """A sweep point's name: its directory's last part ("per-channel-cal100", ...)."""
    return str(p.get("dir") or "?").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def method_comparison(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per sweep variant: int8 top-1 (%) with its Wilson 95% interval, the drop vs
    float32 in points with a paired (Newcombe) 95% interval, and McNemar's test against the
    converter's Min-Max variant of the same granularity and calibration size (`minmax_baseline`;
    b = images Min-Max gets right and the variant wrong, c = the reverse). Without stored
    predictions (a sweep.json older than issue 12) the paired numbers are None and the
    intervals use the recorded top-1 over `eval_count` images."""
    points = list(sweep.get("points") or [])
    labels = np.asarray(sweep.get("labels") or [], dtype=np.int64)
    pf = np.asarray(sweep.get("float32_predictions") or [], dtype=np.int64)
    rows = []
    for p in points:
        pq = np.asarray(p.get("int8_predictions") or [], dtype=np.int64)
        paired = labels.size > 0 and pq.size == labels.size
        n = int(labels.size if paired else sweep.get("eval_count") or 0)
        correct = int(np.sum(pq == labels)) if paired else round(float(p["int8_top1"]) * n)
        ci = wilson_interval(correct, n) if n else (None, None)
        drop_ci: tuple[Optional[float], Optional[float]] = (None, None)
        if paired and pf.size == labels.size:
            m = mcnemar(pf, pq, labels)
            lo, hi = paired_difference_interval(m.both_correct, m.a_only, m.b_only,
                                                m.both_wrong)
            drop_ci = (100.0 * lo, 100.0 * hi)
        base = minmax_baseline(p, points)
        row: dict[str, Any] = {
            "variant": variant_name(p), "method": p.get("method", "minmax"),
            "weights": p.get("granularity"), "calibration": p.get("calibration_size"),
            "fallback": int(p.get("float_fallback") or 0),
            "quantizer": p.get("quantizer", "tflite-converter"),
            "int8_top1_pct": 100.0 * float(p["int8_top1"]),
            "int8_top1_ci_low_pct": None if ci[0] is None else 100.0 * ci[0],
            "int8_top1_ci_high_pct": None if ci[1] is None else 100.0 * ci[1],
            "drop_pp": 100.0 * (float(p["float32_top1"]) - float(p["int8_top1"])),
            "drop_ci_low_pp": drop_ci[0], "drop_ci_high_pp": drop_ci[1],
            "baseline": None if base is None else variant_name(base),
            "mcnemar_b": None, "mcnemar_c": None, "mcnemar_p": None,
        }
        bq = np.asarray((base or {}).get("int8_predictions") or [], dtype=np.int64)
        if base is not None and base is not p and paired and bq.size == labels.size:
            m = mcnemar(bq, pq, labels)
            row.update(mcnemar_b=m.a_only, mcnemar_c=m.b_only, mcnemar_p=m.p_value)
        rows.append(row)
    return rows


def robustness_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """edgeq.robustness/1 as rows: per model and corruption, the clean top-1 (%), top-1 (%) per
    severity and the float32 - model gap in points (mean over the severities; None for
    float32)."""
    rows = []
    sevs = [str(s) for s in doc.get("severities") or []]
    for m in doc.get("models") or []:
        for c in doc.get("corruptions") or []:
            top = (m.get("top1") or {}).get(c) or {}
            rows.append({"model": m["name"], "corruption": c,
                         "clean (%)": 100.0 * float(m["clean_top1"]),
                         **{f"severity {s} (%)": None if top.get(s) is None
                            else 100.0 * float(top[s]) for s in sevs},
                         "gap vs float32 (pp)": (m.get("gap_points") or {}).get(c)})
    return rows
