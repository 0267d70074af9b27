"""Evaluation sets on the device: an .npz with `images` and `labels` (integers).

`images` are what the model's input takes, prepared once on the host: uint8 raw pixels
(MNIST, or any data whose preprocessing is the identity) or float32 model-ready values,
shaped (N, H, W) or (N, H, W, C) (C = 1 or 3 for images; any trailing shape for tensors).
The runtime adapter quantizes them with the int8 model's own input scale and zero point.
The file is read with allow_pickle=False, so a hostile .npz cannot run code; a truncated or
damaged file is an EvalDataError, whatever numpy or zipfile raised while reading it.
Imports: standard library, numpy, edgeq.device.errors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from edgeq.device.errors import EvalDataError

__all__ = ["IMAGE_DTYPES", "load_eval_data"]

#: the element types an evaluation set's images may have
IMAGE_DTYPES = frozenset({"uint8", "float32"})

_HINT = ("pass the eval.npz written by edgeq quantize or edgeq import (images uint8 or float32 "
         "(N, H, W[, C]), labels integers (N,))")
_DAMAGED_HINT = "the file is truncated or damaged; run edgeq quantize (or import) and deploy again"


def _read(p: Path) -> tuple[np.ndarray, np.ndarray]:
    """The two arrays of the .npz, fully read (so a damaged member fails here)."""
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = {"images", "labels"} - keys
            if missing:
                raise EvalDataError(
                    f"{p.name} has no {' and no '.join(sorted(missing))} array "
                    f"(it has: {', '.join(sorted(keys)) or 'nothing'})",
                    hint=_HINT,
                )
            return npz["images"], npz["labels"]
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


def load_eval_data(path: Union[str, os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 or float32 (N, ...), labels int64 (N,)) from an .npz file, checked."""
    p = Path(path)
    images, labels = _read(p)
    if images.dtype.name not in IMAGE_DTYPES:
        raise EvalDataError(
            f"{p.name}: images are {images.dtype}, not {' or '.join(sorted(IMAGE_DTYPES))}",
            hint=_HINT)
    if images.ndim < 2:
        raise EvalDataError(
            f"{p.name}: images have shape {list(images.shape)}, not (N, H, W) or (N, H, W, C)",
            hint=_HINT,
        )
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise EvalDataError(f"{p.name}: images hold NaN or infinite values", hint=_HINT)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise EvalDataError(
            f"{p.name}: labels are {labels.dtype} of shape {list(labels.shape)}, "
            "not integers of shape (N,)",
            hint=_HINT,
        )
    if labels.shape[0] != images.shape[0]:
        raise EvalDataError(
            f"{p.name}: {images.shape[0]} images but {labels.shape[0]} labels",
            hint=_HINT,
        )
    if images.shape[0] == 0:
        raise EvalDataError(f"{p.name} holds no images", hint=_HINT)
    if labels.size and int(labels.min()) < 0:
        raise EvalDataError(f"{p.name}: negative labels", hint=_HINT)
    return images, labels.astype(np.int64)
