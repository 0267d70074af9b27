"""Data in, every form (issue 10): .npz, .npy, image folders and the built-in MNIST through one
loader, fitted to a model's input (resize, gray <-> RGB) and mapped by a recorded spec; every
bad input a one-line error with the numbers. Real files (PNG/JPEG written with Pillow), no
TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgeq.host.artifacts import DEFAULT_PREPROCESSING
from edgeq.host.data import DataError, load_dataset, load_mnist
from edgeq.host.preprocess import (
    DataFitError,
    ModelInput,
    Preprocessing,
    check_labels,
    fit_images,
    prepare_data,
    prepare_images,
)
from PIL import Image

COLOUR = ModelInput((24, 24, 3), 3, "colours.keras")
MNIST_LIKE = ModelInput((28, 28, 1), 10, "mnist.keras")


def _folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (36, 30),
            mode: str = "RGB", suffix: str = ".png") -> Path:
    """root/<class>/<i>.png: class k's images filled with the value 40 * (k + 1)."""
    for k, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new(mode, size, (40 * (k + 1),) * (1 if mode == "L" else 3)).save(
                root / name / f"{i:02d}{suffix}")
    return root


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in exc.value.message and exc.value.hint
    return exc.value.message


def test_mnist_default_is_unchanged() -> None:
    d = load_dataset(None, split="test", limit=7)
    x, y = load_mnist("test", limit=7)
    assert d.source == "mnist-test" and d.class_names == tuple("0123456789")
    assert d.images.dtype == np.uint8 and np.array_equal(d.images, x)
    assert d.labels is not None and np.array_equal(d.labels, y)
    # identity preprocessing keeps MNIST's own uint8 (N, 28, 28): eval.npz as before
    p = prepare_data(None, MNIST_LIKE, Preprocessing(), purpose="evaluation", limit=7)
    assert p.images.dtype == np.uint8 and p.images.shape == (7, 28, 28) and p.resized is None


def test_folder_sorted_classes_interleaved_and_resized(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"red": 3, "blue": 2, "green": 1})
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    d = load_dataset(root, image_size=(24, 24, 3))
    assert d.class_names == ("blue", "green", "red") and d.source == "folder:imgs"
    assert d.labels is not None and d.labels.tolist() == [0, 1, 2, 0, 2, 2]  # interleaved
    assert d.images.shape == (6, 24, 24, 3) and d.images.dtype == np.uint8
    assert d.resized == {"from": [30, 36, 3], "to": [24, 24, 3], "method": "bilinear"}
    assert d.head(3).labels.tolist() == [0, 1, 2]  # a limit keeps every class
    # red (folder index 2) was filled with 40 * 1 = 40: Pillow's bilinear keeps a flat image
    assert np.all(d.images[2] == 40)
    gray = load_dataset(root, image_size=(28, 28, 1))
    assert gray.images.shape == (6, 28, 28)  # gray as MNIST stores it; the runtime adds the axis


def test_gray_jpeg_folder_to_rgb_model(tmp_path: Path) -> None:
    root = _folder(tmp_path / "g", {"a": 2, "b": 2, "c": 1}, size=(24, 24), mode="L",
                   suffix=".jpg")
    p = prepare_data(root, COLOUR, Preprocessing(scale=1 / 255), purpose="evaluation")
    assert p.images.shape == (5, 24, 24, 3) and p.images.dtype == np.float32
    assert np.allclose(p.images[..., 0], p.images[..., 2])  # gray repeated into RGB
    assert 0.0 <= p.images.min() and p.images.max() <= 1.0


def test_npz_with_class_names_and_arrays_resized(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (5, 32, 32), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.array([0, 1, 2, 1, 0]),
             class_names=np.array(["a", "b", "c"]))
    d = load_dataset(tmp_path / "d.npz")
    assert d.class_names == ("a", "b", "c") and d.source == "file:d.npz"
    out, note = fit_images(d.images, COLOUR, "d.npz")
    assert out.shape == (5, 24, 24, 3) and out.dtype == np.uint8
    assert note == {"from": [32, 32], "to": [24, 24, 3], "method": "bilinear"}
    # float arrays resize channel by channel and stay float
    f, _ = fit_images(x.astype(np.float32) / 255, ModelInput((16, 16), 3), "f")
    assert f.shape == (5, 16, 16) and f.dtype == np.float32 and 0 <= f.min() <= f.max() <= 1


