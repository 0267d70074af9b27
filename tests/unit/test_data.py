"""The MNIST loader: the shipped files, user copies (IDX raw/gzipped, Keras npz), and every way a
file can be broken: each must give a one-line DataError naming the file."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from edgeq.host.data import DataError, load_mnist, resolve_data_dir
from edgeq.models import MNIST_DATA_DIR


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _write_split(
    directory: Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    split: str = "test",
    gz: bool = False,
    sums: bool = False,
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = "t10k" if split == "test" else "train"
    paths = []
    lines = []
    for kind, arr, code in (("images", images, 3), ("labels", labels, 1)):
        name = f"{stem}-{kind}-idx{code}-ubyte"
        raw = _idx(arr)
        lines.append(f"{hashlib.sha256(raw).hexdigest()}  {name}")
        path = directory / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(raw) if gz else raw)
        paths.append(path)
    if sums:
        (directory / "SHA256SUMS.uncompressed").write_text("\n".join(lines) + "\n")
    return paths[0], paths[1]


@pytest.fixture
def small() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7, dtype=np.uint8)


def test_shipped_mnist_loads_verified() -> None:
    x, y = load_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.uint8
    assert list(y[:5]) == [7, 2, 1, 0, 4]  # the well-known first test labels
    assert np.bincount(y, minlength=10).min() > 800
    xt, yt = load_mnist("train", limit=100)
    assert xt.shape == (100, 28, 28) and list(yt[:5]) == [5, 0, 4, 1, 9]


def test_resolve_data_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGEQ_DATA_DIR", raising=False)
    assert resolve_data_dir(None) == MNIST_DATA_DIR
    monkeypatch.setenv("EDGEQ_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_env_var_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, small) -> None:
    _write_split(tmp_path, *small)
    monkeypatch.setenv("EDGEQ_DATA_DIR", str(tmp_path))
    x, y = load_mnist("test")
    assert np.array_equal(x, small[0]) and np.array_equal(y, small[1])


@pytest.mark.parametrize("gz", [False, True])
def test_user_idx_copy_raw_and_gzipped(tmp_path: Path, small, gz: bool) -> None:
    _write_split(tmp_path, *small, gz=gz, sums=True)
    x, y = load_mnist("test", tmp_path)
    assert np.array_equal(x, small[0]) and np.array_equal(y, small[1])
    x2, y2 = load_mnist("test", tmp_path, limit=3)
    assert x2.shape == (3, 28, 28) and np.array_equal(y2, small[1][:3])


def test_keras_npz_dir_and_file(tmp_path: Path, small) -> None:
    x, y = small
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    xt, yt = load_mnist("test", tmp_path)
    assert np.array_equal(xt, x[:4]) and np.array_equal(yt, y[:4])
    xr, yr = load_mnist("train", tmp_path / "mnist.npz")
    assert np.array_equal(xr, x) and np.array_equal(yr, y)


def _expect(match: str, split: str, where: Path) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        load_mnist(split, where)
    err = info.value
    assert "\n" not in err.message and err.hint
    return err


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    shutil.copytree(MNIST_DATA_DIR, tmp_path / "d")
    path = tmp_path / "d" / "t10k-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _expect("corrupt or truncated", "test", tmp_path / "d")
    assert "t10k-images-idx3-ubyte.gz" in err.message


def test_corrupt_gzip_bytes(tmp_path: Path, small) -> None:
    images, _ = _write_split(tmp_path, *small, gz=True)
    data = bytearray(images.read_bytes())
    data[20:60] = b"\xff" * 40
    images.write_bytes(bytes(data))
    _expect("t10k-images-idx3-ubyte.gz", "test", tmp_path)


def test_truncated_raw_idx(tmp_path: Path, small) -> None:
    images, _ = _write_split(tmp_path, *small)
    images.write_bytes(images.read_bytes()[:-100])
    _expect("truncated.*implies", "test", tmp_path)


def test_wrong_magic(tmp_path: Path, small) -> None:
    images, labels = _write_split(tmp_path, *small)
    images.write_bytes(labels.read_bytes())  # a label file where the images should be
    err = _expect("wrong IDX magic", "test", tmp_path)
    assert "t10k-images" in err.message


def test_sha256_mismatch(tmp_path: Path, small) -> None:
    images, _ = _write_split(tmp_path, *small, sums=True)
    raw = bytearray(images.read_bytes())
    raw[-1] ^= 0xFF  # same size, one pixel changed: only the checksum can tell
    images.write_bytes(bytes(raw))
    err = _expect("sha256", "test", tmp_path)
    assert "t10k-images-idx3-ubyte" in err.message


def test_count_mismatch_and_label_range(tmp_path: Path, small) -> None:
    x, y = small
    _write_split(tmp_path / "a", x, y[:5])
    _expect("7 images but .* 5 labels", "test", tmp_path / "a")
    bad = y.copy()
    bad[0] = 11
    _write_split(tmp_path / "b", x, bad)
    _expect("label 11 is out of range", "test", tmp_path / "b")


def test_wrong_image_dims(tmp_path: Path) -> None:
    _write_split(tmp_path, np.zeros((3, 20, 20), np.uint8), np.zeros(3, np.uint8))
    _expect(r"shape \[3, 20, 20\]", "test", tmp_path)


def test_missing_and_incomplete(tmp_path: Path, small) -> None:
    _expect("does not exist", "test", tmp_path / "nowhere")
    _expect("no MNIST test data", "test", tmp_path)
    _, labels = _write_split(tmp_path, *small)
    labels.unlink()
    _expect("incomplete", "test", tmp_path)


def test_bad_npz_files(tmp_path: Path, small) -> None:
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    _expect("cannot be read as .npz", "train", tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    _expect("no x_train/y_train", "train", tmp_path / "other.npz")
    np.savez(
        tmp_path / "float.npz",
        x_test=np.zeros((2, 28, 28), np.float32),
        y_test=np.zeros(2, np.uint8),
    )
    _expect("dtype float32", "test", tmp_path / "float.npz")
    np.savez(
        tmp_path / "shape.npz", x_test=np.zeros((2, 784), np.uint8), y_test=np.zeros(2, np.uint8)
    )
    _expect(r"shape \[2, 784\]", "test", tmp_path / "shape.npz")
    (tmp_path / "notes.txt").write_text("hi")
    _expect("neither a directory nor an .npz", "test", tmp_path / "notes.txt")


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="unknown MNIST split"):
        load_mnist("validation")
    with pytest.raises(DataError, match="at least 1"):
        load_mnist("test", limit=0)
