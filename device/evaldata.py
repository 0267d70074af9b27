"""Evaluation sets on the device: the artifacts' eval.npz, read one batch at a time.

The file (written by edgeq.host.artifacts.eval_file_bytes, the one writer) is an .npz with
`labels` (integers, (N,)) and one of:
- `images`: what the model's input takes, prepared once on the host: uint8 raw pixels (MNIST,
  or any data whose preprocessing is the identity) or float32 model-ready values (data that is
  genuinely float), shaped (N, H, W) or (N, H, W, C) (any trailing shape for tensors);
- `pixels` (uint8, fitted to the model's shape) with the recorded affine preprocessing
  `pre_scale`, `pre_offset` (float32 scalars), `pre_mean`, `pre_std` (float32 (C,), or (0,)
  for none): the model takes y = (x - mean) / std * scale + offset, computed here per batch in
  float32 with the same operations, in the same order, as edgeq.host.preprocess.Preprocessing
  .apply, so the values (and predictions) equal those of the float32 file it replaces at a
  quarter of its size. (A different member name, so an agent older than this format says "no
  images array" instead of evaluating raw pixels.)
`open_eval_data` checks the file once (reading it through, so a damaged member fails before
any timing) and keeps only the labels; `EvalData.batches` streams the images from the zip
member (compressed or stored) a batch at a time, so the process never holds the whole set.
The runtime adapter quantizes model-ready values with the int8 model's own input scale and
zero point. Members are read with numpy's header parser and never unpickled, so a hostile .npz
cannot run code; a truncated or damaged file is an EvalDataError, whatever numpy, zlib or
zipfile raised while reading it.
Imports: standard library, numpy, edgeq.device.errors.
"""
from __future__ import annotations

import contextlib
import io
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
from edgeq.device.errors import EvalDataError

__all__ = ["IMAGE_DTYPES", "AFFINE_KEYS", "Affine", "EvalData", "open_eval_data",
           "load_eval_data", "encode_eval_npz"]

#: the element types an evaluation set's `images` may have
IMAGE_DTYPES = frozenset({"uint8", "float32"})
#: the arrays that record the affine preprocessing of `pixels`
AFFINE_KEYS = ("pre_mean", "pre_std", "pre_scale", "pre_offset")
#: bytes of images read per chunk when the file is checked
_CHECK_CHUNK_BYTES = 1 << 20

_HINT = ("pass the eval.npz written by edgeq quantize or edgeq import (images uint8 or float32 "
         "(N, H, W[, C]), labels integers (N,))")
_DAMAGED_HINT = "the file is truncated or damaged; run edgeq quantize (or import) and deploy again"


@dataclass(frozen=True)
class Affine:
    """y = (x - mean) / std * scale + offset on uint8 pixels, channels last (float32)."""

    scale: float = 1.0
    offset: float = 0.0
    mean: Optional[np.ndarray] = None  # float32 (C,)
    std: Optional[np.ndarray] = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The model-ready float32 values of a batch of pixels."""
        y = x.astype(np.float32)
        if self.mean is not None:
            y = y - self.mean
        if self.std is not None:
            y = y / self.std
        if self.scale != 1.0:
            y = y * np.float32(self.scale)
        if self.offset != 0.0:
            y = y + np.float32(self.offset)
        return y

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz members that record it."""
        none = np.zeros(0, np.float32)
        return {"pre_mean": none if self.mean is None else np.asarray(self.mean, np.float32),
                "pre_std": none if self.std is None else np.asarray(self.std, np.float32),
                "pre_scale": np.float32(self.scale), "pre_offset": np.float32(self.offset)}


