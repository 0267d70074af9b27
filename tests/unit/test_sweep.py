"""`edgeq sweep`: real re-quantizations of the session's tiny Keras model, evaluated on the host."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeq.device.errors import EdgeqError, UsageError
from edgeq.host import report
from edgeq.host.sweep import SweepError, load_sweep, parse_granularities, sweep
from report_html import parse_html_metrics  # tests/report_html.py

SIZES = (10, 100)
EVAL_LIMIT = 500


@pytest.fixture(scope="module")
def artifacts(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's artifacts, so the sweep's files stay out of everyone else's."""
    copy = tmp_path_factory.mktemp("sweep") / "artifacts"
    shutil.copytree(tiny_artifacts, copy)
    return copy


@pytest.fixture(scope="module")
def swept(artifacts: Path) -> dict[str, Any]:
    calls: list[tuple[int, int]] = []
    doc = sweep(artifacts, calibration_sizes=SIZES, eval_limit=EVAL_LIMIT,
                progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    return doc


def _weight_scale_counts(path: Path) -> list[int]:
    """How many scales each int8 weight tensor (>= 2-D constant) of a model has."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    counts = []
    for t in interp.get_tensor_details():
        q = t["quantization_parameters"]
        if t["dtype"] == np.int8 and len(t["shape"]) >= 2 and len(q["scales"]) >= 1:
            try:
                interp.get_tensor(t["index"])  # constants are readable before allocation
            except ValueError:
                continue
            counts.append(len(q["scales"]))
    return counts


def test_sweep_requantizes_each_combination(swept: dict[str, Any], artifacts: Path) -> None:
    assert swept["schema"] == "edgeq.sweep/1"
    points = swept["points"]
    assert sorted((p["granularity"], p["calibration_size"]) for p in points) == sorted(
        (g, s) for g in ("per-channel", "per-tensor") for s in SIZES)
    assert load_sweep(artifacts) == swept  # sweep.json holds what was returned
    f32 = {p["float32_top1"] for p in points}
    assert len(f32) == 1, "the float32 model must be the same Keras model in every variant"
    for p in points:
        model = artifacts / p["dir"] / "model_int8.tflite"
        assert model.stat().st_size == p["int8_size_bytes"]
        assert 0.0 < p["int8_top1"] <= 1.0 and 0.0 < p["agreement"] <= 1.0
        counts = _weight_scale_counts(model)
        assert counts, "no int8 weight tensors found"
        if p["granularity"] == "per-tensor":
            assert set(counts) == {1}, counts
        else:
            assert max(counts) > 1, counts
    assert swept["eval_count"] == EVAL_LIMIT
    # a different calibration set gives different activation ranges, so different bytes
    shas = {p["int8_sha256"] for p in points if p["granularity"] == "per-channel"}
    assert len(shas) == 2
    # the original artifacts are untouched by the sweep
    manifest = json.loads((artifacts / "manifest.json").read_text())
    assert manifest["calibration"]["size"] == 100


def test_the_report_includes_the_sweep(swept: dict[str, Any], artifacts: Path,
                                       tmp_path: Path) -> None:
    from test_report import make_run  # the same real agent run (tests/unit is on sys.path)

    paths = report.build_report(make_run(artifacts), artifacts_dir=artifacts,
                                out_dir=tmp_path, layers=False)  # sweep.json found by itself
    metrics = parse_html_metrics(paths.html.read_text(encoding="utf-8"))
    for p in swept["points"]:
        tag = f"{p['granularity']}@{p['calibration_size']}"
        assert metrics[("sweep_int8_top1", tag)] == pytest.approx(p["int8_top1"], rel=1e-12)
        assert metrics[("sweep_int8_size_bytes", tag)] == p["int8_size_bytes"]
    assert (tmp_path / "figures" / "sweep.png").is_file()
    assert "## Sweep" in paths.markdown.read_text(encoding="utf-8")


def test_bad_sweep_options(tmp_path: Path) -> None:
    assert parse_granularities("per-tensor") == ("per-tensor",)
    with pytest.raises(UsageError):
        parse_granularities("per-layer")
    with pytest.raises(SweepError, match="no trained model"):
        sweep(tmp_path, calibration_sizes=(10,))
    (tmp_path / "model.keras").write_bytes(b"not read: the options are checked first")
    for extra in [("minmax", "per-layer", 10, 0, "int8"), ("minmax", "per-tensor", 10, 0, "int4"),
                  ("minmax", "per-tensor", 0, 0, "int8")]:
        with pytest.raises(UsageError, match="bad extra variant"):
            sweep(tmp_path, calibration_sizes=(10,), extras=[extra])
    with pytest.raises(EdgeqError, match="unknown calibration method"):
        sweep(tmp_path, calibration_sizes=(10,), extras=[("nope", "per-tensor", 10, 0, "int8")])
    assert not (tmp_path / "sweep").exists()
    bad = subprocess.run([sys.executable, "-m", "edgeq.host", "sweep", str(tmp_path),
                          "--calibration-sizes", "10,ten"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--calibration-sizes" in bad.stderr


def test_sweep_of_methods_and_fallback(tiny_artifacts: Path,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    """methods x fallback: every variant a real quantization, its top-1 a real LiteRT run."""
    from edgeq.host.evaluate import evaluate
    from edgeq.host.sweep import parse_fallbacks

    copy = tmp_path_factory.mktemp("sweep-methods") / "artifacts"
    shutil.copytree(tiny_artifacts, copy)
    doc = sweep(copy, calibration_sizes=(40,), granularities=("per-tensor",),
                methods=("minmax", "percentile:99.9"), fallbacks=(0, 1), eval_limit=200,
                extras=[("minmax", "per-tensor", 40, 0, "int16")])
    assert doc["methods"] == ["minmax", "percentile:99.9"] and doc["fallbacks"] == [0, 1]
    sixteen = doc["points"][-1]  # the extra variant: 16x8 of the converter's Min-Max settings
    assert sixteen["activations"] == "int16" and sixteen["method"] == "aeq-minmax"
    assert sixteen["dir"] == "sweep/minmax-16x8-per-tensor-cal40"
    m16 = json.loads((copy / sixteen["dir"] / "manifest.json").read_text())
    assert m16["precision"]["activations"] == "int16"
    got = {(p["method"], p["float_fallback"]): p for p in doc["points"][:-1]}
    assert set(got) == {("minmax", 0), ("percentile:99.9", 0), ("aeq-minmax", 1),
                        ("percentile:99.9", 1)}
    assert all(p["activations"] == "int8" for p in got.values())
    assert got[("minmax", 0)]["dir"] == "sweep/per-tensor-cal40"  # the old name
    assert got[("percentile:99.9", 1)]["dir"] == "sweep/percentile99.9-per-tensor-cal40-fb1"
    assert got[("minmax", 0)]["quantizer"] == "tflite-converter"
    assert got[("minmax", 0)]["ranges"] == []
    pct = got[("percentile:99.9", 0)]
    assert pct["quantizer"] == "ai-edge-quantizer"
    assert pct["method_parameters"]["percentile"] == 99.9
    assert any(r["clipped"] for r in pct["ranges"])
    assert {"tensor", "minmax_min", "minmax_max", "min", "max", "outliers"} <= set(pct["ranges"][0])
    assert len(got[("percentile:99.9", 1)]["float_layers"]) == 1
    for p in doc["points"]:
        again = evaluate(copy / p["dir"], limit=200)
        assert again["models"]["int8"]["top1"] == p["int8_top1"]
        assert p["drop_points"] == pytest.approx(100 * (p["float32_top1"] - p["int8_top1"]))
    assert parse_fallbacks("0, 2") == (0, 2)
    for bad in ("", "-1", "two"):
        with pytest.raises(UsageError):
            parse_fallbacks(bad)
