"""Any model, any data (issue 10), with real files, real Keras models converted by the real
converter and real LiteRT: a colour classifier as .keras, .h5, SavedModel and float32 .tflite;
image folders and .npz data; `edgeq import` of a pair; and every refusal at the door, with
its one-line error and nothing written half-way."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeq.device.errors import EdgeqError
from edgeq.host.data import DataError
from edgeq.host.importer import PairImportError, import_pair
from edgeq.host.preprocess import Preprocessing
from edgeq.host.quantize import QuantizeError, quantize
from edgeq.host.tflite_file import full_integer_problems, read_tflite
from PIL import Image

pytestmark = pytest.mark.slow  # builds Keras models and runs the converter

CLASSES = ("blue", "green", "red")
SCALE = 1 / 255


def _images(rng: np.random.Generator, k: int, n: int, size: int) -> np.ndarray:
    img = rng.integers(0, 90, (n, size, size, 3))
    img[..., 2 - k] = rng.integers(150, 256, (n, size, size))
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def colour(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 24x24 RGB, 3-class Keras model (trained a few steps) in every format, and folders
    of 36x36 PNGs (calib, eval) plus an .npz of the eval images."""
    import keras

    base = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    for name, n in (("calib", 8), ("eval", 10)):
        for k, cls in enumerate(CLASSES):
            (base / name / cls).mkdir(parents=True)
            for i, img in enumerate(_images(rng, k, n, 36)):
                Image.fromarray(img).save(base / name / cls / f"{i:02d}.png")
    x = np.concatenate([_images(rng, k, 150, 24) for k in range(3)]).astype(np.float32) * SCALE
    y = np.repeat(np.arange(3), 150)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24, 24, 3)),
                              keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")], name="colours")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=6, verbose=0)
    model.save(base / "colours.keras")
    model.save(base / "colours.h5")
    model.export(str(base / "colours_sm"), verbose=False)
    return {"base": base, "model": model}


def _q(colour: dict[str, Any], out: Path, model: str = "colours.keras", **kw: Any) -> dict:
    b = colour["base"]
    kw.setdefault("calibration_file", b / "calib")
    kw.setdefault("eval_file", b / "eval")
    kw.setdefault("preprocessing", Preprocessing(scale=SCALE))
    return quantize(b, out_dir=out, model_path=b / model, calibration_size=100, **kw)


