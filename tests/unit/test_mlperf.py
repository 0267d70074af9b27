"""edgeq.device.mlperf: MLPerf LoadGen's early-stopping rule, against values derived by hand,
MLPerf's own published constants, scipy's binomial, and a direct re-run of LoadGen's search
(min_passing(t) by the regularized incomplete beta function, then its loop over t)."""
from __future__ import annotations

import numpy as np
import pytest
from edgeq.device.mlperf import (
    CONFIDENCE,
    PERCENTILE,
    binomial_cdf,
    early_stopping_estimate,
    min_queries_for_estimate,
    overlatency_allowed,
)
from scipy.special import betainc
from scipy.stats import binom


def _min_passing(t: int, p: float, c: float, d: float = 0.0) -> int:
    """LoadGen's find_min_passing: the smallest h with I_{p-d}(h, t + 1) < 1 - c (the odds of
    t or fewer over-latency queries among h + t), by bisection on h."""
    lo, hi = 1, 2
    while betainc(hi, t + 1, p - d) >= 1 - c:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if betainc(mid, t + 1, p - d) < 1 - c:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _loadgen_t(n: int, p: float, c: float) -> int:
    """LoadGen's loop in PerformanceSummary::EarlyStopping (single stream): 0 when n is too
    few, else the t whose t-th largest latency is the estimate."""
    if n < _min_passing(1, p, c) + 1:
        return 0
    for i in range(2, n + 1):
        if n < _min_passing(i, p, c) + i:
            return i - 1
    raise AssertionError("LoadGen's loop always ends")


def test_hand_derived_values() -> None:
    """p = 0.5, c = 0.75: P[Bin(n, 1/2) <= 1] = (n + 1) / 2^n is 5/16 at n = 4 and 6/32 < 1/4 at
    n = 5, so 5 queries are the fewest; at n = 7, P[X <= 2] = 29/128 < 1/4 <= P[X <= 3] = 1/2,
    so t = 2: the second-largest latency."""
    assert min_queries_for_estimate(0.5, 0.75) == 5
    assert [overlatency_allowed(n, 0.5, 0.75) for n in (4, 5, 6, 7)] == [0, 1, 1, 2]
    est, rule = early_stopping_estimate([3.0, 1.0, 7.0, 5.0, 2.0, 6.0, 4.0], 0.5, 0.75)
    assert est == 6.0 and rule["overlatency_allowed"] == 2 and rule["discarded"] == 1
    assert rule["order_statistic"] == 6 and rule["queries"] == 7
    # p = 0.9, c = 0.99: 0.9^64 + 6.4 * 0.9^63 = 0.0096 < 0.01 <= 0.9^63 + 6.3 * 0.9^62 = 0.0105
    assert 0.9**64 + 6.4 * 0.9**63 < 0.01 <= 0.9**63 + 6.3 * 0.9**62
    assert min_queries_for_estimate() == 64
    assert overlatency_allowed(63) == 0 and overlatency_allowed(64) == 1


def test_mlperf_published_constant() -> None:
    """mlperf.conf's MultiStream min_query_count (662) is the early-stopping minimum at p99."""
    assert min_queries_for_estimate(0.99, 0.99) == 662


@pytest.mark.parametrize("n", [64, 65, 99, 100, 101, 257, 640, 1000, 2048])
def test_matches_loadgen_search(n: int) -> None:
    assert overlatency_allowed(n) == _loadgen_t(n, PERCENTILE, CONFIDENCE)


@pytest.mark.parametrize("n", [1, 10, 63, 64, 100, 1024, 4321, 100_000, 1_234_567])
def test_matches_scipy_binomial_quantile(n: int) -> None:
    """t = (the binomial's (1 - c)-quantile) - 1, floored at 0."""
    want = max(0, int(binom.ppf(1 - CONFIDENCE, n, 1 - PERCENTILE)) - 1)
    assert overlatency_allowed(n) == want


@pytest.mark.parametrize("k,n,q", [(0, 10, 0.1), (3, 50, 0.1), (100, 1000, 0.1),
                                   (12000, 123456, 0.1), (5, 5, 0.3), (-1, 5, 0.3)])
def test_binomial_cdf(k: int, n: int, q: float) -> None:
    assert binomial_cdf(k, n, q) == pytest.approx(float(binom.cdf(k, n, q)), rel=1e-9,
                                                  abs=1e-300)


def test_estimate_is_the_order_statistic_and_above_the_plain_p90() -> None:
    rng = np.random.default_rng(0)
    for n in (64, 100, 1000, 5000):
        lat = rng.permutation(np.arange(1, n + 1, dtype=np.float64))  # ranks as latencies
        est, rule = early_stopping_estimate(lat)
        t = overlatency_allowed(n)
        assert est == n - t + 1 == rule["order_statistic"]
        assert est >= np.percentile(lat, 90)  # the bound is never below the sample p90
        assert rule["percentile"] == 0.9 and rule["confidence"] == 0.99
        assert rule["queries"] == n and rule["min_queries"] == 64


def test_too_few_queries_give_no_estimate() -> None:
    est, rule = early_stopping_estimate([1.0] * 63)
    assert est is None and rule["overlatency_allowed"] is None
    assert rule["order_statistic"] is None and rule["queries"] == 63


@pytest.mark.parametrize("bad", [{"percentile": 1.0}, {"percentile": 0.0},
                                 {"confidence": 1.0}, {"tolerance": 0.95}])
def test_domain_is_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        overlatency_allowed(100, **bad)


def test_two_million_queries() -> None:
    """A 600 s run of a 0.3 ms model gives ~2 million queries (no underflow in log space)."""
    assert overlatency_allowed(2_000_000) == int(binom.ppf(0.01, 2_000_000, 0.1)) - 1