def test_rgb_to_gray_uses_luma() -> None:
    x = np.zeros((1, 28, 28, 3), np.uint8)
    x[..., 0] = 100  # pure red
    out, _ = fit_images(x, MNIST_LIKE, "red")
    assert out.shape == (1, 28, 28, 1) and int(out.max()) == round(0.299 * 100)


def test_preprocessing_spec_is_recorded_and_applied() -> None:
    assert Preprocessing().to_dict() == DEFAULT_PREPROCESSING  # artifacts' default, one truth
    pre = Preprocessing.from_options(0.5, -1.0, "10,20,30", "2")
    d = pre.to_dict()
    assert d["scale"] == 0.5 and d["offset"] == -1.0 and d["mean"] == [10.0, 20.0, 30.0]
    assert d["identity"] is False and Preprocessing.from_dict(d) == pre
    x = np.full((1, 24, 24, 3), 50, np.uint8)
    y, _ = prepare_images(x, COLOUR, pre, "x")
    assert y.dtype == np.float32
    assert np.allclose(y[0, 0, 0], [(50 - 10) / 2 * 0.5 - 1, (50 - 20) / 2 * 0.5 - 1,
                                    (50 - 30) / 2 * 0.5 - 1])


@pytest.mark.parametrize("options, match", [
    ((0.0, 0.0, None, None), "--input-scale 0"),
    ((1.0, 0.0, "1,2", None), None),  # caught against the model's channels below
    ((1.0, 0.0, None, "1,0,1"), "contains 0"),
    ((1.0, 0.0, "a,b", None), "not a number"),
])
def test_bad_preprocessing(options: tuple, match: str) -> None:
    if match is None:
        pre = Preprocessing.from_options(*options)
        with pytest.raises(DataFitError, match=r"2 values, the model input has 3") as exc:
            prepare_images(np.zeros((1, 24, 24, 3), np.uint8), COLOUR, pre, "x")
    else:
        with pytest.raises(DataFitError, match=match) as exc:
            Preprocessing.from_options(*options)
    _one_line(exc)


def test_mnist_default_refused_for_other_models() -> None:
    with pytest.raises(DataFitError, match=r"takes \[24, 24, 3\] and gives 3 classes.*MNIST") \
            as exc:
        prepare_data(None, COLOUR, Preprocessing(), purpose="evaluation")
    assert "--eval-data" in exc.value.hint and _one_line(exc)
    with pytest.raises(DataFitError) as exc:
        prepare_data(None, COLOUR, Preprocessing(), purpose="calibration")
    assert "--calibration-data" in exc.value.hint
    # a 28x28 model with 5 outputs may calibrate on MNIST, not evaluate on it
    five = ModelInput((28, 28), 5, "five.keras")
    assert prepare_data(None, five, Preprocessing(), purpose="calibration",
                        sample_size=3).images.shape == (3, 28, 28)
    with pytest.raises(DataFitError, match="gives 5 classes"):
        prepare_data(None, five, Preprocessing(), purpose="evaluation")


