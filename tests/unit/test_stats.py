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


# ------------------------------------------------------------------ calibration methods (sweep)


def test_paired_difference_interval_by_hand() -> None:
    # 2x2: both right 4, A only 2, B only 2, both wrong 1 (n = 9). ad - bc = 4 - 4 = 0, so
    # phi = 0. p1 = p2 = 6/9. Wilson(6, 9): z^2/n = .426829, denominator 1.426829,
    # centre (.666667 + .213415) / 1.426829 = .616810,
    # half 1.959964 * sqrt(.0246914 + .0118564) / 1.426829 = .262609 -> (.354201, .879419).
    # low = 0 - sqrt(.312466^2 + .212752^2) = -.378019, high = +.378019 (symmetric).
    lo, hi = stats.paired_difference_interval(4, 2, 2, 1)
    assert stats.wilson_interval(6, 9) == pytest.approx((0.354201, 0.879419), abs=2e-5)
    assert (lo, hi) == pytest.approx((-0.378019, 0.378019), abs=2e-5)
    # with a correlation: 40 / 6 / 2 / 2 (n = 50):
    # phi = (80 - 12) / sqrt(46 * 4 * 42 * 8) = 68 / 248.644 = .273483
    a, b, c, d = 40, 6, 2, 2
    phi = (a * d - b * c) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    assert phi == pytest.approx(0.273483, abs=1e-6)
    p1, p2 = 46 / 50, 42 / 50
    l1, u1 = stats.wilson_interval(46, 50)
    l2, u2 = stats.wilson_interval(42, 50)
    want_lo = 0.08 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    want_hi = 0.08 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    got = stats.paired_difference_interval(a, b, c, d)
    assert got == pytest.approx((want_lo, want_hi), rel=1e-12)
    assert got[0] < 0.08 < got[1]
    # swapping A and B mirrors the interval; no images: no information
    assert stats.paired_difference_interval(a, c, b, d) == pytest.approx((-got[1], -got[0]))
    assert stats.paired_difference_interval(0, 0, 0, 0) == (-1.0, 1.0)
    with pytest.raises(ValueError):
        stats.paired_difference_interval(1, -1, 0, 0)


def _point(method: str, gran: str, preds: list[int], **kw: object) -> dict[str, object]:
    labels = list(range(10))
    return {"dir": f"sweep/{method}-{gran}", "method": method, "granularity": gran,
            "calibration_size": 100, "float_fallback": 0, "int8_predictions": preds,
            "int8_top1": float(np.mean(np.asarray(preds) == labels)), "float32_top1": 0.9,
            "int8_size_bytes": 1000, **kw}


def test_method_comparison_by_hand() -> None:
    # labels 0..9; float32 wrong on image 9 only (top-1 .9).
    # Min-Max per-tensor: wrong on 8, 9 (.8). percentile: wrong on 0, 1, 2, 9 (.6).
    # Against Min-Max: b = Min-Max right & percentile wrong = {0, 1, 2} = 3,
    # c = Min-Max wrong & percentile right = {8} = 1: exact binomial, 2 * (1 + 4) / 16 = .625.
    labels = list(range(10))
    mm = _point("minmax", "per-tensor", [0, 1, 2, 3, 4, 5, 6, 7, 0, 0])
    pc = _point("percentile:99.9", "per-tensor", [9, 9, 9, 3, 4, 5, 6, 7, 8, 0])
    other = _point("minmax", "per-channel", labels[:9] + [0])
    doc = {"labels": labels, "float32_predictions": labels[:9] + [0], "eval_count": 10,
           "points": [mm, pc, other]}
    rows = {r["variant"]: r for r in stats.method_comparison(doc)}
    r = rows["percentile:99.9-per-tensor"]
    assert r["baseline"] == "minmax-per-tensor"  # same granularity, not the per-channel one
    assert (r["mcnemar_b"], r["mcnemar_c"]) == (3, 1)
    assert r["mcnemar_p"] == pytest.approx(0.625)
    assert r["int8_top1_pct"] == pytest.approx(60.0)
    assert (r["int8_top1_ci_low_pct"], r["int8_top1_ci_high_pct"]) == pytest.approx(
        tuple(100 * v for v in stats.wilson_interval(6, 10)))
    assert r["drop_pp"] == pytest.approx(30.0)
    # float32 vs percentile: both right 6 (3..8), float only 3 (0, 1, 2), int8 only 0,
    # both wrong 1 (9)
    lo, hi = stats.paired_difference_interval(6, 3, 0, 1)
    assert (r["drop_ci_low_pp"], r["drop_ci_high_pp"]) == pytest.approx((100 * lo, 100 * hi))
    base = rows["minmax-per-tensor"]
    assert base["mcnemar_p"] is None and base["baseline"] == "minmax-per-tensor"
    # a sweep without predictions (before issue 12): Wilson from top-1 x eval_count only
    old = stats.method_comparison({"eval_count": 10, "points": [
        {k: v for k, v in pc.items() if k != "int8_predictions"}]})[0]
    assert old["mcnemar_p"] is None and old["drop_ci_low_pp"] is None
    assert old["int8_top1_ci_low_pct"] == pytest.approx(100 * stats.wilson_interval(6, 10)[0])


def test_robustness_rows() -> None:
    doc = {"corruptions": ["blur"], "severities": [1, 2], "models": [
        {"name": "float32", "clean_top1": 0.9, "top1": {"blur": {"1": 0.8, "2": 0.5}},
         "gap_points": None},
        {"name": "int8", "clean_top1": 0.85, "top1": {"blur": {"1": 0.7, "2": 0.4}},
         "gap_points": {"blur": 10.0}}]}
    rows = stats.robustness_rows(doc)
    assert rows[1] == {"model": "int8", "corruption": "blur", "clean (%)": 85.0,
                       "severity 1 (%)": 70.0, "severity 2 (%)": 40.0,
                       "gap vs float32 (pp)": 10.0}
    assert rows[0]["gap vs float32 (pp)"] is None
