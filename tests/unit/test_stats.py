"""edgeq.host.stats against values worked out by hand (see each test's comment)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from edgeq.host import stats


def test_wilson_95_of_100() -> None:
    # p = .95, z = 1.959964, z^2/n = .0384146:
    # center = (.95 + .0192073) / 1.0384146 = .933353
    # half = 1.959964 * sqrt(.95 * .05 / 100 + .0384146 / 400) / 1.0384146 = .045104
    low, high = stats.wilson_interval(95, 100)
    assert low == pytest.approx(0.888250, abs=1e-6)
    assert high == pytest.approx(0.978456, abs=1e-6)


def test_wilson_edges_and_width() -> None:
    # 0 of 10: upper bound z^2 / (n + z^2) = 3.841459 / 13.841459 = .277533
    assert stats.wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    assert stats.wilson_interval(10, 10) == (pytest.approx(0.722467, abs=1e-6), 1.0)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    # more data, narrower interval; higher confidence, wider interval
    w100 = np.diff(stats.wilson_interval(95, 100))[0]
    w10000 = np.diff(stats.wilson_interval(9500, 10000))[0]
    assert w10000 < w100 / 5
    assert np.diff(stats.wilson_interval(95, 100, 0.99))[0] > w100
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)


def test_mcnemar_exact_b10_c2() -> None:
    # 12 discordant pairs < 25 -> exact: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096
    r = stats.mcnemar_counts(10, 2)
    assert r.method == "exact-binomial"
    assert r.p_value == pytest.approx(158 / 4096, rel=1e-12)  # 0.038574
    assert r.significant(0.05) and not r.significant(0.01)


def test_mcnemar_chi2_with_continuity_correction() -> None:
    # b=10, c=2 as chi-square: (|10-2| - 1)^2 / 12 = 49/12 = 4.0833, p = erfc(sqrt(4.0833/2))
    stat, p = stats.chi2_cc_p(10, 2)
    assert stat == pytest.approx(49 / 12)
    assert p == pytest.approx(0.043308, abs=1e-6)
    # 40 discordant pairs -> chi-square branch: (|30-10| - 1)^2 / 40 = 9.025, p = 0.002663
    r = stats.mcnemar_counts(30, 10)
    assert r.method == "chi2-cc"
    assert r.statistic == pytest.approx(9.025)
    assert r.p_value == pytest.approx(0.0026631, abs=1e-7)


def test_mcnemar_no_and_balanced_discordance() -> None:
    assert stats.mcnemar_counts(0, 0).p_value == 1.0
    assert stats.mcnemar_counts(5, 5).p_value == 1.0  # min(1, 2 * 0.623) = 1
    assert stats.mcnemar_counts(3, 0).p_value == pytest.approx(0.25)  # 2 * 1/8


def test_mcnemar_from_predictions() -> None:
    labels = [0, 1, 2, 3, 4, 5, 6, 7]
    a = [0, 1, 2, 3, 4, 5, 0, 0]   # right on 0..5
    b = [0, 1, 2, 0, 0, 0, 6, 0]   # right on 0..2 and 6
    r = stats.mcnemar(a, b, labels)
    assert (r.both_correct, r.a_only, r.b_only, r.both_wrong) == (3, 3, 1, 1)
    assert r.n == 8 and r.discordant == 4
    assert r.p_value == pytest.approx(2 * (1 + 4) / 16)  # exact: 2 * P[X <= 1 | n=4]
    with pytest.raises(ValueError):
        stats.mcnemar(a, b[:-1], labels)


def test_bootstrap_median_interval_is_seeded_and_covers_the_median() -> None:
    rng = np.random.default_rng(1)
    lat = rng.lognormal(mean=0.0, sigma=0.3, size=500)
    a = stats.bootstrap_median_interval(lat, seed=7)
    b = stats.bootstrap_median_interval(lat, seed=7)
    c = stats.bootstrap_median_interval(lat, seed=8)
    assert a == b and a != c
    med = float(np.median(lat))
    assert a[0] < med < a[1]
    # the median's standard error is about 1.2533 * sigma / sqrt(n) for a normal-ish shape:
    # the 95 % interval should be a few percent wide, not 0 and not the whole range
    assert 0.01 < (a[1] - a[0]) / med < 0.15


def test_bootstrap_constant_sample_and_ratio() -> None:
    assert stats.bootstrap_median_interval([2.0] * 50, resamples=100) == (2.0, 2.0)
    x = np.linspace(1.0, 2.0, 201)
    low, high = stats.bootstrap_ratio_interval(x * 0.5, x, seed=0)
    assert low < 0.5 < high and high - low < 0.2
    with pytest.raises(ValueError):
        stats.bootstrap_median_interval([])
    with pytest.raises(ValueError):
        stats.bootstrap_median_interval([1.0, math.nan])


def test_class_counts() -> None:
    assert stats.class_counts([0, 1, 1, 2], [0, 1, 2, 2], classes=3) == [(1, 1), (1, 1), (1, 2)]


def _entry(preds: list[int], latencies: list[float], labels: list[int]) -> dict:
    correct = sum(p == y for p, y in zip(preds, labels))
    return {"size_bytes": 1000, "accuracy": correct / len(preds), "latencies_ms": latencies,
            "runs": len(latencies),
            "result": {"accuracy": {"predictions": preds, "correct": correct,
                                    "count": len(preds)}}}


def test_run_statistics_of_a_small_run() -> None:
    """6 images: float32 gets 5 right, int8 4 (b = 2 images only float32 gets right, c = 1)."""
    y = [0, 1, 2, 3, 4, 5]
    pf = [0, 1, 2, 3, 4, 0]
    pq = [0, 1, 9, 9, 4, 5]
    run = {"schema": "edgeq.compare/1", "ratios": {},
           "models": {"float32": _entry(pf, [1.0, 2.0, 3.0], y),
                      "int8": _entry(pq, [0.5, 1.0, 1.5], y)}}
    s = stats.run_statistics(run, np.asarray(y))
    assert s["models"]["float32"]["correct"] == 5 and s["models"]["int8"]["correct"] == 4
    assert s["models"]["int8"]["accuracy_ci"] == list(stats.wilson_interval(4, 6))
    assert s["mcnemar"]["a_only"] == 2 and s["mcnemar"]["b_only"] == 1
    assert s["changed_indices"] == [2, 3, 5]
    assert s["agreement"] == pytest.approx(3 / 6)
    assert s["accuracy_delta_pp"] == pytest.approx(100 * (4 / 6 - 5 / 6))
    assert s["ratios"]["size_bytes"] == 1.0  # derived when the run carries none
    assert s["ratios"]["latency_ms_p50"] is None  # no p50 key in these entries
    # the device's count must be what the labels give
    run["models"]["int8"]["result"]["accuracy"]["correct"] = 5
    with pytest.raises(stats.RunError, match="give 4 correct"):
        stats.run_statistics(run, np.asarray(y))
    with pytest.raises(stats.RunError, match="schema"):
        stats.check_run({"schema": "edgeq.bench/1"})
    with pytest.raises(stats.RunError, match="no int8 model entry"):
        stats.check_run({"schema": "edgeq.compare/1", "models": {"float32": {}}})