def _litert_predictions(path: Path, images: np.ndarray) -> np.ndarray:
    """An independent LiteRT run: quantize by hand with the input's own scale/zero point."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    preds = []
    for img in images:
        x = img[None].astype(np.float32)
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            x = np.clip(np.round(x / s + z), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], x)
        it.invoke()
        preds.append(int(np.argmax(it.get_tensor(out["index"])[0])))
    return np.array(preds)


def test_keras_model_with_image_folders_and_a_scale(colour: dict[str, Any],
                                                    tmp_path: Path) -> None:
    from edgeq.host.evaluate import evaluate

    m = _q(colour, tmp_path / "a")
    assert m["class_names"] == list(CLASSES) and m["num_classes"] == 3
    assert m["preprocessing"]["scale"] == SCALE and m["preprocessing"]["identity"] is False
    assert m["calibration"].pop("weight_ranges")  # edgeq.host.quantize.weight_ranges
    assert m["calibration"] == {"size": 24, "seed": 0, "source": "folder:calib",
                                "per_channel": True, "method": "minmax",
                                "parameters": {}, "ranges": None}
    ev = m["eval_data"]
    assert (ev["source"], ev["count"], ev["dtype"], ev["shape"]) == (
        "folder:eval", 30, "float32", [24, 24, 3])
    assert ev["resized"] == {"from": [36, 36, 3], "to": [24, 24, 3], "method": "bilinear"}
    assert m["source_model"]["format"] == "keras" and m["full_integer"]["ok"] is True
    assert full_integer_problems(read_tflite(tmp_path / "a" / "model_int8.tflite")) == []
    # eval.npz holds exactly what the float32 model takes: the PNGs resized, then scaled
    png = Image.open(colour["base"] / "eval" / "blue" / "00.png").resize((24, 24),
                                                                         Image.BILINEAR)
    from edgeq.device.evaldata import load_eval_data  # uint8 pixels + the map, applied

    images, labels = load_eval_data(tmp_path / "a" / "eval.npz")
    assert np.allclose(images[0], np.asarray(png, np.float32) * np.float32(SCALE))
    assert labels.tolist()[:6] == [0, 1, 2, 0, 1, 2]
    # edgeq's numbers equal an independent LiteRT run on the same files and data
    result = evaluate(tmp_path / "a")
    for kind in ("float32", "int8"):
        want = _litert_predictions(tmp_path / "a" / f"model_{kind}.tflite", images)
        assert result["models"][kind]["predictions"] == want.tolist()
        assert result["models"][kind]["top1"] == float(np.mean(want == labels))
    assert result["models"]["float32"]["top1"] > 0.9


@pytest.mark.parametrize("model, fmt, api", [
    ("colours.h5", "h5", "from_keras_model"),
    ("colours_sm", "savedmodel", "from_saved_model"),
    ("float32.tflite", "tflite", "Calibrator"),
])
def test_other_model_formats(colour: dict[str, Any], tmp_path: Path, model: str, fmt: str,
                             api: str) -> None:
    if fmt == "tflite":
        ref = _q(colour, tmp_path / "ref")
        (colour["base"] / model).write_bytes((tmp_path / "ref" / "model_float32.tflite")
                                             .read_bytes())
    m = _q(colour, tmp_path / "o", model=model)
    assert m["source_model"]["format"] == fmt and m["converter"]["api"].endswith(api)
    assert m["models"]["int8"]["input"]["shape"] == [1, 24, 24, 3]
    assert full_integer_problems(read_tflite(tmp_path / "o" / "model_int8.tflite")) == []
    if fmt == "tflite":  # the float32 file is the one given, byte for byte
        assert m["models"]["float32"]["sha256"] == ref["models"]["float32"]["sha256"]
    from edgeq.host.evaluate import evaluate

    assert evaluate(tmp_path / "o")["models"]["int8"]["top1"] > 0.9


def test_import_a_pair_made_elsewhere(colour: dict[str, Any], tmp_path: Path) -> None:
    import tensorflow as tf
    from edgeq.host.artifacts import load_artifacts
    from edgeq.host.evaluate import evaluate

    made = _q(colour, tmp_path / "made")
    pair = tmp_path / "elsewhere"
    pair.mkdir()
    for kind in ("float32", "int8"):
        (pair / f"colours_{kind}.tflite").write_bytes(
            (tmp_path / "made" / f"model_{kind}.tflite").read_bytes())
    m = import_pair(pair / "colours_float32.tflite", pair / "colours_int8.tflite",
                    out_dir=tmp_path / "imp", eval_file=colour["base"] / "eval",
                    preprocessing=Preprocessing(scale=SCALE))
    assert m["made_by"] == "import" and m["model_name"] == "colours"
    assert m["full_integer"] == {"ok": True, "problems": []} and m["calibration"] is None
    for kind in ("float32", "int8"):
        assert m["models"][kind]["sha256"] == made["models"][kind]["sha256"]
        assert m["models"][kind]["input"] == made["models"][kind]["input"]
    assert m["eval_data"]["sha256"] == made["eval_data"]["sha256"]  # same data, same bytes
    art = load_artifacts(tmp_path / "imp")
    assert art.class_names == list(CLASSES) and art.preprocessing["scale"] == SCALE
    assert evaluate(tmp_path / "imp")["models"]["int8"]["top1"] > 0.9
    # an int8 file that is not full-integer (dynamic-range weights, float activations) is
    # imported, and the manifest says why it is not full-integer
    conv = tf.lite.TFLiteConverter.from_keras_model(colour["model"])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    (pair / "dynamic.tflite").write_bytes(conv.convert())
    m2 = import_pair(pair / "colours_float32.tflite", pair / "dynamic.tflite",
                     out_dir=tmp_path / "dyn", eval_file=colour["base"] / "eval",
                     preprocessing=Preprocessing(scale=SCALE))
    assert m2["full_integer"]["ok"] is False
    assert any("float32, not int8" in p for p in m2["full_integer"]["problems"])


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()} if d.exists() else {}


def test_refusals_write_nothing(colour: dict[str, Any], tmp_path: Path) -> None:
    import keras

    b = colour["base"]
    out = tmp_path / "out"
    _q(colour, out)
    before = _snapshot(out)
    x = np.zeros((4, 24, 24, 3), np.uint8)
    np.savez(tmp_path / "labels9.npz", images=x, labels=np.array([0, 1, 2, 9]))
    a, c = keras.Input((4,)), keras.Input((4,))
    two_in = keras.Model([a, c], keras.layers.Dense(3)(keras.layers.Concatenate()([a, c])))
    two_in.save(tmp_path / "two.keras")
    fmap_in = keras.Input((8, 8, 3))
    keras.Model(fmap_in, keras.layers.Conv2D(2, 3)(fmap_in)).save(tmp_path / "fmap.keras")
    (tmp_path / "notsm").mkdir()
    cases: list[tuple[dict[str, Any], type, str]] = [
        ({"eval_file": None}, DataError, r"takes \[24, 24, 3\] and gives 3 classes.*MNIST"),
        ({"calibration_file": None}, DataError, r"MNIST.*does not fit"),
        ({"eval_file": tmp_path / "labels9.npz"}, DataError,
         r"label 9, but colours.keras outputs 3 classes \(labels 0..2\)"),
        ({"eval_file": b / "calib" / "red"}, DataError, "no class sub-folders"),
        ({"preprocessing": Preprocessing(mean=(1.0, 2.0))}, DataError,
         "--input-mean has 2 values, the model input has 3"),
        ({"model": tmp_path / "two.keras"}, QuantizeError, "2 inputs and 1 outputs are not "
                                                           "supported yet"),
        ({"model": tmp_path / "fmap.keras"}, QuantizeError,
         r"output \[1, 6, 6, 2\] is not a \[batch, classes\].*not supported yet"),
        ({"model": out / "model_int8.tflite"}, QuantizeError, "already quantized"),
        ({"model": tmp_path / "notsm"}, QuantizeError, "not a TensorFlow SavedModel"),
    ]
    for kw, err, match in cases:
        model = kw.pop("model", b / "colours.keras")
        with pytest.raises(err, match=match) as exc:
            quantize(b, out_dir=out, model_path=model, calibration_size=10,
                     **{"calibration_file": b / "calib", "eval_file": b / "eval",
                        "preprocessing": Preprocessing(scale=SCALE), **kw})
        assert "\n" not in exc.value.message and exc.value.hint, exc.value.message
        assert _snapshot(out) == before, match  # the directory is as it was
    assert not list(out.glob(".*"))  # no temp files left behind


def test_import_refusals_write_nothing(colour: dict[str, Any], tmp_path: Path) -> None:
    made = tmp_path / "made"
    _q(colour, made)
    f32, i8 = made / "model_float32.tflite", made / "model_int8.tflite"
    out = tmp_path / "imp"
    (tmp_path / "junk.tflite").write_bytes(b"TFL3 but not really a flatbuffer")
    other = tmp_path / "other"
    import keras

    inp = keras.Input((16, 16, 3))
    keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inp))).save(
        tmp_path / "other.keras")
    quantize(tmp_path, out_dir=other, model_path=tmp_path / "other.keras", calibration_size=5,
             calibration_file=colour["base"] / "calib", eval_file=colour["base"] / "eval")
    cases: list[tuple[Path, Path, dict[str, Any], str]] = [
        (i8, f32, {}, "takes int8 input, not float32"),
        (f32, tmp_path / "junk.tflite", {}, "is not a TFLite flatbuffer"),
        (f32, tmp_path / "none.tflite", {}, "does not exist"),
        (f32, made / "eval.npz", {}, "is not a .tflite file"),
        (f32, other / "model_int8.tflite", {},
         r"takes \[24, 24, 3\] and gives 3 classes, model_int8.tflite takes \[16, 16, 3\]"),
        (f32, i8, {"eval_file": None}, "pass --eval-data"),
        (f32, i8, {"eval_limit": 0}, "eval limit must be at least 1"),
    ]
    for a, b, kw, match in cases:
        kw.setdefault("eval_file", colour["base"] / "eval")
        with pytest.raises(EdgeqError) as exc:
            import_pair(a, b, out_dir=out, **kw)
        assert isinstance(exc.value, (PairImportError, DataError)), exc.value
        text = exc.value.message + " " + (exc.value.hint or "")
        assert re.search(match, text), (match, text)
        assert "\n" not in exc.value.message
        assert not out.exists()


def test_train_on_own_data_then_quantize_uses_its_preprocessing(colour: dict[str, Any],
                                                                tmp_path: Path) -> None:
    from edgeq.host.train import train

    x = np.random.default_rng(2).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(40) % 10,
             class_names=np.array([f"c{i}" for i in range(10)]))
    out = tmp_path / "zoo"
    rec = train(out, epochs=1, data=tmp_path / "d.npz", preprocessing=Preprocessing(scale=2.0))
    assert rec["data"]["train_source"] == "file:d.npz"
    assert rec["data"]["test_source"] == "file:d.npz (held out 8 of 40, seed 0)"
    assert rec["test_count"] == 8 and rec["train_count"] == 32
    assert rec["data"]["resized"] == {"from": [8, 8], "to": [28, 28, 1], "method": "bilinear"}
    assert rec["class_names"][:2] == ["c0", "c1"] and rec["preprocessing"]["scale"] == 2.0
    before = _snapshot(out)
    with pytest.raises(DataError, match="trained on file:d.npz, not MNIST; --calibration-data"):
        quantize(out)  # never silently MNIST for a model trained on other data
    with pytest.raises(DataError, match="not the one train.json trained with"):
        quantize(out, calibration_file=tmp_path / "d.npz", eval_file=tmp_path / "d.npz",
                 preprocessing=Preprocessing(scale=3.0))
    assert _snapshot(out) == before
    m = quantize(out, calibration_file=tmp_path / "d.npz", eval_file=tmp_path / "d.npz",
                 calibration_size=20)
    assert m["preprocessing"]["scale"] == 2.0 and m["class_names"][:2] == ["c0", "c1"]
    assert json.loads((out / "manifest.json").read_text())["eval_data"]["count"] == 40
