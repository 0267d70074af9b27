"""Host evaluation with real LiteRT, and the inspection of real .tflite files (tensors, Min-Max
ranges, per-channel weights, the outlier rule, the QuantizationDebugger's per-layer error)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgeq.host.artifacts import ArtifactsError
from edgeq.host.evaluate import EvaluateError, evaluate
from edgeq.host.inspection import (
    OUTLIER_RATIO,
    STRETCH_FLAG,
    inspect_model,
    layer_analysis,
    outlier_threshold,
    weight_report,
)
from edgeq.host.tflite_file import TfliteFileError, WeightTensor, weight_tensors
from test_device_runtime import damaged_model, truncated_copy


def test_evaluate_both_models(tiny_artifacts: Path) -> None:
    r = evaluate(tiny_artifacts)
    assert r["schema"] == "edgeq.evaluate/1" and r["data"]["source"] == "eval.npz"
    with np.load(tiny_artifacts / "eval.npz") as npz:
        labels = npz["labels"].astype(np.int64)
    preds = {}
    for kind in ("float32", "int8"):
        m = r["models"][kind]
        preds[kind] = np.asarray(m["predictions"])
        assert m["count"] == len(preds[kind]) == 2000
        assert m["correct"] == int(np.sum(preds[kind] == labels))
        assert m["top1"] == pytest.approx(m["correct"] / 2000)
        assert m["size_bytes"] == (tiny_artifacts / m["file"]).stat().st_size
        assert m["size_kb"] == pytest.approx(m["size_bytes"] / 1024, abs=0.05)
        assert m["correct"] <= m["correct_top5"] <= 2000  # 10 classes: top-5 too
        assert m["top5"] == pytest.approx(m["correct_top5"] / 2000)
        hit = preds[kind] == labels
        assert m["per_class_top1"] == [pytest.approx(hit[labels == c].mean()) for c in range(10)]
    assert r["num_classes"] == 10 and r["class_names"] == [str(c) for c in range(10)]
    assert r["models"]["float32"]["top1"] > 0.6
    assert r["agreement"] == pytest.approx(float(np.mean(preds["float32"] == preds["int8"])))
    assert r["agreement"] > 0.95
    assert r["drop_points"] == pytest.approx(
        100 * (r["models"]["float32"]["top1"] - r["models"]["int8"]["top1"])
    )
    assert r["size_ratio"] <= 0.30
    assert r["models"]["int8"]["input"]["dtype"] == "int8"
    json.dumps(r)


def test_evaluate_limit_threads_progress_and_mnist(tiny_artifacts: Path) -> None:
    seen: list[tuple[int, int]] = []
    r = evaluate(
        tiny_artifacts,
        limit=150,
        threads=2,
        data_dir=None,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert r["models"]["int8"]["count"] == 150 and r["threads"] == 2
    assert seen[-1] == (300, 300) and all(t == 300 for _, t in seen)
    from edgeq.models import MNIST_DATA_DIR

    r2 = evaluate(tiny_artifacts, limit=150, data_dir=MNIST_DATA_DIR)
    assert r2["data"]["source"] == "mnist-test"
    # the first 150 test images are the first 150 of eval.npz: same predictions
    assert r2["models"]["int8"]["predictions"] == r["models"]["int8"]["predictions"]


def test_evaluate_errors(tiny_artifacts: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactsError, match="does not exist"):
        evaluate(tmp_path / "nowhere")
    copy = tmp_path / "a"
    shutil.copytree(tiny_artifacts, copy)
    with np.load(copy / "eval.npz") as npz:
        images, labels = npz["images"], npz["labels"]
    np.savez_compressed(copy / "eval.npz", images=images[:10], labels=labels[:10])
    mismatch = r"eval\.npz does not match manifest\.json \(sha256"
    with pytest.raises(ArtifactsError, match=mismatch) as info:
        evaluate(copy)
    assert info.value.hint
    with pytest.raises(EvaluateError, match="limit must be at least 1"):
        evaluate(tiny_artifacts, limit=0)
    (copy / "model_int8.tflite").unlink()
    with pytest.raises(ArtifactsError, match="model_int8.tflite is missing"):
        evaluate(copy)


def _rehashed(art: Path, entry: dict) -> None:
    """Record the file `entry` names as it now is (sha256, size) in art/manifest.json: the
    directory is consistent, so only the file's own content can be refused."""
    from edgeq.device.fileutil import sha256_file

    f = art / entry["file"]
    entry["sha256"], entry["size_bytes"] = sha256_file(f), f.stat().st_size


