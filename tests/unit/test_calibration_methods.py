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
