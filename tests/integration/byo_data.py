"""A user's own data and models for tests/integration/test_byo_model.py (not MNIST).

- scikit-learn's bundled 8x8 digits (1,797 real scans, offline): uint8 pixels 0..255
  (the 0..16 originals x 255/16, rounded), split by index into train / calibration / eval,
  written as an image folder (one PNG per image, one sub-folder per class, named so that the
  sorted names are the label order) and as .npz files;
- a colour set: the digits 0..3 tinted to RGB at 16x16 (nearest upsampling, a seeded random
  tint per image, so colour carries no label), as an .npz and a folder of RGB PNGs;
- small Keras classifiers of those shapes, trained here for a few epochs (seconds);
- `litert_evaluate`: the independent evaluation the CLI's numbers are held to: the
  ai_edge_litert interpreter used directly, inputs quantized with the file's own input scale
  and zero point, top-1 and top-5 from the raw output scores.
Nothing here imports edgeq.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

#: the digits' class folders: sorted by name they are in label order
DIGIT_NAMES = ("0-zero", "1-one", "2-two", "3-three", "4-four", "5-five", "6-six", "7-seven",
               "8-eight", "9-nine")
COLOUR_NAMES = ("0-zero", "1-one", "2-two", "3-three")
TRAIN, CALIB = 1100, 200  # the first 1100 images train, the next 200 calibrate, the rest eval
SEED = 0


@dataclass(frozen=True)
class Split:
    """Raw uint8 images and int labels."""

    images: np.ndarray
    labels: np.ndarray


def digits() -> dict[str, Split]:
    """The 1,797 digits as uint8 (N, 8, 8) pixels, split into train / calib / eval."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    y = d.target.astype(np.int64)
    return {"train": Split(x[:TRAIN], y[:TRAIN]),
            "calib": Split(x[TRAIN:TRAIN + CALIB], y[TRAIN:TRAIN + CALIB]),
            "eval": Split(x[TRAIN + CALIB:], y[TRAIN + CALIB:])}


def colour_digits() -> dict[str, Split]:
    """Digits 0..3 as tinted RGB uint8 (N, 16, 16, 3), split like `digits`."""
    rng = np.random.default_rng(SEED)
    out = {}
    for name, split in digits().items():
        keep = split.labels < len(COLOUR_NAMES)
        x = split.images[keep].astype(np.float32) / 255.0
        x = np.kron(x, np.ones((1, 2, 2), np.float32))  # 8x8 -> 16x16, nearest
        tint = rng.uniform(0.35, 1.0, size=(x.shape[0], 1, 1, 3)).astype(np.float32)
        background = rng.uniform(0.0, 0.25, size=(x.shape[0], 1, 1, 3)).astype(np.float32)
        rgb = background + (1.0 - background) * x[..., None] * tint
        out[name] = Split(np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8),
                          split.labels[keep])
    return out


def write_npz(path: Path, split: Split, class_names: Optional[tuple[str, ...]] = None) -> Path:
    arrays: dict[str, Any] = {"images": split.images, "labels": split.labels}
    if class_names is not None:
        arrays["class_names"] = np.array(class_names)
    np.savez(path, **arrays)
    return path


def write_folder(root: Path, split: Split, class_names: tuple[str, ...]) -> Path:
    """One PNG per image under root/<class name>/, numbered in set order."""
    from PIL import Image

    for name in class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(split.images, split.labels)):
        mode = "RGB" if img.ndim == 3 else "L"
        Image.fromarray(img, mode=mode).save(root / class_names[int(label)] / f"{i:05d}.png")
    return root


