"""Each calibration method on the session's small real model: the file ai-edge-quantizer (or
the converter) writes is full-integer int8, the manifest says which method, parameters and
quantizer made it, and the ranges recorded are the ones the method chose. Bad method names
are one-line errors before anything is written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from edgeq.host.calibration import CalibrationMethodError
from edgeq.host.tflite_file import full_integer_problems, read_tflite

METHODS = ("aeq-minmax", "percentile:99.9", "mse", "moving-average")
#: extra variants with per-tensor weights: (key, method)
PER_TENSOR = (("mse per-tensor", "mse"), ("percentile:99 per-tensor", "percentile:99"))


@pytest.fixture(scope="module")
def variants(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, dict[str, Any]]:
    from edgeq.host.quantize import quantize

    root = tmp_path_factory.mktemp("methods")
    out = {}
    for m in METHODS:
        d = root / m.replace(":", "")
        out[m] = {"dir": d, "manifest": quantize(tiny_artifacts, out_dir=d, calibration_size=40,
                                                  eval_limit=200, calibration_method=m)}
    for key, m in PER_TENSOR:
        d = root / key.replace(":", "").replace(" ", "-")
        out[key] = {"dir": d, "manifest": quantize(
            tiny_artifacts, out_dir=d, calibration_size=40, eval_limit=200,
            calibration_method=m, per_channel=False)}
    return out


@pytest.mark.parametrize("method", METHODS)
def test_each_method_is_full_integer_int8(variants: dict[str, Any], method: str) -> None:
    v = variants[method]
    f = read_tflite(v["dir"] / "model_int8.tflite")
    assert full_integer_problems(f) == []
    m = v["manifest"]
    assert m["full_integer"] == {"ok": True, "problems": []}
    assert m["calibration"]["method"] == method
    assert m["converter"]["quantizer"] == "ai-edge-quantizer"
    assert m["converter"]["inference_input_type"] == "int8"
    assert m["precision"] == {"activations": "int8", "weights": "int8", "float_fallback": 0,
                              "float_layers": [], "exceptions_ok": True}


def test_converter_minmax_is_unchanged_and_records_no_ranges(tiny_artifacts: Path) -> None:
    from edgeq.host.artifacts import read_manifest

    m = read_manifest(tiny_artifacts)
    assert m["calibration"]["method"] == "minmax" and m["calibration"]["ranges"] is None
    assert m["converter"]["quantizer"] == "tflite-converter"
    assert m["converter"]["api"] == "tf.lite.TFLiteConverter.from_keras_model"


def test_recorded_ranges_are_the_methods_choice(variants: dict[str, Any]) -> None:
    aeq = {r["tensor"]: r for r in variants["aeq-minmax"]["manifest"]["calibration"]["ranges"]}
    pct = {r["tensor"]: r for r in variants["percentile:99.9"]["manifest"]["calibration"]["ranges"]}
    assert aeq.keys() == pct.keys() and len(aeq) >= 5
    # ai-edge-quantizer's own calibration: a moving average of per-sample min/max, inside the
    # global Min-Max range and narrower for most tensors
    assert all(r["max"] <= r["minmax_max"] + 1e-6 for r in aeq.values())
    assert sum(r["max"] < r["minmax_max"] - 1e-6 for r in aeq.values() if not r["io"]) >= 3
    inner = [r for r in pct.values() if not r["io"]]
    assert all(r["max"] <= r["minmax_max"] + 1e-9 for r in inner)
    assert sum(r["max"] < r["minmax_max"] - 1e-6 for r in inner) >= len(inner) // 2
    # the int8 file's real ranges follow the chosen ones (scale = (max - min) / 255)
    from edgeq.host.tflite_file import read_tflite

    # (on convolution outputs: ops such as MAX_POOL_2D take their input's range in int8)
    f = read_tflite(variants["percentile:99.9"]["dir"] / "model_int8.tflite")
    conv_out = {f.tensors[o].name for op in f.operators if op.name == "CONV_2D"
                for o in op.outputs}
    by_name = {t.name: t for t in f.tensors if t.name in conv_out}
    checked = 0
    for r in inner:
        t = by_name.get(r["tensor"])
        if t is None or not t.scales or t.dtype != "INT8":
            continue
        assert abs(t.scales[0] - (r["max"] - r["min"]) / 255.0) <= 0.02 * t.scales[0] + 1e-7
        checked += 1
    assert checked >= 3


def test_inspection_marks_clipped_ranges(variants: dict[str, Any]) -> None:
    from edgeq.host.inspection import range_comparison

    rows = range_comparison(variants["percentile:99.9"]["manifest"])
    assert rows and any(r["clipped"] for r in rows)
    assert all(not r["clipped"] for r in rows if r["io"])
    assert range_comparison({"calibration": {"ranges": None}}) == []


@pytest.mark.parametrize("method, fragment", [
    ("percentile:101", "between 50 and 100"), ("percentile:abc", "needs a number"),
    ("foo", "unknown calibration method")])
def test_bad_method_is_refused_before_writing(tmp_path: Path, method: str, fragment: str
                                              ) -> None:
    from edgeq.host.quantize import quantize

    (tmp_path / "model.keras").write_bytes(b"not read")
    out = tmp_path / "out"
    with pytest.raises(CalibrationMethodError, match=fragment):
        quantize(tmp_path, out_dir=out, calibration_method=method)
    assert not out.exists()


def test_bad_method_on_the_cli_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"not read")
    r = subprocess.run([sys.executable, "-m", "edgeq.host", "quantize", str(tmp_path),
                        "--calibration-method", "percentile:101"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: percentile must be between 50 and 100"), r.stderr
    assert len(lines) == 2 and lines[1].startswith("hint:"), r.stderr


# ---------------------------------------------------------------- weight ranges (percentile, mse)

#: TFLite's output-channel axis of each weighted op's filter (the file format, not edgeq's table)
FILTER_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


def _float_weights(path: Path) -> dict[str, tuple[str, Any]]:
    """weight tensor name -> (op, float32 values), read with LiteRT's own interpreter."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    details = {d["index"]: d for d in it.get_tensor_details()}
    out = {}
    for op in it._get_ops_details():
        if op["op_name"] in FILTER_AXIS and len(op["inputs"]) > 1:
            d = details[int(op["inputs"][1])]
            out[d["name"]] = (op["op_name"], np.array(it.get_tensor(d["index"]),
                                                     dtype=np.float64))
    return out


