"""edgeq.host.calibration: the range each method chooses on known arrays (pure numpy, fast),
and the one-line errors for bad method names."""
from __future__ import annotations

import numpy as np
import pytest
from edgeq.host import calibration as cal


def _stats(values: np.ndarray, batch: int = 10_000) -> cal.TensorStats:
    s = cal.TensorStats()
    chunks = [values[i:i + batch] for i in range(0, len(values), batch)]
    for c in chunks:
        s.observe_batch(c)
    for c in chunks:
        s.observe_histogram(c)
    return s


def _bulk_with_outlier() -> np.ndarray:
    """100,000 values uniform in [0, 1) and one outlier at 50 (a ReLU output with a tail)."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.random(100_000), [50.0]])


def test_minmax_is_the_extremes_with_zero() -> None:
    assert cal.minmax_range(_stats(np.array([0.5, 2.0, 3.0]))) == (0.0, 3.0)
    assert cal.minmax_range(_stats(np.array([-1.0, 2.0]))) == (-1.0, 2.0)


def test_percentile_clips_the_outlier() -> None:
    s = _stats(_bulk_with_outlier())
    lo, hi = cal.choose_range(cal.parse_method("percentile:99.9"), s)
    assert lo == 0.0
    # the 99.9th percentile of uniform [0, 1) is 0.999, within one histogram bin (50/2048)
    assert abs(hi - 0.999) < 50.0 / cal.HIST_BINS + 1e-9
    assert cal.clipped_fraction(s, lo, hi) < 0.002


def test_percentile_two_sided_for_signed_values() -> None:
    rng = np.random.default_rng(1)
    s = _stats(rng.standard_normal(200_000))
    lo, hi = cal.percentile_range(s, 99.0)
    assert abs(lo + 2.326) < 0.05 and abs(hi - 2.326) < 0.05  # +-z(0.99)


def test_mse_range_clips_a_heavy_tail_and_keeps_a_uniform_range() -> None:
    # Laplace(b=1): the 8-bit MSE-optimal clip is about 9.9 b (Banner et al., ACIQ), well
    # inside the sample's max (~12 for 200,000 samples)
    rng = np.random.default_rng(3)
    s = _stats(rng.laplace(0.0, 1.0, 200_000))
    lo, hi = cal.mse_range(s)
    assert 8.5 < hi < 11.0 and -11.0 < lo < -8.5 and hi < cal.minmax_range(s)[1] - 0.5
    # one outlier among 100,000 values in [0, 1): clipping it costs more than it saves
    lo, hi = cal.mse_range(_stats(_bulk_with_outlier()))
    assert hi > 40.0  # kept (almost) whole, not clipped to the bulk
    u = np.linspace(0.0, 1.0, 10_001)
    lo, hi = cal.mse_range(_stats(u))
    assert lo == 0.0 and hi > 0.98  # nothing to clip: (almost) the whole range
    # the chosen range has no more error than Min-Max's
    s = _stats(rng.laplace(0.0, 1.0, 200_000))
    mm = cal.minmax_range(s)
    assert cal.quantization_mse(s.hist, s.edges, *cal.mse_range(s)) < \
        cal.quantization_mse(s.hist, s.edges, *mm)


def test_moving_average_follows_the_formula() -> None:
    # 4 batches (batch of 1 sample each) with maxima 1, 2, 3, 10 and minima 0
    values = np.array([1.0, 2.0, 3.0, 10.0])
    s = _stats(values, batch=1)
    lo, hi = cal.moving_average_range(s, batch=1, decay=0.5)
    want = ((1.0 * 0.5 + 2.0 * 0.5) * 0.5 + 3.0 * 0.5) * 0.5 + 10.0 * 0.5
    assert lo == 0.0 and hi == pytest.approx(want)
    # grouping 2 observations per batch: maxima 2 and 10
    assert cal.moving_average_range(s, batch=2, decay=0.5)[1] == pytest.approx(6.0)


def test_every_range_contains_zero() -> None:
    s = _stats(np.array([2.0, 3.0, 4.0]))
    for text in ("minmax", "aeq-minmax", "percentile:99", "mse", "moving-average"):
        lo, hi = cal.choose_range(cal.parse_method(text), s)
        assert lo <= 0.0 < hi, text


def test_quantization_noise_grows_with_an_outlier() -> None:
    rng = np.random.default_rng(2)
    bulk = rng.random(50_000)
    plain, tailed = _stats(bulk), _stats(np.concatenate([bulk, [100.0]]))
    assert cal.quantization_noise(tailed, *cal.minmax_range(tailed)) > \
        10 * cal.quantization_noise(plain, *cal.minmax_range(plain))


@pytest.mark.parametrize("text, label", [
    ("minmax", "minmax"), ("MSE", "mse"), (" percentile:99.99 ", "percentile:99.99"),
    ("moving-average", "moving-average"), ("aeq-minmax", "aeq-minmax")])
def test_parse_method(text: str, label: str) -> None:
    assert cal.parse_method(text).label == label


@pytest.mark.parametrize("text, fragment", [
    ("percentile:101", "between 50 and 100"), ("percentile:abc", "needs a number"),
    ("percentile:", "needs a number"), ("foo", "unknown calibration method"),
    ("mse:3", "unknown calibration method"), ("percentile:nan", "between 50 and 100")])
def test_bad_methods_are_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(cal.CalibrationMethodError) as info:
        cal.parse_method(text)
    assert fragment in info.value.message and "\n" not in info.value.message
    assert info.value.hint


def test_parse_methods_refuses_repeats_and_empty() -> None:
    assert [m.label for m in cal.parse_methods("minmax,percentile:99.9,mse")] == \
        ["minmax", "percentile:99.9", "mse"]
    for bad in ("", "mse,mse"):
        with pytest.raises(cal.CalibrationMethodError):
            cal.parse_methods(bad)


def test_quantizer_of_each_method() -> None:
    assert cal.parse_method("minmax").quantizer == "tflite-converter"
    for text in ("aeq-minmax", "percentile:99.9", "mse", "moving-average"):
        assert cal.parse_method(text).quantizer == "ai-edge-quantizer"


# ------------------------------------------------------------------- weight thresholds (numpy)


def test_weight_thresholds_per_channel_follow_the_definitions() -> None:
    from edgeq.host.calibration import clip_weights, weight_thresholds

    rng = np.random.default_rng(3)
    # 4 output channels on axis 3 (a depthwise kernel's layout), ranges 100x apart
    w = rng.laplace(0, 1, size=(40, 50, 1, 4)) * np.array([1.0, 10.0, 0.1, 1.0])
    flat = np.abs(np.moveaxis(w, 3, 0).reshape(4, -1))
    mm = weight_thresholds(cal.parse_method("minmax"), w, 3)
    np.testing.assert_allclose(mm, flat.max(axis=1))
    pct = weight_thresholds(cal.parse_method("percentile:99"), w, 3)
    np.testing.assert_allclose(pct, np.percentile(flat, 99, axis=1))
    one = weight_thresholds(cal.parse_method("percentile:99"), w, None)
    assert one.shape == (1,) and one[0] == pytest.approx(np.percentile(flat, 99))
    mse = weight_thresholds(cal.parse_method("mse"), w, 3)
    assert np.all(mse < mm)  # a Laplace tail is clipped: rounding the bulk matters more
    c = clip_weights(w.astype(np.float32), pct, 3)
    assert c.dtype == np.float32 and c.shape == w.shape
    np.testing.assert_allclose(np.abs(np.moveaxis(c, 3, 0).reshape(4, -1)).max(axis=1), pct,
                               rtol=1e-6)


def test_mse_weight_threshold_minimises_the_error_on_its_grid() -> None:
    from edgeq.host.calibration import MSE_STEPS, weight_mse, weight_threshold

    w = np.random.default_rng(0).laplace(0, 0.05, 20000)
    top = float(np.abs(w).max())
    t = weight_threshold(cal.parse_method("mse"), w)
    grid = [top * k / MSE_STEPS for k in range(1, MSE_STEPS + 1)]
    assert weight_mse(w, t) == pytest.approx(min(weight_mse(w, g) for g in grid))
    assert t < top and weight_mse(w, t) < weight_mse(w, top)
    # the Min-Max methods keep max|w|
    for name in ("minmax", "aeq-minmax", "moving-average"):
        assert weight_threshold(cal.parse_method(name), w) == top