def test_label_range_and_class_count_refused(tmp_path: Path) -> None:
    x = np.zeros((4, 24, 24, 3), np.uint8)
    np.savez(tmp_path / "hi.npz", images=x, labels=np.array([0, 1, 2, 7]))
    with pytest.raises(DataFitError, match=r"label 7, but colours.keras outputs 3 classes "
                                           r"\(labels 0..2\)") as exc:
        prepare_data(tmp_path / "hi.npz", COLOUR, Preprocessing(), purpose="evaluation")
    _one_line(exc)
    root = _folder(tmp_path / "four", {"a": 1, "b": 1, "c": 1, "d": 1}, size=(24, 24))
    with pytest.raises(DataFitError, match=r"names 4 classes \(a, b, c, d\).*outputs 3"):
        check_labels(load_dataset(root), COLOUR, str(root))


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"),
    ("npy_for_eval", "an .npy: images only, no labels"),
    ("txt", "is not an .npz, an .npy or a folder"),
    ("no_images_key", "no 'images' array"),
    ("no_labels", "has no labels"),
    ("float_labels", "labels are float64"),
    ("label_count", "5 images but 3 labels"),
    ("negative", "label -1 is negative"),
    ("nan", "NaN"),
    ("strings", "not a batch of images"),
    ("empty", "holds no images"),
    ("pickled_names", "cannot be read as .npz"),
    ("empty_folder", "has no class sub-folders"),
    ("no_images_folder", "holds no PNG/JPEG images"),
    ("broken_png", "cannot be read as an image"),
    ("mixed_sizes", "images differ in shape"),
    ("corrupt_npz", "cannot be read as .npz"),
])
def test_bad_data_one_line_errors(tmp_path: Path, case: str, match: str) -> None:
    x, y = np.zeros((5, 8, 8), np.uint8), np.arange(5) % 3
    p = tmp_path / "d.npz"
    if case == "missing":
        p = tmp_path / "nope.npz"
    elif case == "npy_for_eval":
        p = tmp_path / "d.npy"
        np.save(p, x)
    elif case == "txt":
        p = tmp_path / "d.txt"
        p.write_text("1 2 3")
    elif case == "no_images_key":
        np.savez(p, pixels=x, labels=y)
    elif case == "no_labels":
        np.savez(p, images=x)
    elif case == "float_labels":
        np.savez(p, images=x, labels=y.astype(np.float64))
    elif case == "label_count":
        np.savez(p, images=x, labels=y[:3])
    elif case == "negative":
        np.savez(p, images=x, labels=y - 1)
    elif case == "nan":
        np.savez(p, images=np.full((5, 8, 8), np.nan, np.float32), labels=y)
    elif case == "strings":
        np.savez(p, images=np.array([["a"] * 8] * 5), labels=y)
    elif case == "empty":
        np.savez(p, images=x[:0], labels=y[:0])
    elif case == "pickled_names":
        np.savez(p, images=x, labels=y, class_names=np.array([{"a": 1}], dtype=object))
    elif case == "corrupt_npz":
        p.write_bytes(b"PK\x03\x04 truncated")
    else:
        p = tmp_path / "folder"
        p.mkdir()
        if case == "no_images_folder":
            (p / "cats").mkdir()
        elif case in ("broken_png", "mixed_sizes"):
            _folder(p / "x", {"a": 1}, size=(8, 8))
            p = p / "x"
            if case == "broken_png":
                (p / "a" / "bad.png").write_bytes(b"\x89PNG not really")
            else:
                Image.new("RGB", (9, 9)).save(p / "a" / "big.png")
    with pytest.raises(DataError, match=match) as exc:
        load_dataset(p)
    _one_line(exc)


def test_calibration_accepts_npy_and_legacy_keys(tmp_path: Path) -> None:
    x = np.random.default_rng(1).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "c.npy", x)
    np.savez(tmp_path / "c.npz", x_calib=x)
    for f in ("c.npy", "c.npz"):
        p = prepare_data(tmp_path / f, MNIST_LIKE, Preprocessing(), purpose="calibration",
                         sample_size=4, seed=3)
        assert p.labels is None and p.source == f"file:{f}" and len(p.images) == 4
    a = prepare_data(tmp_path / "c.npy", MNIST_LIKE, Preprocessing(), purpose="calibration",
                     sample_size=4, seed=3).images
    b = prepare_data(tmp_path / "c.npy", MNIST_LIKE, Preprocessing(), purpose="calibration",
                     sample_size=4, seed=4).images
    assert not np.array_equal(a, b)  # seeded


def test_shape_that_cannot_fit_names_both_shapes() -> None:
    with pytest.raises(DataFitError, match=r"samples of shape \[10\], m expects \[4, 4, 7\]"):
        fit_images(np.zeros((2, 10), np.float32), ModelInput((4, 4, 7), 2, "m"), "x")
    with pytest.raises(DataFitError, match=r"\[5, 5, 2\].*\[24, 24, 3\]"):
        fit_images(np.zeros((2, 5, 5, 2), np.uint8), COLOUR, "x")
