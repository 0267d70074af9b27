"""Training record, converter settings (the int8 file really is full-integer), per-channel vs
per-tensor, the manifest, and user-supplied models and calibration sets (good and bad)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from edgeq.host.data import DataError, load_mnist
from edgeq.host.quantize import QuantizeError, calibration_images, quantize
from edgeq.host.tflite_file import full_integer_problems, read_tflite, weight_tensors


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_record(tiny_artifacts: Path) -> None:
    record = json.loads((tiny_artifacts / "train.json").read_text())
    assert record["schema"] == "edgeq.train/1"
    assert record["model_name"] == "mnist-cnn"
    assert (record["epochs"], record["seed"], record["train_count"]) == (1, 0, 3000)
    assert record["test_count"] == 10000  # always all test images
    assert record["float32_test_correct"] == round(record["float32_test_top1"] * 10000)
    assert 0.6 < record["float32_test_top1"] <= 1.0
    assert record["train_time_s"] > 0
    assert record["versions"]["tensorflow"] and record["versions"]["keras"]
    assert record["data"] == {"train_source": "mnist-train", "test_source": "mnist-test",
                              "resized": None}
    assert record["num_classes"] == 10 and record["preprocessing"]["identity"] is True
    assert len(record["history"]["loss"]) == 1
    assert (tiny_artifacts / "model.keras").stat().st_size > 100_000


def test_int8_file_is_full_integer_per_litert(tiny_artifacts: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tiny_artifacts / "model_int8.tflite"))
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert inp["quantization"] == (1.0, -128)  # raw pixels, model rescales inside
    assert out["quantization"][0] == pytest.approx(1 / 256) and out["quantization"][1] == -128
    dtypes = {np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    assert dtypes <= {"int8", "int32"}, dtypes
    ops = {op["op_name"] for op in it._get_ops_details()}
    assert "DEQUANTIZE" not in ops and "CONV_2D" in ops
    # and the same verdict from edgeq's own flatbuffer parser
    assert full_integer_problems(read_tflite(tiny_artifacts / "model_int8.tflite")) == []
    problems = full_integer_problems(read_tflite(tiny_artifacts / "model_float32.tflite"))
    assert any("float32" in p for p in problems)


def test_size_and_per_channel_weights(tiny_artifacts: Path) -> None:
    f32 = (tiny_artifacts / "model_float32.tflite").stat().st_size
    i8 = (tiny_artifacts / "model_int8.tflite").stat().st_size
    assert i8 <= 0.30 * f32
    weights = weight_tensors(tiny_artifacts / "model_int8.tflite")
    assert [w.op for w in weights][:1] == ["CONV_2D"] and len(weights) >= 6
    for w in weights:
        assert len(w.scales) == w.values.shape[0] > 1  # one scale per output channel
        assert np.all(w.zero_points == 0)  # symmetric weights


def test_one_xnnpack_partition(tiny_artifacts: Path) -> None:
    """mnist-cnn has no Flatten glue (SHAPE/STRIDED_SLICE/PACK): XNNPACK takes the graph in one
    piece."""
    from edgeq.device.runtime import load_model

    for kind in ("float32", "int8"):
        model = load_model(tiny_artifacts / f"model_{kind}.tflite")
        assert model.xnnpack_applied and model.delegate_partitions == 1, (kind, model.info())
        ops = {op["name"] for op in read_tflite(tiny_artifacts / f"model_{kind}.tflite").ops()}
        assert not ops & {"SHAPE", "STRIDED_SLICE", "PACK"}


def test_manifest(tiny_artifacts: Path) -> None:
    m = json.loads((tiny_artifacts / "manifest.json").read_text())
    assert m["schema"] == "edgeq.manifest/1" and m["model_name"] == "mnist-cnn"
    assert m["tensorflow_version"] and m["converter"]["supported_ops"] == ["TFLITE_BUILTINS_INT8"]
    weight_ranges = m["calibration"].pop("weight_ranges")  # Min-Max weights: max|w| per channel
    assert weight_ranges and all(w["chosen_abs"] == w["minmax_abs"] for w in weight_ranges)
    assert m["calibration"] == {
        "size": 100,
        "seed": 0,
        "source": "mnist-train",
        "per_channel": True,
        "method": "minmax",  # the converter's own Min-Max, the default
        "parameters": {},
        "ranges": None,
    }
    assert m["converter"]["quantizer"] == "tflite-converter"
    assert m["precision"] == {"activations": "int8", "weights": "int8", "float_fallback": 0,
                              "float_layers": [], "exceptions_ok": True}
    for kind in ("float32", "int8"):
        e = m["models"][kind]
        path = tiny_artifacts / e["file"]
        assert e["sha256"] == _sha(path) and e["size_bytes"] == path.stat().st_size
        assert e["input"]["shape"] == [1, 28, 28, 1] and e["output"]["shape"] == [1, 10]
        assert re.fullmatch(r"\d+\.\d+\.\d+", e["min_runtime_version"])
        names = [op["name"] for op in e["ops"]]
        assert {"CONV_2D", "MAX_POOL_2D", "SOFTMAX"} <= set(names)
        assert all(isinstance(op["version"], int) and op["version"] >= 1 for op in e["ops"])
    assert m["models"]["float32"]["input"] == {
        "name": m["models"]["float32"]["input"]["name"],
        "dtype": "float32",
        "shape": [1, 28, 28, 1],
        "scale": 0.0,
        "zero_point": 0,
    }
    assert m["models"]["int8"]["input"]["dtype"] == "int8"
    assert (m["models"]["int8"]["input"]["scale"], m["models"]["int8"]["input"]["zero_point"]) == (
        1.0,
        -128,
    )
    # int8 kernels need newer op versions than float ones
    v = {op["name"]: op["version"] for op in m["models"]["int8"]["ops"]}
    assert v["CONV_2D"] >= 3
    ev = m["eval_data"]
    assert ev["count"] == 2000 and ev["sha256"] == _sha(tiny_artifacts / "eval.npz")
    # issue 10's keys, as MNIST with no arguments fills them
    assert (ev["source"], ev["dtype"], ev["shape"], ev["resized"]) == (
        "mnist-test", "uint8", [28, 28], None)
    assert m["preprocessing"]["identity"] is True and m["preprocessing"]["scale"] == 1.0
    assert m["num_classes"] == 10 and m["class_names"] == [str(i) for i in range(10)]
    assert m["full_integer"] == {"ok": True, "problems": []} and m["made_by"] == "quantize"
    assert m["source_model"]["format"] == "keras"
    with np.load(tiny_artifacts / "eval.npz") as npz:
        images, labels = npz["images"], npz["labels"]
    x, y = load_mnist("test", limit=2000)
    assert images.dtype == np.uint8 and np.array_equal(images, x) and np.array_equal(labels, y)
    assert not [
        p.name for p in tiny_artifacts.iterdir() if p.name.startswith(".")
    ]  # no temp files left


def test_per_tensor_and_user_npy_calibration(tiny_artifacts: Path, tmp_path: Path) -> None:
    x, _ = load_mnist("train", limit=30)
    np.save(tmp_path / "calib.npy", x)  # (30, 28, 28) uint8: fits (28, 28, 1) after a reshape
    m = quantize(
        tmp_path,
        keras_model_path=tiny_artifacts / "model.keras",
        per_channel=False,
        calibration_size=50,
        calibration_file=tmp_path / "calib.npy",
        eval_limit=10,
    )
    assert m["calibration"]["per_channel"] is False
    assert m["calibration"]["source"] == "file:calib.npy" and m["calibration"]["size"] == 30
    assert m["eval_data"]["count"] == 10
    weights = weight_tensors(tmp_path / "model_int8.tflite")
    assert weights and all(len(w.scales) == 1 for w in weights)  # really one scale per tensor
    assert full_integer_problems(read_tflite(tmp_path / "model_int8.tflite")) == []
    assert (
        m["models"]["int8"]["sha256"]
        != json.loads((tiny_artifacts / "manifest.json").read_text())["models"]["int8"]["sha256"]
    )


def test_user_keras_model_other_input_shape(tmp_path: Path) -> None:
    import keras

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(tmp_path / "mine.keras")
    npz_path = tmp_path / "calib.npz"
    np.savez(npz_path, images=load_mnist("train", limit=20)[0].astype(np.float32))
    m = quantize(
        tmp_path,
        keras_model_path=tmp_path / "mine.keras",
        out_dir=tmp_path / "out",
        calibration_size=20,
        calibration_file=npz_path,
        eval_limit=5,
    )
    assert m["model_name"] == "mine"
    assert m["models"]["int8"]["input"]["shape"] == [1, 28, 28]
    assert full_integer_problems(read_tflite(tmp_path / "out" / "model_int8.tflite")) == []


def test_calibration_shape_errors(tiny_artifacts: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "wrong.npy", np.zeros((10, 32, 32, 2), np.uint8))  # 2 channels: no fit
    with pytest.raises(DataError, match=r"\[32, 32, 2\].*\[28, 28, 1\]") as info:
        quantize(tiny_artifacts, out_dir=tmp_path / "o", calibration_file=tmp_path / "wrong.npy")
    assert info.value.hint and "\n" not in info.value.message
    np.save(tmp_path / "flat.npy", np.zeros(10, np.uint8))
    with pytest.raises(DataError, match="not a batch of images"):
        quantize(tiny_artifacts, out_dir=tmp_path / "o", calibration_file=tmp_path / "flat.npy")
    np.savez(tmp_path / "many.npz", a=np.zeros((2, 28, 28)), b=np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="no 'images' array"):
        quantize(tiny_artifacts, out_dir=tmp_path / "o", calibration_file=tmp_path / "many.npz")
    with pytest.raises(DataError, match="does not exist"):
        quantize(tiny_artifacts, out_dir=tmp_path / "o", calibration_file=tmp_path / "none.npy")
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_model_errors(tmp_path: Path) -> None:
    import keras

    with pytest.raises(QuantizeError, match="does not exist"):
        quantize(tmp_path / "missing")
    with pytest.raises(QuantizeError, match="model.keras does not exist"):
        quantize(tmp_path)
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(QuantizeError, match="cannot be loaded as a Keras model"):
        quantize(tmp_path, keras_model_path=tmp_path / "junk.keras")
    big = keras.Sequential(
        [keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    big.save(tmp_path / "big.keras")
    # the built-in MNIST is not silently resized for a model that does not take it
    with pytest.raises(DataError, match=r"big.keras takes \[32, 32, 1\].*MNIST") as info:
        quantize(tmp_path, keras_model_path=tmp_path / "big.keras", calibration_size=10)
    assert "--calibration-data" in info.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.keras", "junk.keras"]


def test_calibration_is_seeded(tiny_artifacts: Path) -> None:
    import keras

    model = keras.models.load_model(tiny_artifacts / "model.keras", compile=False)
    a, src = calibration_images(model, size=50, seed=3)
    b, _ = calibration_images(model, size=50, seed=3)
    c, _ = calibration_images(model, size=50, seed=4)
    assert src == "mnist-train" and a.shape == (50, 28, 28, 1) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.max() > 1.0  # raw pixels; the model rescales inside
