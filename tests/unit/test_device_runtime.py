"""edgeq.device.runtime and evaldata against real LiteRT and real small models.

Models come from the session fixture `tiny_artifacts` (the host pipeline) when it is
importable, else from a tiny Keras net trained here on real MNIST and converted by the real
TFLiteConverter (float32 + full-int8), so these tests never depend on a stub.
"""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from edgeq.device.errors import (
    EvalDataError,
    InputShapeError,
    ModelLoadError,
    RuntimeMissingError,
    UsageError,
)
from edgeq.device.evaldata import load_eval_data
from edgeq.device.runtime import (
    check_tflite_file,
    count_delegated_nodes,
    detect_runtime,
    load_model,
)

REPO = Path(__file__).resolve().parents[2]


def _mnist(n_train: int, n_eval: int) -> tuple[np.ndarray, ...]:
    d = REPO / "models" / "mnist" / "data"

    def idx(name: str, offset: int) -> np.ndarray:
        return np.frombuffer(gzip.open(d / name).read(), np.uint8, offset=offset)

    xtr = idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:n_train]
    ytr = idx("train-labels-idx1-ubyte.gz", 8)[:n_train]
    xte = idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:n_eval]
    yte = idx("t10k-labels-idx1-ubyte.gz", 8)[:n_eval]
    return xtr, ytr, xte, yte


def make_own_models(out: Path) -> dict[str, Path]:
    """A tiny real conv net on 3000 MNIST images, float32 + full-int8 TFLite, eval.npz."""
    import keras
    import tensorflow as tf

    xtr, ytr, xte, yte = _mnist(3000, 1000)
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = xtr[..., None].astype("float32")
    model.fit(x, ytr, epochs=1, batch_size=64, verbose=0)
    f32 = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(100))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    i8 = conv.convert()
    paths = {"float32": out / "model_float32.tflite", "int8": out / "model_int8.tflite",
             "eval": out / "eval.npz"}
    paths["float32"].write_bytes(f32)
    paths["int8"].write_bytes(i8)
    np.savez(paths["eval"], images=xte, labels=yte)
    return paths


def device_model_paths(request: pytest.FixtureRequest,
                       tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"float32", "int8", "eval"} paths of small real models and their evaluation set:
    the host pipeline's `tiny_artifacts` when it is importable, else our own tiny net."""
    try:
        import edgeq.host.quantize  # noqa: F401
        import edgeq.host.train  # noqa: F401
    except ImportError:
        # shared by every module that imports this fixture: made once per session
        out = tmp_path_factory.getbasetemp() / "device-models"
        if not (out / "eval.npz").exists():
            out.mkdir(exist_ok=True)
            return make_own_models(out)
        return {"float32": out / "model_float32.tflite", "int8": out / "model_int8.tflite",
                "eval": out / "eval.npz"}
    art: Path = request.getfixturevalue("tiny_artifacts")
    return {"float32": art / "model_float32.tflite", "int8": art / "model_int8.tflite",
            "eval": art / "eval.npz"}


# ---------------------------------------------------------------------------------------------


def test_detect_runtime_prefers_ai_edge_litert() -> None:
    from importlib.metadata import version

    info = detect_runtime()
    assert info.name == "ai-edge-litert"
    assert info.version == version("ai-edge-litert")


def test_missing_runtime_is_one_line_with_pip_hint() -> None:
    with pytest.raises(RuntimeMissingError) as exc:
        detect_runtime("tflite-runtime")  # not installed in this venv
    assert "pip install tflite-runtime" in exc.value.hint
    assert "\n" not in exc.value.message


def test_unknown_runtime_name() -> None:
    with pytest.raises(UsageError):
        detect_runtime("onnx")


def test_load_reports_tensors_hash_and_size(dev_models: dict[str, Path]) -> None:
    for kind in ("float32", "int8"):
        path = dev_models[kind]
        m = load_model(path)
        assert m.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert m.size_bytes == path.stat().st_size
        assert m.runtime.name == "ai-edge-litert"
        assert m.input.shape[1:] == (28, 28, 1)
        assert m.output.shape[-1] == 10
        assert m.init_ms is not None and m.init_ms >= 0
    i8 = load_model(dev_models["int8"])
    assert i8.input.dtype == "int8"
    assert (i8.input.scale, i8.input.zero_point) == (1.0, -128)  # docs/SCHEMA.md convention
    f32 = load_model(dev_models["float32"])
    assert f32.input.dtype == "float32" and f32.input.scale == 0.0