def _int8_weight_scales(path: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return {d["name"]: d["quantization_parameters"]["scales"] for d in it.get_tensor_details()
            if str(d["dtype"]).endswith("int8'>") and len(d["quantization_parameters"]["scales"])}


def _rows_per_channel(w: Any, axis: Any) -> list[Any]:
    import numpy as np

    if axis is None:
        return [np.abs(w).ravel()]
    return list(np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)))


def _mse_threshold(a: Any) -> float:
    """Brute force over the same grid: t * max|w|, t = k / 200, k = 1..200."""
    import numpy as np

    top = float(a.max())
    best = (np.inf, top)
    for k in range(1, 201):
        t = top * k / 200.0
        s = t / 127.0
        err = float(np.mean((a - s * np.clip(np.round(a / s), -127, 127)) ** 2))
        if err < best[0] - 1e-18:
            best = (err, t)
    return best[1]


@pytest.mark.parametrize("key", ["aeq-minmax", "percentile:99.9", "mse", "moving-average",
                                 "mse per-tensor", "percentile:99 per-tensor"])
def test_weight_ranges_are_the_methods_choice(variants: dict[str, Any], key: str) -> None:
    """Every conv / depthwise / dense layer's weight range in the manifest is the one the
    method defines, recomputed here from the float32 file's real weights; the int8 file's
    weight scales are that range / 127 (the clipping reached ai-edge-quantizer)."""
    import numpy as np

    v = variants[key]
    method = v["manifest"]["calibration"]["method"]
    per_channel = v["manifest"]["calibration"]["per_channel"]
    rows = v["manifest"]["calibration"]["weight_ranges"]
    weights = _float_weights(v["dir"] / "model_float32.tflite")
    scales = _int8_weight_scales(v["dir"] / "model_int8.tflite")
    assert {r["tensor"] for r in rows} == set(weights) and len(rows) >= 4
    clipped_somewhere = False
    for r in rows:
        op, w = weights[r["tensor"]]
        assert r["op"] == op
        axis = FILTER_AXIS[op] if per_channel else None
        assert r["granularity"] == ("per-channel" if per_channel else "per-tensor")
        parts = _rows_per_channel(w, axis)
        top = [float(a.max()) for a in parts]
        np.testing.assert_allclose(r["minmax_abs"], top, rtol=1e-6)
        if method.startswith("percentile:"):
            want = [float(np.percentile(a, float(method.split(":")[1]))) for a in parts]
        elif method == "mse":
            want = [_mse_threshold(a) for a in parts]
        else:  # Min-Max weights: max|w|
            want = top
        np.testing.assert_allclose(r["chosen_abs"], want, rtol=1e-6, atol=1e-12)
        clipped_somewhere |= any(c < t - 1e-9 for c, t in zip(want, top))
        # the clipped fraction: share of weights above the chosen range
        above = sum(int(np.sum(a > c + 1e-12)) for a, c in zip(parts, want))
        assert r["clipped_fraction"] == pytest.approx(above / w.size, abs=1e-9)
        # the int8 file's symmetric scales are the chosen range / 127
        np.testing.assert_allclose(np.asarray(scales[r["tensor"]], dtype=np.float64),
                                   np.asarray(want) / 127.0, rtol=1e-4)
    assert clipped_somewhere == (method.startswith("percentile:") or method == "mse")


def test_converter_minmax_records_its_weight_ranges(tiny_artifacts: Path) -> None:
    """The converter's Min-Max clips nothing: its recorded weight range is max|w| per channel,
    and the int8 file's scales agree."""
    import numpy as np
    from edgeq.host.artifacts import read_manifest

    rows = read_manifest(tiny_artifacts)["calibration"]["weight_ranges"]
    weights = _float_weights(tiny_artifacts / "model_float32.tflite")
    assert len(rows) == len(weights) >= 4
    for r in rows:
        op, w = weights[r["tensor"]]
        top = [float(a.max()) for a in _rows_per_channel(w, FILTER_AXIS[op])]
        assert r["chosen_abs"] == r["minmax_abs"]
        np.testing.assert_allclose(r["minmax_abs"], top, rtol=1e-6)
        assert r["clipped_fraction"] == 0.0
