"""MNIST loading for the host pipeline: IDX (gzipped or not) or Keras `mnist.npz`, verified.

`load_mnist(split)` returns images uint8 (N, 28, 28) and labels uint8 (N,). Every file is
checked before use (IDX magic number, dimensions, item counts, file size, label range, and the
sha256 of the uncompressed bytes against `SHA256SUMS.uncompressed` when the directory has one);
anything wrong becomes a one-line `DataError` naming the file, never a numpy traceback.

Where the data comes from: the explicit `data_dir` argument, else `$EDGEQ_DATA_DIR`, else the
copy shipped with the package (`edgeq.models.MNIST_DATA_DIR`). `data_dir` may also be a path to
an `.npz` file.

Imports: standard library, numpy, edgeq.device.errors, edgeq.models (no TensorFlow).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
from edgeq.device.errors import EdgeqError

logger = logging.getLogger(__name__)

ENV_DATA_DIR = "EDGEQ_DATA_DIR"
SPLITS = ("train", "test")
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
SHA256SUMS_FILE = "SHA256SUMS.uncompressed"
NPZ_NAME = "mnist.npz"

# The usual file stems per split; both "-idx3-" and ".idx3-" spellings are common.
_IDX_STEMS = {
    "train": (
        ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
        ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
        ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
    ),
}
# IDX magic: two zero bytes, the element type (0x08 = unsigned byte), the number of dims.
_IDX_UBYTE = 0x08

PathLike = Union[str, "os.PathLike[str]", Path]


class DataError(EdgeqError):
    """MNIST files missing, corrupt, truncated or not matching their checksums."""


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> Path:
    """Where MNIST is read from: `data_dir` > $EDGEQ_DATA_DIR > the copy shipped with edgeq."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    from edgeq.models import MNIST_DATA_DIR

    return MNIST_DATA_DIR