def test_predict_accuracy_batching_and_layouts(dev_models: dict[str, Path]) -> None:
    images, labels = load_eval_data(dev_models["eval"])
    images, labels = images[:300], labels[:300]
    f32 = load_model(dev_models["float32"])
    i8 = load_model(dev_models["int8"])
    p1 = f32.predict(images, batch_size=1)
    p32 = f32.predict(images, batch_size=32)
    assert p1.dtype == np.int64 and p1.shape == (300,)
    np.testing.assert_array_equal(p1, p32)  # the last partial batch (300 = 9*32+12) included
    np.testing.assert_array_equal(p1, f32.predict(images[..., None].astype(np.float32), 7))
    q = i8.predict(images, batch_size=32)
    assert (p1 == labels).mean() > 0.6  # a real, if briefly trained, model
    assert (q == p1).mean() > 0.9  # int8 agrees with float32


def test_int8_input_quantization_uses_model_scale_and_zero_point(
        dev_models: dict[str, Path]) -> None:
    m = load_model(dev_models["int8"])
    x = np.array([[[0, 1, 127, 128, 255] + [0] * 23] * 28], dtype=np.uint8)
    q = m.prepare_input(x)
    assert q.dtype == np.int8 and q.shape == (1, 28, 28, 1)
    expect = np.clip(np.round(x / m.input.scale + m.input.zero_point), -128, 127)
    np.testing.assert_array_equal(q[..., 0], expect.astype(np.int8))
    assert q[0, 0, 4, 0] == 127 and q[0, 0, 0, 0] == -128


def test_xnnpack_on_and_off(dev_models: dict[str, Path]) -> None:
    images, _ = load_eval_data(dev_models["eval"])
    on = load_model(dev_models["int8"], xnnpack=True)
    off = load_model(dev_models["int8"], xnnpack=False)
    assert on.op_resolver == "AUTO" and on.xnnpack_applied is True
    assert on.delegated_nodes is not None and 0 < on.delegated_nodes <= on.total_nodes
    assert off.op_resolver == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    assert off.xnnpack_applied is False and off.delegated_nodes == 0
    assert off.total_nodes == on.total_nodes
    agree = (on.predict(images[:200], 32) == off.predict(images[:200], 32)).mean()
    assert agree > 0.97


def test_count_delegated_nodes_walks_partitions() -> None:
    # conv(0) -> pool(1) -> reshape(2, not delegated) -> fc(3) -> softmax(4)
    ops = [
        {"index": 0, "op_name": "CONV_2D", "inputs": [0, 10, 11], "outputs": [1]},
        {"index": 1, "op_name": "MAX_POOL_2D", "inputs": [1], "outputs": [2]},
        {"index": 2, "op_name": "RESHAPE", "inputs": [2, 12], "outputs": [3]},
        {"index": 3, "op_name": "FULLY_CONNECTED", "inputs": [3, 13, 14], "outputs": [4]},
        {"index": 4, "op_name": "SOFTMAX", "inputs": [4], "outputs": [5]},
        {"index": 5, "op_name": "DELEGATE", "inputs": [0, 10, 11], "outputs": [2]},
        {"index": 6, "op_name": "DELEGATE", "inputs": [3, 13, 14], "outputs": [4]},
    ]
    assert count_delegated_nodes(ops) == (3, 5, 2)
    assert count_delegated_nodes(ops[:5]) == (0, 5, 0)