@contextlib.contextmanager
def _errors(p: Path) -> Iterator[None]:
    """Every failure reading `p` as one EvalDataError line."""
    try:
        yield
    except FileNotFoundError:
        raise EvalDataError(f"evaluation data {p} does not exist",
                            hint="check the path, or deploy the artifacts again") from None
    except IsADirectoryError:
        raise EvalDataError(f"evaluation data path {p} is a directory",
                            hint="pass the .npz file itself") from None
    except PermissionError:
        raise EvalDataError(f"evaluation data {p} is not readable (permission denied)",
                            hint="check the file's permissions") from None
    except EvalDataError:
        raise
    except MemoryError:
        raise EvalDataError(f"{p.name} is too large to load into memory",
                            hint="evaluate on fewer images") from None
    except Exception as exc:  # zipfile, zlib, numpy's header parser (tokenize), EOFError, ...
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise EvalDataError(f"{p.name} is not a readable .npz file ({detail})",
                            hint=_DAMAGED_HINT) from None


def _header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy stream `fh`, positioned at its data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def _read_rows(fh: Any, count: int, row_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """`count` rows from the stream, exactly (EOFError when the member ends early)."""
    nbytes = count * int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    raw = fh.read(nbytes)
    if len(raw) != nbytes:
        raise EOFError(f"the array ends after {len(raw)} of {nbytes} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape((count, *row_shape))


def _small_array(z: zipfile.ZipFile, name: str) -> np.ndarray:
    with z.open(name + ".npy") as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


@dataclass(frozen=True)
class EvalData:
    """A checked evaluation set: its labels in memory, its images streamed from the file."""

    path: Path
    member: str  # "images" or "pixels"
    count: int
    sample_shape: tuple[int, ...]
    stored_dtype: np.dtype
    labels: np.ndarray  # int64 (count,)
    affine: Optional[Affine] = None

    def __len__(self) -> int:
        return self.count

    @property
    def dtype(self) -> np.dtype:
        """What the model-ready values are: uint8 raw pixels or float32."""
        return np.dtype(np.float32) if self.affine is not None else self.stored_dtype

    def limited(self, n: Optional[int]) -> "EvalData":
        """The first `n` samples (all when None or more than there are)."""
        if n is None or n >= self.count:
            return self
        return replace(self, count=int(n), labels=self.labels[:n])

    def batches(self, batch_size: int, start: int = 0) -> Iterator[np.ndarray]:
        """Model-ready images, `batch_size` at a time, from sample `start` to the end."""
        bs = max(1, int(batch_size))
        with _errors(self.path), zipfile.ZipFile(self.path) as z, \
                z.open(self.member + ".npy") as fh:
            _header(fh)
            if start:
                _read_rows(fh, start, self.sample_shape, self.stored_dtype)
            i = start
            while i < self.count:
                m = min(bs, self.count - i)
                x = _read_rows(fh, m, self.sample_shape, self.stored_dtype)
                yield self.affine.apply(x) if self.affine is not None else x
                i += m

    def head(self, n: int) -> np.ndarray:
        """The first `n` model-ready images (fewer when there are fewer)."""
        n = max(0, min(int(n), self.count))
        if n == 0:
            return np.zeros((0, *self.sample_shape), self.dtype)
        return next(iter(self.batches(n)))

    def all(self) -> np.ndarray:
        """Every model-ready image in one array (host-side tools; the device streams)."""
        return self.head(self.count)


def _check_images(p: Path, shape: tuple[int, ...], fortran: bool, dtype: np.dtype,
                  member: str) -> None:
    allowed = {"uint8"} if member == "pixels" else IMAGE_DTYPES
    if dtype.name not in allowed:
        raise EvalDataError(f"{p.name}: {member} are {dtype}, not {' or '.join(sorted(allowed))}",
                            hint=_HINT)
    if len(shape) < 2:
        raise EvalDataError(
            f"{p.name}: images have shape {list(shape)}, not (N, H, W) or (N, H, W, C)",
            hint=_HINT)
    if fortran and len(shape) > 1 and int(np.prod(shape[1:])) > 1:
        raise EvalDataError(f"{p.name}: images are stored in Fortran order",
                            hint="save them C-contiguous (numpy.ascontiguousarray), or run "
                                 "edgeq quantize (or import) again")


def _read_through(fh: Any, count: int, row_shape: tuple[int, ...], dtype: np.dtype,
                  p: Path) -> None:
    """Read every image once (zlib and the zip CRC see every byte; floats must be finite)."""
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize)
    step = max(1, _CHECK_CHUNK_BYTES // row_bytes)
    i = 0
    while i < count:
        m = min(step, count - i)
        x = _read_rows(fh, m, row_shape, dtype)
        if dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise EvalDataError(f"{p.name}: images hold NaN or infinite values", hint=_HINT)
        i += m
    fh.read()  # to the end: the zip CRC is checked there


def _affine(p: Path, z: zipfile.ZipFile, names: set[str]) -> Affine:
    missing = [k for k in AFFINE_KEYS if k + ".npy" not in names]
    if missing:
        raise EvalDataError(f"{p.name} has pixels but no {', '.join(missing)}", hint=_HINT)
    got = {k: _small_array(z, k) for k in AFFINE_KEYS}
    for k, a in got.items():
        if a.dtype.kind != "f" or not np.all(np.isfinite(a)):
            raise EvalDataError(f"{p.name}: {k} is not finite float32", hint=_HINT)
    if got["pre_std"].size and np.any(got["pre_std"] == 0):
        raise EvalDataError(f"{p.name}: pre_std contains 0", hint=_DAMAGED_HINT)
    mean = got["pre_mean"].astype(np.float32) if got["pre_mean"].size else None
    std = got["pre_std"].astype(np.float32) if got["pre_std"].size else None
    return Affine(scale=float(got["pre_scale"]), offset=float(got["pre_offset"]), mean=mean,
                  std=std)


def open_eval_data(path: Union[str, os.PathLike]) -> EvalData:
    """The evaluation set in `path`, checked (read through once, kept: the labels only)."""
    p = Path(path)
    with _errors(p), zipfile.ZipFile(p) as z:
        names = set(z.namelist())
        member = "pixels" if "pixels.npy" in names else "images"
        missing = {member, "labels"} - {n[:-4] for n in names if n.endswith(".npy")}
        if missing:
            keys = sorted(n[:-4] for n in names if n.endswith(".npy"))
            raise EvalDataError(
                f"{p.name} has no {' and no '.join(sorted(missing))} array "
                f"(it has: {', '.join(keys) or 'nothing'})", hint=_HINT)
        labels = _small_array(z, "labels")
        affine = _affine(p, z, names) if member == "pixels" else None
        with z.open(member + ".npy") as fh:
            shape, fortran, dtype = _header(fh)
            _check_images(p, shape, fortran, dtype, member)
            _read_through(fh, shape[0], tuple(shape[1:]), dtype, p)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise EvalDataError(
            f"{p.name}: labels are {labels.dtype} of shape {list(labels.shape)}, "
            "not integers of shape (N,)", hint=_HINT)
    if labels.shape[0] != shape[0]:
        raise EvalDataError(f"{p.name}: {shape[0]} images but {labels.shape[0]} labels",
                            hint=_HINT)
    if shape[0] == 0:
        raise EvalDataError(f"{p.name} holds no images", hint=_HINT)
    if labels.size and int(labels.min()) < 0:
        raise EvalDataError(f"{p.name}: negative labels", hint=_HINT)
    return EvalData(p, member, int(shape[0]), tuple(int(d) for d in shape[1:]), dtype,
                    labels.astype(np.int64), affine)


def load_eval_data(path: Union[str, os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """(model-ready images uint8 or float32 (N, ...), labels int64 (N,)), all in memory:
    for host-side tools; the device's bench streams `open_eval_data` instead."""
    data = open_eval_data(path)
    with _errors(data.path):
        return data.all(), data.labels


def encode_eval_npz(images: np.ndarray, labels: np.ndarray,
                    affine: Optional[Affine] = None) -> bytes:
    """The eval.npz bytes (compressed): `images`, or uint8 `pixels` + `affine` (see above)."""
    if affine is not None and images.dtype != np.uint8:
        raise ValueError("an affine map is recorded only for uint8 pixels")
    arrays: dict[str, Any] = {"labels": labels}
    if affine is None:
        arrays["images"] = np.ascontiguousarray(images)
    else:
        arrays["pixels"] = np.ascontiguousarray(images)
        arrays.update(affine.arrays())
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