def _edgeq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeq.host", *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, COLUMNS="200"))


def test_damaged_model_cannot_crash_evaluate(tiny_artifacts: Path, tmp_path: Path) -> None:
    """A model that segfaults LiteRT (test_device_runtime.damaged_model) is opened in a child
    process first: `edgeq evaluate` exits 1 with one line naming the file, and the library
    raises ModelLoadError."""
    from edgeq.device.errors import ModelLoadError

    art = tmp_path / "a"
    shutil.copytree(tiny_artifacts, art)
    damaged_model(tiny_artifacts / "model_int8.tflite", art / "model_int8.tflite")
    manifest = json.loads((art / "manifest.json").read_text())
    _rehashed(art, manifest["models"]["int8"])
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError) as exc:
        evaluate(art)
    assert exc.value.message.startswith("model_int8.tflite crashed the TFLite interpreter "
                                        "(SIGSEGV)")
    r = _edgeq("evaluate", str(art))
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert any("model_int8.tflite crashed the TFLite interpreter (SIGSEGV)" in ln
               for ln in lines), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr.lower()


def test_truncated_eval_data_on_the_host(tiny_artifacts: Path, tmp_path: Path) -> None:
    """eval.npz cut short: against its manifest it is a hash mismatch; recorded as it is (the
    manifest agrees with the cut file), reading it is a one-line EvalDataError with a hint."""
    from edgeq.device.errors import EvalDataError

    art = tmp_path / "a"
    shutil.copytree(tiny_artifacts, art)
    truncated_copy(tiny_artifacts / "eval.npz", art / "eval.npz")
    with pytest.raises(ArtifactsError, match="does not match manifest.json"):
        evaluate(art)
    manifest = json.loads((art / "manifest.json").read_text())
    _rehashed(art, manifest["eval_data"])
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EvalDataError) as exc:
        evaluate(art)
    assert "eval.npz is not a readable .npz file" in exc.value.message and exc.value.hint
    r = _edgeq("evaluate", str(art))
    assert r.returncode == 1 and "eval.npz is not a readable .npz file" in r.stderr, r.stderr
    assert "internal error" not in r.stderr.lower() and "Traceback" not in r.stderr