@pytest.mark.parametrize("make", [
    "missing", "directory", "empty", "tiny", "text", "wrong_id", "bad_root", "truncated_half",
    "truncated_tail",
])
def test_bad_model_files_are_clear_errors(make: str, tmp_path: Path,
                                          dev_models: dict[str, Path]) -> None:
    good = dev_models["int8"].read_bytes()
    p = tmp_path / "m.tflite"
    if make == "directory":
        p.mkdir()
    elif make == "empty":
        p.write_bytes(b"")
    elif make == "tiny":
        p.write_bytes(good[:7])
    elif make == "text":
        p.write_bytes(b"this is not a model at all, just some text\n" * 10)
    elif make == "wrong_id":
        p.write_bytes(good[:4] + b"XXXX" + good[8:])
    elif make == "bad_root":
        p.write_bytes((len(good) + 100).to_bytes(4, "little") + good[4:])
    elif make == "truncated_half":
        p.write_bytes(good[: len(good) // 2])
    elif make == "truncated_tail":
        p.write_bytes(good[:-64])
    with pytest.raises(ModelLoadError) as exc:
        load_model(p)
    assert exc.value.hint and "\n" not in exc.value.message


def test_check_tflite_file_accepts_real_models(dev_models: dict[str, Path]) -> None:
    assert check_tflite_file(dev_models["float32"]) == dev_models["float32"].stat().st_size


def test_input_shape_mismatch(dev_models: dict[str, Path]) -> None:
    m = load_model(dev_models["float32"])
    with pytest.raises(InputShapeError):
        m.predict(np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(InputShapeError):
        m.predict(np.zeros((784,), np.uint8))


# --- evaluation data --------------------------------------------------------------------------


def test_eval_data_loads(dev_models: dict[str, Path]) -> None:
    images, labels = load_eval_data(dev_models["eval"])
    assert images.dtype == np.uint8 and images.shape[1:] in ((28, 28), (28, 28, 1))
    assert labels.dtype == np.int64 and labels.shape == (images.shape[0],)


@pytest.mark.parametrize("case", ["missing", "no_labels", "float64_images", "nan_images",
                                  "count_mismatch", "not_zip", "object_labels", "empty"])
def test_bad_eval_data(case: str, tmp_path: Path) -> None:
    p = tmp_path / "e.npz"
    imgs = np.zeros((5, 28, 28), np.uint8)
    labels = np.arange(5)
    if case == "no_labels":
        np.savez(p, images=imgs)
    elif case == "float64_images":
        np.savez(p, images=imgs.astype(np.float64), labels=labels)
    elif case == "nan_images":
        np.savez(p, images=np.full((5, 28, 28), np.nan, np.float32), labels=labels)
    elif case == "count_mismatch":
        np.savez(p, images=imgs, labels=labels[:3])
    elif case == "not_zip":
        p.write_bytes(b"garbage" * 20)
    elif case == "object_labels":
        np.savez(p, images=imgs, labels=np.array([{"x": 1}] * 5, dtype=object))
    elif case == "empty":
        np.savez(p, images=imgs[:0], labels=labels[:0])
    with pytest.raises(EvalDataError) as exc:
        load_eval_data(p)
    assert exc.value.hint


def test_tensorflow_is_the_last_resort_runtime(dev_models: dict[str, Path]) -> None:
    images, _ = load_eval_data(dev_models["eval"])
    tf_model = load_model(dev_models["int8"], runtime="tensorflow", xnnpack=False)
    assert tf_model.runtime.name == "tensorflow" and tf_model.delegated_nodes == 0
    litert = load_model(dev_models["int8"], xnnpack=False)
    np.testing.assert_array_equal(tf_model.predict(images[:100], 32),
                                  litert.predict(images[:100], 32))


def damaged_model(src: Path, dst: Path) -> Path:
    """A copy of `src` whose Model table no longer names its subgraphs: the root table's
    vtable entry for field 2 (`subgraphs`) is zeroed. The header, identifier and root offset
    stay valid (check_tflite_file passes), and LiteRT 1.x segfaults building the interpreter
    (found by flipping bytes of the tables in child processes; every model edgeq writes)."""
    raw = bytearray(src.read_bytes())
    root = int.from_bytes(raw[0:4], "little")
    vtable = root - int.from_bytes(raw[root:root + 4], "little", signed=True)
    entry = vtable + 4 + 2 * 2  # vtable: size, table size, then one u16 offset per field
    assert int.from_bytes(raw[entry:entry + 2], "little") != 0, "the model has no subgraphs?"
    raw[entry:entry + 2] = b"\0\0"
    dst.write_bytes(bytes(raw))
    check_tflite_file(dst)
    return dst


def truncated_copy(src: Path, dst: Path, fraction: float = 0.6) -> Path:
    """The first `fraction` of `src`'s bytes (a copy cut short, like an interrupted transfer)."""
    raw = src.read_bytes()
    dst.write_bytes(raw[: int(len(raw) * fraction)])
    return dst


def test_damaged_model_really_crashes_the_interpreter(dev_models: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """The damaged file the host's child-process probe is tested with kills a process."""
    import subprocess
    import sys

    bad = damaged_model(dev_models["int8"], tmp_path / "bad.tflite")
    code = ("import sys; from edgeq.device.runtime import load_model; "
            "load_model(sys.argv[1])")
    r = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, timeout=120)
    assert r.returncode < 0, (r.returncode, r.stderr[-500:])


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_eval_data_is_an_eval_data_error(dev_models: dict[str, Path], tmp_path: Path,
                                                   fraction: float) -> None:
    cut = truncated_copy(dev_models["eval"], tmp_path / "eval.npz", fraction)
    with pytest.raises(EvalDataError) as exc:
        load_eval_data(cut)
    assert "eval.npz is not a readable .npz file" in exc.value.message
    assert "\n" not in exc.value.message and "truncated" in exc.value.hint


def test_damaged_eval_data_members_are_eval_data_errors(tmp_path: Path) -> None:
    """Bytes flipped inside a compressed member or the array header: zlib's and numpy's
    header parser's own exceptions become EvalDataError too."""
    import zipfile

    good = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(good, images=rng.integers(0, 256, (50, 8, 8), dtype=np.uint8),
                        labels=np.arange(50) % 10)
    raw = good.read_bytes()
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("images.npy")
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    seen = set()
    for off in range(data_start, data_start + info.compress_size, 7):
        bad = bytearray(raw)
        bad[off] ^= 0xFF
        p = tmp_path / "bad.npz"
        p.write_bytes(bytes(bad))
        try:
            load_eval_data(p)
        except EvalDataError as exc:
            seen.add(exc.message.split("(")[0])
    assert seen == {"bad.npz is not a readable .npz file "}, seen


def test_float32_model_ready_and_colour_images(dev_models: dict[str, Path],
                                               tmp_path: Path) -> None:
    """eval.npz may hold float32 model-ready images (quantized with the int8 input's own
    scale/zero point) and colour images; both load and predict like the raw pixels."""
    images, labels = load_eval_data(dev_models["eval"])
    p = tmp_path / "float.npz"
    np.savez(p, images=images[:200].astype(np.float32), labels=labels[:200])
    fimages, flabels = load_eval_data(p)
    assert fimages.dtype == np.float32 and flabels.tolist() == labels[:200].tolist()
    i8 = load_model(dev_models["int8"])
    np.testing.assert_array_equal(i8.predict(fimages, 32), i8.predict(images[:200], 32))
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, images=np.zeros((3, 16, 16, 3), np.uint8), labels=np.arange(3))
    assert load_eval_data(rgb)[0].shape == (3, 16, 16, 3)


def test_top_k_comes_from_the_real_output_scores(dev_models: dict[str, Path]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    images, _ = load_eval_data(dev_models["eval"])
    m = load_model(dev_models["int8"])
    assert m.num_classes == 10
    top = m.predict_top_k(images[:64], 5, batch_size=16)
    assert top.shape == (64, 5)
    np.testing.assert_array_equal(top[:, 0], m.predict(images[:64], 1))
    it = Interpreter(model_path=str(dev_models["int8"]))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = inp["quantization"]
    for i in range(64):
        x = np.clip(np.round(images[i:i + 1].astype(np.float32) / scale + zp), -128, 127)
        it.set_tensor(inp["index"], x.astype(np.int8).reshape(inp["shape"]))
        it.invoke()
        scores = it.get_tensor(out["index"]).reshape(-1).astype(np.int64)
        assert int(np.argmax(scores)) == top[i, 0]
        # best first; any tie keeps the lower index first
        assert [scores[c] for c in top[i]] == sorted(scores, reverse=True)[:5]
