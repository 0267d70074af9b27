"""edgeq.host.robustness: corrupted copies are deterministic from the seed, keep shape and
dtype, and move further from the clean images as the severity grows (numpy/scipy, fast)."""
from __future__ import annotations

import numpy as np
import pytest
from edgeq.host import robustness as rb


def _digits() -> np.ndarray:
    """24 synthetic 28x28 uint8 'digits': a bright bar at varying places on black."""
    x = np.zeros((24, 28, 28), dtype=np.uint8)
    for i in range(24):
        x[i, 4 + i // 3: 10 + i // 3, 6:22] = 200 + i
        x[i, 6:22, 10 + i % 8: 14 + i % 8] = 255
    return x


@pytest.mark.parametrize("name", rb.CORRUPTIONS)
def test_corruption_is_deterministic_and_keeps_shape_and_dtype(name: str) -> None:
    x = _digits()
    a, b = rb.corrupt(x, name, 2, seed=7), rb.corrupt(x, name, 2, seed=7)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert np.array_equal(a, b)
    assert not np.array_equal(a, x)
    assert a.min() >= x.min() and a.max() <= x.max()


@pytest.mark.parametrize("name", ["gaussian_noise", "rotation"])
def test_random_corruptions_change_with_the_seed(name: str) -> None:
    x = _digits()
    assert not np.array_equal(rb.corrupt(x, name, 2, seed=1), rb.corrupt(x, name, 2, seed=2))


@pytest.mark.parametrize("name", rb.CORRUPTIONS)
def test_severity_is_monotonic(name: str) -> None:
    x = _digits()
    dist = [float(np.mean(np.abs(rb.corrupt(x, name, s, seed=0).astype(np.float32)
                                 - x.astype(np.float32)))) for s in rb.SEVERITIES]
    assert dist[0] > 0 and dist[0] < dist[1] < dist[2], dist


def test_float_model_ready_images_and_channels() -> None:
    x = (_digits().astype(np.float32) / 255.0)[..., None]  # (N, 28, 28, 1) in 0..1
    y = rb.corrupt(x, "blur", 3, seed=0)
    assert y.dtype == np.float32 and y.shape == x.shape and 0.0 <= y.min() and y.max() <= 1.0


def test_bad_names_and_severities() -> None:
    with pytest.raises(rb.RobustnessError, match="unknown corruption"):
        rb.corrupt(_digits(), "snow", 1)
    with pytest.raises(rb.RobustnessError, match="severity"):
        rb.corrupt(_digits(), "blur", 4)
    with pytest.raises(rb.RobustnessError, match="unknown corruption fog"):
        rb.parse_corruptions("blur,fog")
    assert rb.parse_corruptions(" blur , rotation") == ("blur", "rotation")


def test_robustness_of_the_session_model(tiny_artifacts, tmp_path) -> None:
    """Real LiteRT on real corrupted copies: the JSON's numbers, and clean top-1 = evaluate's."""
    import json
    import shutil

    from edgeq.host.evaluate import evaluate

    d = tmp_path / "art"
    shutil.copytree(tiny_artifacts, d)
    doc = rb.robustness(d, corruptions=("blur", "brightness"), severities=(1, 3), limit=200)
    assert doc["schema"] == "edgeq.robustness/1" and doc["count"] == 200
    assert json.loads((d / "robustness.json").read_text()) == doc
    f32, i8 = doc["models"]
    assert (f32["kind"], i8["kind"]) == ("float32", "int8") and f32["gap_points"] is None
    ev = evaluate(d, limit=200)
    assert f32["clean_top1"] == ev["models"]["float32"]["top1"]
    assert i8["clean_top1"] == ev["models"]["int8"]["top1"]
    for c in ("blur", "brightness"):
        assert set(i8["top1"][c]) == {"1", "3"}
        want = 100 * ((f32["top1"][c]["1"] - i8["top1"][c]["1"])
                      + (f32["top1"][c]["3"] - i8["top1"][c]["3"])) / 2
        assert i8["gap_points"][c] == pytest.approx(want, abs=1e-3)
    # a stronger corruption does not help: severity 3 is no better than clean on average
    assert np.mean([f32["top1"][c]["3"] for c in ("blur", "brightness")]) <= f32["clean_top1"]
    assert i8["method"] == "minmax" and i8["granularity"] == "per-channel"