def load_mnist(
    split: str = "train",
    data_dir: Optional[PathLike] = None,
    limit: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels uint8 (N,) of `split` ("train" or "test").

    `limit` keeps the first `limit` examples (all when None). Raises DataError on any problem.
    """
    if split not in SPLITS:
        raise DataError(f"unknown MNIST split {split!r}", hint="use 'train' or 'test'")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}", hint="pass a positive number")
    where = resolve_data_dir(data_dir)
    if where.is_file():
        if where.suffix != ".npz":
            raise DataError(
                f"{where} is neither a directory nor an .npz file",
                hint="point --data-dir / EDGEQ_DATA_DIR at a folder of MNIST IDX files or a Keras mnist.npz",
            )
        images, labels = _load_npz(where, split)
    elif where.is_dir():
        idx_files = _find_idx(where, split)
        if idx_files is not None:
            images, labels = _load_idx_pair(where, *idx_files)
        elif (where / NPZ_NAME).is_file():
            images, labels = _load_npz(where / NPZ_NAME, split)
        else:
            images_stem, labels_stem = (stems[0] for stems in _IDX_STEMS[split])
            raise DataError(
                f"no MNIST {split} data in {where}",
                hint=f"the folder needs {images_stem}[.gz] and {labels_stem}[.gz], or {NPZ_NAME}",
            )
    else:
        raise DataError(
            f"MNIST data directory {where} does not exist",
            hint=f"pass --data-dir or set {ENV_DATA_DIR} to a folder with the MNIST files",
        )
    if limit is not None:
        images, labels = images[:limit].copy(), labels[:limit].copy()
    logger.debug("loaded MNIST %s: %d examples from %s", split, len(labels), where)
    return images, labels


# ---------------------------------------------------------------------------------------------
# IDX


def _find_idx(directory: Path, split: str) -> Optional[tuple[Path, Path]]:
    """The (images, labels) files of `split` in `directory`, or None if neither is there."""
    found: list[Optional[Path]] = []
    for stems in _IDX_STEMS[split]:
        path = None
        for stem in stems:
            for name in (stem, stem + ".gz"):
                if (directory / name).is_file():
                    path = directory / name
                    break
            if path is not None:
                break
        found.append(path)
    images, labels = found
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        missing = _IDX_STEMS[split][0 if images is None else 1][0]
        raise DataError(
            f"MNIST {split} data in {directory} is incomplete: {missing}[.gz] is missing",
            hint="copy the missing file next to the others",
        )
    return images, labels


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as gz:
                    return gz.read()
            return f.read()
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(
            f"{path}: cannot be read ({type(exc).__name__}: {exc}); the file is corrupt or truncated",
            hint="replace it with a good copy (see models/mnist/data/README.md)",
        ) from None


def _load_sha256sums(directory: Path) -> dict[str, str]:
    sums_path = directory / SHA256SUMS_FILE
    if not sums_path.is_file():
        return {}
    sums: dict[str, str] = {}
    try:
        text = sums_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{sums_path}: cannot be read ({exc})", hint="fix or delete the file"
        ) from None
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _uncompressed_name(path: Path) -> str:
    return path.name.removesuffix(".gz")


def _verify_sha256(path: Path, data: bytes, sums: dict[str, str]) -> None:
    expected = sums.get(_uncompressed_name(path))
    if expected is None:
        return
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(
            f"{path}: sha256 of the uncompressed bytes is {actual[:12]}…, "
            f"{SHA256SUMS_FILE} expects {expected[:12]}…",
            hint="the file is damaged or not the original MNIST; replace it with a good copy",
        )


def _parse_idx(path: Path, data: bytes, ndim: int) -> np.ndarray:
    """A uint8 IDX file of `ndim` dimensions, with its magic, header and size checked."""
    header_bytes = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(
            f"{path}: truncated ({len(data)} bytes, not even an IDX header)",
            hint="replace it with a good copy",
        )
    if data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE or data[3] != ndim:
        raise DataError(
            f"{path}: wrong IDX magic number 0x{data[:4].hex()} "
            f"(expected 0x000008{ndim:02x}, unsigned bytes in {ndim} dimensions)",
            hint="this is not an MNIST "
            + ("image" if ndim == 3 else "label")
            + " file; check the file names and contents",
        )
    if len(data) < header_bytes:
        raise DataError(f"{path}: truncated IDX header", hint="replace it with a good copy")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_bytes = header_bytes + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_bytes:
        what = "truncated" if len(data) < expected_bytes else "longer than its header says"
        raise DataError(
            f"{path}: {what}: {len(data)} bytes, the header {list(dims)} implies {expected_bytes}",
            hint="replace it with a good copy",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(dims)


def _load_idx_pair(
    directory: Path, images_path: Path, labels_path: Path
) -> tuple[np.ndarray, np.ndarray]:
    sums = _load_sha256sums(directory)
    images_raw = _read_maybe_gzip(images_path)
    _verify_sha256(images_path, images_raw, sums)
    labels_raw = _read_maybe_gzip(labels_path)
    _verify_sha256(labels_path, labels_raw, sums)
    images = _parse_idx(images_path, images_raw, 3)
    labels = _parse_idx(labels_path, labels_raw, 1)
    _check_arrays(images, labels, images_path, labels_path)
    return images, labels


# ---------------------------------------------------------------------------------------------
# Keras mnist.npz


def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x_key, y_key = f"x_{split}", f"y_{split}"
    sums = _load_sha256sums(path.parent)
    if path.name in sums:
        _verify_sha256(path, path.read_bytes(), sums)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            if x_key not in keys or y_key not in keys:
                raise DataError(
                    f"{path}: no {x_key}/{y_key} arrays (it has: {', '.join(sorted(keys)) or 'none'})",
                    hint="a Keras mnist.npz holds x_train, y_train, x_test, y_test",
                )
            images = npz[x_key]
            labels = npz[y_key]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(
            f"{path}: cannot be read as .npz ({type(exc).__name__}: {exc})",
            hint="the file is corrupt or not a numpy .npz archive; replace it with a good copy",
        ) from None
    images = _as_uint8(images, path, x_key)
    labels = _as_uint8(labels, path, y_key)
    _check_arrays(images, labels, path, path)
    return images, labels


def _as_uint8(array: np.ndarray, path: Path, key: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu" and array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(
            f"{path}: {key} has values outside 0..255", hint="MNIST pixels and labels are bytes"
        )
    if array.dtype.kind not in "iu":
        raise DataError(
            f"{path}: {key} has dtype {array.dtype}, expected uint8",
            hint="store MNIST as uint8 arrays (as Keras' mnist.npz does)",
        )
    return array.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# shared checks


def _check_arrays(
    images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path
) -> None:
    if images.ndim != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise DataError(
            f"{images_path}: images have shape {list(images.shape)}, expected [N, 28, 28]",
            hint="this is not MNIST-shaped data",
        )
    if labels.ndim != 1:
        raise DataError(
            f"{labels_path}: labels have shape {list(labels.shape)}, expected [N]",
            hint="this is not an MNIST label array",
        )
    if images.shape[0] == 0:
        raise DataError(f"{images_path}: holds no images", hint="replace it with a good copy")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels",
            hint="images and labels must come from the same split and copy",
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} is out of range 0..9",
            hint="the label file is corrupt; replace it with a good copy",
        )
