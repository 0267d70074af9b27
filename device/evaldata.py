"""Evaluation sets on the device: an .npz with `images` (uint8) and `labels` (integers).

The file is read with allow_pickle=False, so a hostile .npz cannot run code.
Imports: standard library, numpy, edgeq.device.errors.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Union

import numpy as np
from edgeq.device.errors import EvalDataError

_HINT = "pass the eval.npz written by edgeq quantize (images uint8 (N,28,28), labels (N,))"


def load_eval_data(path: Union[str, os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,H,W[,C]), labels int64 (N,)) from an .npz file, checked."""
    p = Path(path)
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
            images = npz["images"]
            labels = npz["labels"]
    except FileNotFoundError:
        raise EvalDataError(f"evaluation data {p} does not exist",
                            hint="check the path, or deploy the artifacts again") from None
    except IsADirectoryError:
        raise EvalDataError(f"evaluation data path {p} is a directory",
                            hint="pass the .npz file itself") from None
    except EvalDataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise EvalDataError(
            f"{p.name} is not a readable .npz file ({' '.join(str(exc).split())[:200]})",
            hint=_HINT,
        ) from None
    if images.dtype != np.uint8:
        raise EvalDataError(f"{p.name}: images are {images.dtype}, not uint8", hint=_HINT)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 1):
        raise EvalDataError(
            f"{p.name}: images have shape {list(images.shape)}, not (N,H,W) or (N,H,W,1)",
            hint=_HINT,
        )
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
