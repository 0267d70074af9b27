"""The eval.npz contract (edgeq.host.artifacts.eval_file_bytes / edgeq.device.evaldata): uint8
pixels + the recorded affine map instead of float32 values, streamed a batch at a time on the
device; files in the old form stay readable. On the real MNIST test set and the session's real
mnist-cnn models: the same values bit for bit and the same predictions as the float32 file
the old writer produced."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from edgeq.device.bench import BenchSettings, run_evaluation
from edgeq.device.errors import EvalDataError
from edgeq.device.evaldata import load_eval_data, open_eval_data
from edgeq.host.artifacts import eval_data_entry, eval_file_bytes
from edgeq.host.data import load_mnist
from edgeq.host.preprocess import ModelInput, Preprocessing, prepare_data

MNIST_IN = ModelInput((28, 28, 1), 10, "mnist-cnn")
#: a map that is not the identity but leaves the values as they are (the model's real accuracy)
NEUTRAL = Preprocessing(mean=(0.0,), std=(1.0,))
#: a map that changes every value (bit-exactness of the device's float32 arithmetic)
SHIFTED = Preprocessing(scale=0.5, offset=3.0, mean=(10.0,), std=(2.0,))


def _old_float32_file(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """eval.npz as edgeq wrote it before issue 13: float32 model-ready images."""
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, labels=labels.astype(np.uint8))
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def mnist_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real MNIST test set through prepare_data with both maps, new and old file forms."""
    out = tmp_path_factory.mktemp("evalfile")
    files: dict[str, Path] = {}
    for name, pre in (("neutral", NEUTRAL), ("shifted", SHIFTED)):
        prepared = prepare_data(None, MNIST_IN, pre, purpose="evaluation")
        assert prepared.pixels is not None and prepared.pixels.dtype == np.uint8
        assert prepared.images.dtype == np.float32
        new = eval_file_bytes(prepared, 10)
        assert eval_data_entry(prepared, new)["stored"] == "pixels"
        files[name] = out / f"{name}.npz"
        files[name].write_bytes(new)
        files[name + "-old"] = _old_float32_file(out / f"{name}-old.npz", prepared.images,
                                                 prepared.labels)
    return files


def test_pixels_map_to_the_same_float32_values(mnist_sets: dict[str, Path]) -> None:
    for name in ("neutral", "shifted"):
        new_x, new_y = load_eval_data(mnist_sets[name])
        old_x, old_y = load_eval_data(mnist_sets[name + "-old"])
        assert new_x.dtype == old_x.dtype == np.float32 and new_x.shape == (10000, 28, 28)
        assert np.array_equal(new_x, old_x) and np.array_equal(new_y, old_y)
        # streamed in odd batches: the same values again
        streamed = np.concatenate(list(open_eval_data(mnist_sets[name]).batches(999)))
        assert np.array_equal(streamed, old_x)
        # a quarter of the bytes in memory, and smaller on disk too
        assert mnist_sets[name].stat().st_size < mnist_sets[name + "-old"].stat().st_size


def test_same_predictions_as_the_float32_file(mnist_sets: dict[str, Path],
                                              dev_models: dict[str, Path]) -> None:
    """Both models, the whole MNIST test set: the new file predicts exactly as the old
    float32 file, and the neutral map as the raw pixels (accuracy unchanged)."""
    s = BenchSettings(batch_size=64)
    raw_pixels, raw_labels = load_mnist("test")
    raw = Path(mnist_sets["neutral"]).with_name("raw.npz")
    np.savez_compressed(raw, images=raw_pixels, labels=raw_labels)
    for kind in ("float32", "int8"):
        runs = {name: run_evaluation(dev_models[kind], data_path=mnist_sets[name], settings=s)
                ["accuracy"] for name in ("neutral", "neutral-old", "shifted", "shifted-old")}
        base = run_evaluation(dev_models[kind], data_path=raw, settings=s)["accuracy"]
        assert runs["neutral"]["predictions"] == runs["neutral-old"]["predictions"] \
            == base["predictions"]
        assert runs["shifted"]["predictions"] == runs["shifted-old"]["predictions"]
        assert runs["neutral"]["top1"] == base["top1"] > 0.5


def test_identity_keeps_images_and_old_files_read(tmp_path: Path) -> None:
    """Raw pixels (the identity map, MNIST's default) are stored as `images`, as before."""
    prepared = prepare_data(None, MNIST_IN, Preprocessing(), purpose="evaluation", limit=50)
    assert prepared.pixels is None and prepared.images.dtype == np.uint8
    data = eval_file_bytes(prepared, 10)
    assert eval_data_entry(prepared, data)["stored"] == "images"
    p = tmp_path / "eval.npz"
    p.write_bytes(data)
    ev = open_eval_data(p)
    assert ev.member == "images" and ev.affine is None and ev.dtype == np.uint8
    assert np.array_equal(ev.head(50), prepared.images)


def test_damaged_affine_is_an_eval_data_error(tmp_path: Path) -> None:
    pixels = np.zeros((4, 8, 8), np.uint8)
    p = tmp_path / "bad.npz"
    np.savez(p, pixels=pixels, labels=np.arange(4))  # no pre_* arrays
    with pytest.raises(EvalDataError) as exc:
        open_eval_data(p)
    assert "pre_" in exc.value.message and exc.value.hint
    np.savez(p, pixels=pixels.astype(np.float32), labels=np.arange(4), pre_mean=np.zeros(0),
             pre_std=np.zeros(0), pre_scale=np.float32(1), pre_offset=np.float32(0))
    with pytest.raises(EvalDataError):
        open_eval_data(p)
