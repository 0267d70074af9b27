"""Data in: one loader for every form (`load_dataset`), and the built-in MNIST, verified.

`load_dataset(where, ...)` returns a `Dataset` (images, labels or None, class names, where it
came from) for the forms `quantize --calibration-data/--eval-data`, `import --eval-data` and
`train --data` all take:
- None: the built-in MNIST (`split` "train" or "test"), class names "0".."9", source
  "mnist-train" / "mnist-test";
- an `.npz` with `images` (+ `labels`, integers; optional `class_names`, strings), source
  "file:<name>"; for calibration the older keys (x, x_calib, ...) are accepted too;
- an `.npy` of images (calibration only: it has no labels), source "file:<name>";
- a folder with one sub-folder per class holding PNG/JPEG images (read with Pillow), class
  names = the sorted sub-folder names, source "folder:<name>". Samples are interleaved class by
  class (first image of every class, then the second, ...) so a `limit` keeps every class.
  With `image_size` (H, W, C) every image is converted to gray (C=1) or RGB (C=3) and resized
  (bilinear) as it is read; without it they must all have one size.
The checks on the files themselves happen here (DataError); whether the data fits a model is
edgeq.host.preprocess's job.

MNIST: IDX (gzipped or not) or Keras `mnist.npz`, verified.

`load_mnist(split)` returns images uint8 (N, 28, 28) and labels uint8 (N,). Every file is
checked before use (IDX magic number, dimensions, item counts, file size, label range, and the
sha256 of the uncompressed bytes against `SHA256SUMS.uncompressed` when the directory has one);
anything wrong becomes a one-line `DataError` naming the file, never a numpy traceback.

Where the data comes from: the explicit `data_dir` argument, else `$EDGEQ_DATA_DIR`, else the
copy shipped with the package (`edgeq.models.MNIST_DATA_DIR`). `data_dir` may also be a path to
an `.npz` file.

Imports: standard library, numpy, edgeq.device.errors, edgeq.models (no TensorFlow); Pillow
inside the folder reader.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

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
    """Data files missing, corrupt, truncated, of the wrong form or not matching checksums."""


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
                hint="point --data-dir / EDGEQ_DATA_DIR at a folder of MNIST IDX files "
                "or a Keras mnist.npz",
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
            f"{path}: cannot be read ({type(exc).__name__}: {exc}); "
            "the file is corrupt or truncated",
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

    def pick(keys: list[str]) -> dict[str, str]:
        if x_key not in keys or y_key not in keys:
            raise DataError(
                f"{path}: no {x_key}/{y_key} arrays (it has: {', '.join(sorted(keys)) or 'none'})",
                hint="a Keras mnist.npz holds x_train, y_train, x_test, y_test",
            )
        return {"images": x_key, "labels": y_key}

    arrays, _ = _read_npz(path, pick)
    images, labels = arrays["images"], arrays["labels"]
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
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels",
            hint="images and labels must come from the same split and copy",
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} is out of range 0..9",
            hint="the label file is corrupt; replace it with a good copy",
        )


# ---------------------------------------------------------------------------------------------
# every form: load_dataset

MNIST_CLASS_NAMES = tuple(str(i) for i in range(NUM_CLASSES))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CALIBRATION_KEYS = ("images", "x", "x_calib", "calibration", "x_train", "arr_0")
FORMS_HINT = ("pass an .npz with 'images' and 'labels', a folder with one sub-folder of "
              "PNG/JPEG images per class, or nothing for the built-in MNIST")


@dataclass(frozen=True)
class Dataset:
    """Images as stored (N, H, W[, C]), labels int64 (N,) or None, class names, and source."""

    images: np.ndarray
    labels: Optional[np.ndarray]
    class_names: Optional[tuple[str, ...]]
    source: str
    path: Optional[Path] = None
    resized: Optional[dict] = None  # a folder's images resized while read: from, to, method

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, limit: Optional[int]) -> "Dataset":
        """The first `limit` samples (all when None)."""
        if limit is None or limit >= len(self):
            return self
        labels = self.labels[:limit].copy() if self.labels is not None else None
        return Dataset(self.images[:limit].copy(), labels, self.class_names, self.source,
                       self.path, self.resized)


def load_dataset(
    where: Optional[PathLike],
    *,
    split: str = "test",
    labels_required: bool = True,
    data_dir: Optional[PathLike] = None,
    limit: Optional[int] = None,
    image_size: Optional[tuple[int, int, int]] = None,
    what: str = "evaluation data",
) -> Dataset:
    """The data at `where` in any of the forms of the module docstring; DataError otherwise.

    `labels_required` False (calibration) accepts an .npy and an .npz without labels.
    `image_size` (H, W, C) converts and resizes a folder's images while reading them.
    """
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}", hint="pass a positive number")
    if where is None or str(where) == "":
        images, labels = load_mnist(split, data_dir, limit=limit)
        return Dataset(images, labels.astype(np.int64), MNIST_CLASS_NAMES, f"mnist-{split}")
    path = Path(where).expanduser()
    if path.is_dir():
        data = _load_folder(path, image_size, what)
    elif not path.exists():
        raise DataError(f"{what} {path} does not exist", hint="check the path; " + FORMS_HINT)
    elif path.suffix.lower() == ".npy":
        if labels_required:
            raise DataError(
                f"{what} {path.name} is an .npy: images only, no labels",
                hint="save an .npz with images and labels (numpy.savez), or use an image folder")
        data = Dataset(_checked_images(_read_npy(path), path, "the array"), None, None,
                       f"file:{path.name}", path)
    elif path.suffix.lower() == ".npz":
        data = _load_user_npz(path, labels_required, what)
    else:
        raise DataError(f"{what} {path.name} is not an .npz, an .npy or a folder",
                        hint=FORMS_HINT)
    if labels_required and data.labels is None:
        raise DataError(f"{what} {path.name} has no labels",
                        hint="add a 'labels' array (one integer class per image)")
    return data.head(limit)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {str(exc)[:160]})",
                        hint="the file is corrupt or not a numpy file") from None


NpzPick = Callable[[list[str]], dict[str, str]]


def _read_npz(path: Path, pick: NpzPick) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays that `pick(keys)` names ({role: key}) in the .npz at `path`, by role, and
    that choice; DataError for a file numpy cannot read as one (corrupt, not a zip, object
    arrays)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            chosen = pick(list(npz.files))
            return {role: npz[key] for role, key in chosen.items()}, chosen
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(
            f"{path}: cannot be read as .npz ({type(exc).__name__}: {str(exc)[:160]})",
            hint="the file is corrupt or not a numpy .npz archive (object arrays are refused); "
                 "replace it with a good copy",
        ) from None


def _load_user_npz(path: Path, labels_required: bool, what: str) -> Dataset:
    def pick(keys: list[str]) -> dict[str, str]:
        key = "images" if "images" in keys else None
        if key is None and not labels_required:
            key = next((k for k in _CALIBRATION_KEYS if k in keys),
                       keys[0] if len(keys) == 1 else None)
        if key is None:
            raise DataError(
                f"{path}: no 'images' array (it has: {', '.join(keys) or 'nothing'})",
                hint="save it with numpy.savez(path, images=..., labels=...)")
        return {"images": key, **{k: k for k in ("labels", "class_names") if k in keys}}

    arrays, chosen = _read_npz(path, pick)
    images, key = arrays["images"], chosen["images"]
    labels, names = arrays.get("labels"), arrays.get("class_names")
    images = _checked_images(images, path, f"'{key}'")
    if labels is not None:
        labels = _checked_labels(labels, len(images), path)
    class_names = None
    if names is not None:
        if (names.ndim != 1 or names.dtype.kind not in "US"
                or len(set(names.tolist())) != len(names)):
            raise DataError(
                f"{path}: class_names is {names.dtype} of shape {list(names.shape)}, "
                "not a list of distinct strings",
                hint="store class_names=numpy.array(['cat', 'dog', ...]) in label order")
        class_names = tuple(str(n) for n in names.tolist())
    return Dataset(images, labels, class_names, f"file:{path.name}", path)


def _checked_images(images: np.ndarray, path: Path, key: str) -> np.ndarray:
    if images.dtype.kind not in "iuf" or images.ndim < 2:
        raise DataError(
            f"{path}: {key} holds {images.dtype} of shape {list(images.shape)}, "
            "not a batch of images",
            hint="store a numeric array (N, H, W) or (N, H, W, C)")
    if len(images) == 0:
        raise DataError(f"{path}: {key} holds no images", hint="give at least one image")
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise DataError(f"{path}: {key} holds NaN or infinite values", hint="clean the data")
    return images


def _checked_labels(labels: np.ndarray, count: int, path: Path) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path}: labels are {labels.dtype} of shape {list(labels.shape)}, "
            "not integers of shape (N,)",
            hint="store one integer class index per image")
    if len(labels) != count:
        raise DataError(f"{path}: {count} images but {len(labels)} labels",
                        hint="images and labels must have the same length")
    if labels.size and int(labels.min()) < 0:
        raise DataError(f"{path}: label {int(labels.min())} is negative",
                        hint="labels are class indices 0, 1, ...")
    return labels.astype(np.int64)


def _load_folder(path: Path, image_size: Optional[tuple[int, int, int]], what: str) -> Dataset:
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{what} folder {path} has no class sub-folders",
                        hint="put each class's images in its own sub-folder (cat/, dog/, ...)")
    per_class = [sorted(f for f in (path / c).iterdir()
                        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES) for c in classes]
    if not any(per_class):
        raise DataError(f"{what} folder {path} holds no PNG/JPEG images in {len(classes)} "
                        "sub-folder(s)", hint="images must end in .png, .jpg or .jpeg")
    order = [(k, files[i]) for i in range(max(map(len, per_class)))
             for k, files in enumerate(per_class) if i < len(files)]
    read = [_read_image(f, image_size) for _, f in order]
    arrays = [a for a, _ in read]
    before = sorted({s for _, s in read if image_size is not None and s != image_size})
    resized = None if not before else {
        "from": list(before[0]) if len(before) == 1 else "various",
        "to": list(image_size or ()), "method": "bilinear"}
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        (a, b) = sorted(shapes)[:2]
        raise DataError(
            f"{what} folder {path}: images differ in shape ({list(a)} and {list(b)})",
            hint="give a model to resize them to, or store images of one size")
    labels = np.array([k for k, _ in order], dtype=np.int64)
    return Dataset(np.stack(arrays), labels, tuple(classes), f"folder:{path.name}", path,
                   resized)


def _read_image(f: Path, image_size: Optional[tuple[int, int, int]]
                ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The image as uint8 (converted/resized to `image_size` if given), and its own (H, W, C)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            own = (im.size[1], im.size[0], 1 if im.mode in ("1", "L", "I;16", "I", "F") else 3)
            if image_size is None:
                im = im.convert("L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB")
            else:
                h, w, c = image_size
                im = im.convert("L" if c == 1 else "RGB")
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8), own
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{f}: cannot be read as an image ({type(exc).__name__}: "
                        f"{str(exc)[:120]})", hint="replace or remove the file") from None