def test_inspect_int8(tiny_artifacts: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = tiny_artifacts / "model_int8.tflite"
    r = inspect_model(path)
    json.dumps(r)
    assert r["full_integer"] and r["layer_errors"] is None
    assert r["inputs"][0]["scale"] == 1.0 and r["inputs"][0]["zero_point"] == -128
    assert r["min_runtime_version"]
    it = Interpreter(model_path=str(path))
    by_index = {d["index"]: d for d in it.get_tensor_details()}
    for t in r["tensors"]:
        if t["quantized"] and not t["per_channel"]:
            s, z = t["scale"], t["zero_point"]
            if t["dtype"] == "int8":  # the paper's Min-Max formulas
                assert t["real_min"] == pytest.approx((-128 - z) * s)
                assert t["real_max"] == pytest.approx((127 - z) * s)
            d = by_index[t["index"]]
            assert d["quantization"] == pytest.approx((s, z))
    # activations after ReLU start at real 0: zero point -128
    relu = [
        t
        for t in r["tensors"]
        if "conv2" in t["name"] and not t["constant"] and t["dtype"] == "int8"
    ]
    assert relu and all(t["real_min"] == pytest.approx(0.0) for t in relu)
    assert len(r["weights"]) >= 6
    for w in r["weights"]:
        assert w["per_channel"] and len(w["channels"]) == w["shape"][0]
        assert min(c["min"] for c in w["channels"]) == pytest.approx(w["min"])
        scales = by_index[w["index"]]["quantization_parameters"]["scales"]
        q = it.get_tensor(w["index"]).astype(np.float32)
        real = q * scales.reshape(-1, *([1] * (q.ndim - 1)))
        assert w["max"] == pytest.approx(float(real.max()), rel=1e-5)
        assert [c["max"] for c in w["channels"]] == pytest.approx(
            real.reshape(len(scales), -1).max(1), rel=1e-5
        )
        # Min-Max per channel: each channel's largest |q| is 127
        assert all(c["q_abs_max"] == 127 for c in w["channels"])


def test_inspect_float_model_is_not_full_integer(tiny_artifacts: Path) -> None:
    r = inspect_model(tiny_artifacts / "model_float32.tflite")
    assert not r["full_integer"] and r["weights"] == []
    assert r["inputs"][0]["dtype"] == "float32"


def test_outlier_rule() -> None:
    rng = np.random.default_rng(0)
    normal = np.clip(rng.normal(0, 30, (4, 500)), -127, 127).astype(np.int8)
    normal[:, 0] = 127
    w = WeightTensor(
        "w", "FULLY_CONNECTED", 0, normal, np.full(4, 0.01, np.float32), np.zeros(4, np.int64), 0
    )
    rep = weight_report(w)
    assert not rep["outlier"] and rep["outlier_channels"] == 0
    spiky = np.clip(rng.normal(0, 2, (4, 5000)), -127, 127).astype(np.int8)
    spiky[2, 7] = 127  # one value sets the channel's (and the tensor's) range
    w2 = WeightTensor(
        "w2", "FULLY_CONNECTED", 1, spiky, np.full(4, 0.01, np.float32), np.zeros(4, np.int64), 0
    )
    rep2 = weight_report(w2)
    assert rep2["outlier"] and rep2["outlier_ratio"] > OUTLIER_RATIO
    assert [c["outlier"] for c in rep2["channels"]] == [False, False, True, False]


def test_weight_tensors_dequantize(tiny_artifacts: Path) -> None:
    weights = weight_tensors(tiny_artifacts / "model_int8.tflite")
    w = weights[1]
    real = w.dequantized()
    assert real.shape == w.values.shape and real.dtype == np.float32
    assert np.allclose(real[3], w.values[3].astype(np.float32) * w.scales[3])


def test_inspect_errors(tmp_path: Path) -> None:
    with pytest.raises(TfliteFileError, match="does not exist"):
        inspect_model(tmp_path / "none.tflite")
    (tmp_path / "x.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(TfliteFileError, match="not a TFLite flatbuffer"):
        inspect_model(tmp_path / "x.tflite")


def test_inspect_with_float_model_per_layer_error(tiny_artifacts: Path) -> None:
    r = inspect_model(
        tiny_artifacts / "model_int8.tflite",
        float_model_path=tiny_artifacts / "model.keras",
        calibration_size=16,
    )
    json.dumps(r)
    le = r["layer_errors"]
    assert le["calibration"]["size"] == 16 and le["calibration"]["per_channel"] is True
    ops = [layer["op"] for layer in le["layers"]]
    assert ops.count("CONV_2D") == 6 and "MAX_POOL_2D" in ops  # 4 convs + 2 dense-as-conv
    for layer in le["layers"]:
        assert layer["scale"] > 0 and layer["rmse"] >= 0
        if layer["op"] in ("CONV_2D", "FULLY_CONNECTED"):
            # rounding to the int8 grid: rmse ~ scale / sqrt(12); clipping would be far larger
            assert 0.05 < layer["rmse_per_scale"] < 1.0, layer


def test_layer_analysis_float32_next_to_int8(tiny_artifacts: Path) -> None:
    """inspection.layer_analysis (what the report lays out): the int8 weights against the float
    weights they came from, and the activations of both models run by the device runtime."""
    la = layer_analysis(tiny_artifacts, debugger=False, max_images=20)
    assert la.image_count == 20 and la.error_source == "end-to-end"
    assert len(la.weights) >= 6
    for wl in la.weights:
        # the int8 tensor is the float tensor on the Min-Max grid: within half a step
        step = wl.weight.scales.reshape(-1, *([1] * (wl.float_values.ndim - 1)))
        assert np.all(np.abs(wl.weight.dequantized() - wl.float_values) <= step / 2 + 1e-6)
        assert wl.row["outlier"] == ("yes" if wl.report["outlier"] else "no")
        assert wl.outlier_abs == pytest.approx(outlier_threshold(wl.float_values))
        assert wl.outliers == int(np.sum(np.abs(wl.float_values) > wl.outlier_abs))
        assert 0.0 < wl.row["rounding_rmse_lsb"] < 0.5  # rounding, not clipping
    assert la.tensor_rows and len(la.tensor_rows) == len(la.activation_ranges)
    for row in la.tensor_rows:
        assert row["range_min"] <= row["seen_p0.1"] <= row["seen_p99.9"]
        assert row["range_min"] == pytest.approx((-128 - row["zero_point"]) * row["scale"])
        assert (row["outlier"] == "yes") == (row["stretch"] > STRETCH_FLAG)
        assert row["e2e_rmse_lsb"] >= 0
    assert [r["e2e_rmse_lsb"] for r in la.error_rows] == [
        r["e2e_rmse_lsb"] for r in la.tensor_rows]