def read_folder(root: Path, class_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) read back from a folder with Pillow, class by class (sorted names)."""
    from PIL import Image

    images, labels = [], []
    for label, name in enumerate(sorted(class_names)):
        for f in sorted((root / name).iterdir()):
            images.append(np.asarray(Image.open(f)))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def stored_order(stored: np.ndarray, stored_labels: np.ndarray, mine: np.ndarray,
                 labels: np.ndarray, atol: float = 1e-6) -> np.ndarray:
    """Indices into `mine` that give `stored` (edgeq's eval.npz) image for image.

    The loader may order a folder as it likes (edgeq interleaves the classes); this finds,
    for every stored image, an image of ours with the same label and the same values (within
    `atol`; each used once), so the independent evaluation runs on the same images in the
    same order, without relying on how the loader orders them. Fails if one has no match.
    """
    a = stored.reshape(len(stored), -1).astype(np.float64)
    b = mine.reshape(len(mine), -1).astype(np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    free = np.ones(len(b), dtype=bool)
    order = np.empty(len(a), dtype=np.int64)
    for i in range(len(a)):
        cand = np.flatnonzero(free & (labels == stored_labels[i]))
        dist = np.max(np.abs(b[cand] - a[i]), axis=1)
        j = int(np.argmin(dist))
        assert dist[j] <= atol, f"stored image {i} has no equal image of ours ({dist[j]})"
        order[i] = cand[j]
        free[cand[j]] = False
    return order


def train_classifier(split: Split, classes: int, *, scale_inside: bool, epochs: int,
                     out: Path) -> Path:
    """A small conv net for split's image shape; saved as out (.keras).

    `scale_inside`: the model takes raw pixels and rescales itself (edgeq's default
    preprocessing); else it takes pixels already scaled to 0..1 (--input-scale 1/255).
    """
    import keras

    keras.utils.set_random_seed(SEED)
    shape = split.images.shape[1:] if split.images.ndim == 4 else (*split.images.shape[1:], 1)
    inp = keras.Input(shape)
    h = keras.layers.Rescaling(1 / 255.0)(inp) if scale_inside else inp
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = split.images.reshape(-1, *shape).astype(np.float32)
    model.fit(x if scale_inside else x / 255.0, split.labels, epochs=epochs, batch_size=32,
              verbose=0)
    model.save(out)
    return out


def convert_pair(keras_path: Path, calib: np.ndarray, out_dir: Path) -> tuple[Path, Path]:
    """float32 and full-int8 .tflite made with tf.lite.TFLiteConverter directly (not edgeq);
    `calib` are model-ready float32 inputs."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(keras_path, compile=False)
    f32 = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    i8 = conv.convert()
    paths = out_dir / "theirs_float32.tflite", out_dir / "theirs_int8.tflite"
    paths[0].write_bytes(f32)
    paths[1].write_bytes(i8)
    return paths


@dataclass(frozen=True)
class Independent:
    """What LiteRT itself says about one .tflite file on one set."""

    top1: float
    top5: Optional[float]
    correct: int
    predictions: np.ndarray


def litert_evaluate(model_path: Path, inputs: np.ndarray, labels: np.ndarray) -> Independent:
    """Run `model_path` with ai_edge_litert's Interpreter on model-ready `inputs` (float32
    values as the model's float input takes them), one image at a time; int8/uint8 inputs are
    quantized here with the file's own scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model_path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    dtype = np.dtype(inp["dtype"])
    scale, zero_point = inp["quantization"]
    x = inputs.astype(np.float32).reshape(len(inputs), *inp["shape"][1:])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / np.float32(scale) + zero_point), info.min, info.max).astype(dtype)
    scores = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        scores.append(it.get_tensor(out["index"]).reshape(-1).astype(np.float64))
    s = np.stack(scores)
    pred = np.argmax(s, axis=1)
    correct = int(np.sum(pred == labels))
    top5 = None
    if s.shape[1] > 5:
        best5 = np.argsort(-s, axis=1, kind="stable")[:, :5]
        top5 = float(np.mean(np.any(best5 == labels[:, None], axis=1)))
    return Independent(correct / len(labels), top5, correct, pred)
