"""MLPerf Inference's single-stream scenario: its early-stopping estimate of a latency percentile.

MLPerf LoadGen (mlcommons/inference, loadgen/early_stopping.cc and results.cc,
PerformanceSummary::EarlyStopping) does not report the plain 90th percentile of a
single-stream run: it reports an upper bound that holds with 99 % confidence, so a short run
cannot get a lucky low number. The rule, with p = 0.90 (the percentile), c = 0.99 (the
confidence), d = 0 (the tolerance) and N queries:

- a query is "over-latency" with probability 1 - p + d when the true p-percentile meets the
  bound; the odds of t or fewer over-latency queries among h + t are
  odds(h, t) = P[Binomial(h + t, 1 - p + d) <= t] = I_{p-d}(h, t + 1)
  (the regularized incomplete beta function LoadGen evaluates);
- min_passing(t) = the smallest h with odds(h, t) < 1 - c: how many under-latency queries
  must come with t over-latency ones to conclude, at confidence c, that the percentile holds;
- at least min_passing(1) + 1 queries are needed for any estimate (at p = 0.90, c = 0.99:
  64 queries; at p = 0.99: 662, MLPerf's multi-stream min_query_count);
- t = the largest t >= 1 with min_passing(t) + t <= N; because odds(N - t, t) =
  P[Binomial(N, 1 - p + d) <= t] grows with t, this is
  t = min{k : P[Binomial(N, 1 - p + d) <= k] >= 1 - c} - 1 (the binomial's (1 - c)-quantile
  minus one), found here in one pass over k;
- the estimate is the t-th largest latency: sorted ascending (0-based) index N - t, the
  (N - t + 1)-th order statistic; LoadGen "discards" the t - 1 highest latencies.

MLPerf's single-stream settings (loadgen/mlperf.conf, test_settings.h): target percentile 90,
min_duration 600 s, min_query_count 100 (the TestSettings default; mlperf.conf sets none for
SingleStream since early stopping, v1.1; rounds before it used 1024).
Pure functions, no I/O.
Imports: standard library, numpy.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

__all__ = [
    "PERCENTILE", "CONFIDENCE", "TOLERANCE", "MIN_DURATION_S", "MIN_QUERIES",
    "binomial_cdf", "overlatency_allowed", "min_queries_for_estimate",
    "early_stopping_estimate",
]

#: MLPerf single-stream: the 90th percentile, at 99 % confidence, no tolerance
PERCENTILE = 0.90
CONFIDENCE = 0.99
TOLERANCE = 0.0
#: MLPerf's single-stream min_duration (600 s) and LoadGen's default min_query_count
MIN_DURATION_S = 600.0
MIN_QUERIES = 100
RULE = "MLPerf LoadGen early stopping (single stream)"


def _check(p: float, c: float, d: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError(f"percentile must be in (0, 1), not {p}")
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {c}")
    if not 0.0 <= d < p:
        raise ValueError(f"tolerance must be in [0, percentile), not {d}")
    return 1.0 - p + d  # the over-latency probability


def binomial_cdf(k: int, n: int, q: float) -> float:
    """P[Binomial(n, q) <= k], summed in log space (exact for any n; no underflow)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    log_q, log_1q = math.log(q), math.log1p(-q)
    log_pmf = n * log_1q  # k = 0
    log_cdf = log_pmf
    for i in range(k):
        log_pmf += math.log(n - i) - math.log(i + 1) + log_q - log_1q
        hi, lo = max(log_cdf, log_pmf), min(log_cdf, log_pmf)
        log_cdf = hi + math.log1p(math.exp(lo - hi))
    return min(1.0, math.exp(log_cdf))


def overlatency_allowed(n: int, percentile: float = PERCENTILE,
                        confidence: float = CONFIDENCE, tolerance: float = TOLERANCE) -> int:
    """LoadGen's t for n queries: the largest t with min_passing(t) + t <= n, i.e.
    min{k : P[Binomial(n, 1 - p + d) <= k] >= 1 - c} - 1; 0 when n is too few for any
    estimate (fewer than `min_queries_for_estimate`)."""
    q = _check(percentile, confidence, tolerance)
    target = 1.0 - confidence
    if n < 1:
        return 0
    log_q, log_1q = math.log(q), math.log1p(-q)
    log_target = math.log(target)
    log_pmf = n * log_1q
    log_cdf = log_pmf
    k = 0
    while log_cdf < log_target and k < n:  # P[X <= k] < 1 - c: k over-latency queries pass
        log_pmf += math.log(n - k) - math.log(k + 1) + log_q - log_1q
        k += 1
        hi, lo = max(log_cdf, log_pmf), min(log_cdf, log_pmf)
        log_cdf = hi + math.log1p(math.exp(lo - hi))
    # k is now the first count whose CDF reaches 1 - c; every t < k passes
    return max(0, k - 1)


def min_queries_for_estimate(percentile: float = PERCENTILE, confidence: float = CONFIDENCE,
                             tolerance: float = TOLERANCE) -> int:
    """The fewest queries that give an estimate (LoadGen's min_passing(1) + 1): the smallest
    n with P[Binomial(n, 1 - p + d) <= 1] < 1 - c."""
    q = _check(percentile, confidence, tolerance)
    target = 1.0 - confidence
    # P[X <= 1] = (1-q)^n + n q (1-q)^(n-1) falls with n; start at the t = 0 bound
    n = max(2, int(math.ceil(math.log(target) / math.log1p(-q))))
    while binomial_cdf(1, n, q) >= target:
        n += 1
    while n > 2 and binomial_cdf(1, n - 1, q) < target:
        n -= 1
    return n


def early_stopping_estimate(latencies_ms: Sequence[float], percentile: float = PERCENTILE,
                            confidence: float = CONFIDENCE, tolerance: float = TOLERANCE
                            ) -> tuple[Optional[float], dict[str, Any]]:
    """(the early-stopping estimate of the `percentile` latency in ms, or None when there are
    too few queries; the rule it used: percentile, confidence, tolerance, queries,
    overlatency_allowed (t), discarded (t - 1), order_statistic (1-based rank from the
    fastest: n - t + 1), min_queries (the fewest that give an estimate), rule)."""
    n = len(latencies_ms)
    t = overlatency_allowed(n, percentile, confidence, tolerance)
    rule: dict[str, Any] = {
        "rule": RULE,
        "percentile": percentile,
        "confidence": confidence,
        "tolerance": tolerance,
        "queries": n,
        "overlatency_allowed": t if t >= 1 else None,
        "discarded": t - 1 if t >= 1 else None,
        "order_statistic": n - t + 1 if t >= 1 else None,
        "min_queries": min_queries_for_estimate(percentile, confidence, tolerance),
    }
    if t < 1:
        return None, rule
    a = np.asarray(latencies_ms, dtype=np.float64)
    return float(np.partition(a, n - t)[n - t]), rule
