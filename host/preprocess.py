"""From a data set's raw pixels to exactly what a model's input takes, once, on the host.

Two steps, both recorded in the manifest (`preprocessing`) so the device never repeats them:
1. fit: images are brought to the model's per-sample input shape. Data whose shape equals the
   model's once size-1 axes are ignored is kept as it is (MNIST's (N, 28, 28) for a
   (28, 28, 1) model; the runtime adds the axis). Otherwise, for an image model (H, W) or
   (H, W, 1|3), grayscale <-> RGB is converted (RGB -> gray with ITU-R 601 luma, as Pillow's
   "L"; RGBA drops alpha) and each image is resized with Pillow (bilinear). Anything else is
   refused with both shapes in the message.
2. map: `y = (x - mean) / std * scale + offset` (mean/std per channel or one value; default
   mean 0, std 1, scale 1, offset 0: raw pixels, the default, as MNIST's model rescales inside).
The result is uint8 when nothing changed the values of uint8 pixels, else float32; the
runtime adapter quantizes it with the int8 model's own input scale and zero point. For the
evaluation set, uint8 pixels that step 2 maps are kept too (`PreparedData.pixels`): eval.npz
stores them with the map (edgeq.host.artifacts.eval_file_bytes), and the device applies it per
batch, with the same float32 operations as `Preprocessing.apply`.

`ModelInput` describes what a classifier takes and gives (shape, classes) and `check_labels`
refuses labels or class names that do not fit it, with the numbers in the message.
Imports: standard library, numpy, edgeq.host.data (DataError); Pillow inside functions.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from edgeq.host.data import DataError, Dataset

__all__ = [
    "FORMULA", "Preprocessing", "ModelInput", "DataFitError", "parse_floats", "fit_images",
    "fit_for_map", "map_values", "prepare_images", "check_labels", "is_image_shape",
]

logger = logging.getLogger(__name__)

FORMULA = "(x - mean) / std * scale + offset"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class DataFitError(DataError):
    """Data that does not fit the model (shape, dtype, labels, classes)."""


def parse_floats(text: Optional[str], what: str) -> Optional[tuple[float, ...]]:
    """'0.5' or '123.7,116.3,103.5' -> floats; None stays None; DataFitError otherwise."""
    if text is None or str(text).strip() == "":
        return None
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise DataFitError(f"{what} {text!r} is not a number or a comma-separated list",
                           hint=f"e.g. {what} 127.5 or {what} 123.7,116.3,103.5") from None
    if not all(math.isfinite(v) for v in values):
        raise DataFitError(f"{what} {text!r} is not finite", hint="pass finite numbers")
    return values


@dataclass(frozen=True)
class Preprocessing:
    """The map from raw pixels to model input: y = (x - mean) / std * scale + offset."""

    scale: float = 1.0
    offset: float = 0.0
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        for name in ("scale", "offset"):
            if not math.isfinite(float(getattr(self, name))):
                raise DataFitError(f"--input-{name} {getattr(self, name)} is not finite",
                                   hint="pass a finite number")
        if self.scale == 0:
            raise DataFitError("--input-scale 0 maps every pixel to the same value",
                               hint="pass a non-zero scale, e.g. 0.00392 (1/255)")
        if self.std is not None and any(s == 0 for s in self.std):
            raise DataFitError(f"--input-std {','.join(map(str, self.std))} contains 0",
                               hint="every standard deviation must be non-zero")

    @property
    def identity(self) -> bool:
        """True when the values are left as they are (raw pixels)."""
        return (self.scale == 1.0 and self.offset == 0.0 and self.mean is None
                and self.std is None)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's `preprocessing` (docs/SCHEMA.md)."""
        return {"formula": FORMULA, "scale": float(self.scale), "offset": float(self.offset),
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None,
                "resize": self.resize, "identity": self.identity}

    @classmethod
    def from_options(cls, scale: float = 1.0, offset: float = 0.0, mean: Optional[str] = None,
                     std: Optional[str] = None) -> "Preprocessing":
        """From the CLI's --input-scale/--input-offset/--input-mean/--input-std."""
        return cls(scale=float(scale), offset=float(offset),
                   mean=parse_floats(mean, "--input-mean"), std=parse_floats(std, "--input-std"))

    @classmethod
    def from_dict(cls, d: Optional[dict[str, Any]]) -> "Preprocessing":
        """Back from `to_dict` (None or {}: raw pixels, what manifests before it meant)."""
        d = d or {}
        return cls(scale=float(d.get("scale", 1.0)), offset=float(d.get("offset", 0.0)),
                   mean=tuple(d["mean"]) if d.get("mean") is not None else None,
                   std=tuple(d["std"]) if d.get("std") is not None else None,
                   resize=str(d.get("resize") or "bilinear"))

    def check_channels(self, channels: int) -> None:
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v is not None and len(v) not in (1, channels):
                raise DataFitError(
                    f"--input-{name} has {len(v)} values, the model input has {channels} "
                    "channel(s)", hint=f"give one value or {channels} comma-separated values")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float32 values mapped by the formula; channels are the last axis."""
        y = x.astype(np.float32)
        if self.mean is not None:
            y = y - np.asarray(self.mean, np.float32)
        if self.std is not None:
            y = y / np.asarray(self.std, np.float32)
        if self.scale != 1.0:
            y = y * np.float32(self.scale)
        if self.offset != 0.0:
            y = y + np.float32(self.offset)
        return y


@dataclass(frozen=True)
class ModelInput:
    """A single-input classifier's per-sample input shape and its number of classes."""

    sample_shape: tuple[int, ...]
    num_classes: int
    name: str = "the model"

    @property
    def image_size(self) -> Optional[tuple[int, int, int]]:
        """(H, W, C) when the input is an image (H, W) or (H, W, 1|3), else None."""
        return _image_hwc(self.sample_shape)

    @property
    def channels(self) -> int:
        size = self.image_size
        return size[2] if size else 1


def is_image_shape(sample_shape: Sequence[int]) -> bool:
    return _image_hwc(tuple(sample_shape)) is not None


def _image_hwc(shape: tuple[int, ...]) -> Optional[tuple[int, int, int]]:
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    if len(shape) == 3 and shape[2] in (1, 3):
        return (shape[0], shape[1], shape[2])
    return None


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if d != 1)


def _check_numeric(images: np.ndarray, what: str) -> None:
    if images.dtype.kind not in "iuf" or images.ndim < 2 or len(images) == 0:
        raise DataFitError(
            f"{what} holds {images.dtype} of shape {list(images.shape)}, not a batch of images",
            hint="images must be a numeric array (N, H, W) or (N, H, W, C) with N >= 1")
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise DataFitError(f"{what} holds NaN or infinite values", hint="clean the data")


def fit_images(images: np.ndarray, model: ModelInput, what: str
               ) -> tuple[np.ndarray, Optional[dict[str, Any]]]:
    """Images in the model's per-sample shape, and a note of the resize (None: none done)."""
    _check_numeric(images, what)
    sample = tuple(int(d) for d in images.shape[1:])
    if sample == model.sample_shape or _squeezed(sample) == _squeezed(model.sample_shape):
        return images, None
    target = model.image_size
    src = _image_hwc(sample) if not (len(sample) == 3 and sample[2] == 4) else sample
    if target is None or src is None:
        raise DataFitError(
            f"{what} has samples of shape {list(sample)}, {model.name} expects "
            f"{list(model.sample_shape)}",
            hint="give data of shape (N, " + ", ".join(map(str, model.sample_shape)) + ")"
            + ("" if target is None else " or images edgeq can resize (N, H, W[, 1|3])"))
    h, w, c = target
    x = images if images.ndim == 4 else images[..., None]
    x = _convert_channels(x, c)
    out = np.stack([_resize(img, h, w) for img in x])
    if len(model.sample_shape) == 2:
        out = out[..., 0]
    return out, {"from": list(sample), "to": list(model.sample_shape), "method": "bilinear"}


def _convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) with C in 1, 3, 4 -> (N, H, W, channels); uint8 stays uint8."""
    c = x.shape[-1]
    if c == 4:
        x, c = x[..., :3], 3
    if c == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-1)
    gray = x.astype(np.float32) @ _LUMA
    if x.dtype == np.uint8:
        return np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]
    return gray[..., None]


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """One (H, W, C) image resized with Pillow, bilinear (uint8 stays uint8)."""
    if img.shape[:2] == (h, w):
        return img
    from PIL import Image

    if img.dtype == np.uint8:
        mode_img = img[..., 0] if img.shape[-1] == 1 else img
        out = np.asarray(Image.fromarray(mode_img).resize((w, h), Image.BILINEAR))
        return out[..., None] if out.ndim == 2 else out
    chans = [np.asarray(Image.fromarray(img[..., k].astype(np.float32), mode="F")
                        .resize((w, h), Image.BILINEAR)) for k in range(img.shape[-1])]
    return np.stack(chans, axis=-1).astype(np.float32)


def fit_for_map(images: np.ndarray, model: ModelInput, pre: Preprocessing, what: str
                ) -> tuple[np.ndarray, Optional[dict[str, Any]]]:
    """fit_images, shaped as the value map takes it (the model's sample shape when the map
    has one value per channel); the values are untouched (uint8 stays uint8)."""
    pre.check_channels(model.channels)
    x, resized = fit_images(images, model, what)
    if not pre.identity and ((pre.mean is not None and len(pre.mean) > 1)
                             or (pre.std is not None and len(pre.std) > 1)):
        if x.shape[1:] != model.sample_shape:
            x = x.reshape((len(x), *model.sample_shape))
    return x, resized


def map_values(x: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """The value map on fitted images: uint8 stays uint8 only when `pre` is the identity."""
    if pre.identity:
        return x if x.dtype == np.uint8 else x.astype(np.float32)
    return pre.apply(x)


def prepare_images(images: np.ndarray, model: ModelInput, pre: Preprocessing, what: str
                   ) -> tuple[np.ndarray, Optional[dict[str, Any]]]:
    """fit_images, then the value map: uint8 stays uint8 only when `pre` is the identity."""
    x, resized = fit_for_map(images, model, pre, what)
    return map_values(x, pre), resized


def check_labels(data: Dataset, model: ModelInput, what: str) -> None:
    """Labels in 0..num_classes-1 and no more class names than classes; DataFitError else."""
    if data.class_names is not None and len(data.class_names) > model.num_classes:
        names = ", ".join(data.class_names[:6]) + (", ..." if len(data.class_names) > 6 else "")
        raise DataFitError(
            f"{what} names {len(data.class_names)} classes ({names}), but {model.name} "
            f"outputs {model.num_classes}",
            hint="one sub-folder (or class name) per model output, in the model's order")
    if data.labels is not None and data.labels.size:
        top = int(data.labels.max())
        if top >= model.num_classes:
            raise DataFitError(
                f"{what} has label {top}, but {model.name} outputs {model.num_classes} classes "
                f"(labels 0..{model.num_classes - 1})",
                hint="use data labelled for this model, or the model trained on these labels")


def class_names_for(data: Optional[Dataset], num_classes: int) -> list[str]:
    """The data's class names, padded with the class index for outputs it does not name."""
    names = list(data.class_names) if data is not None and data.class_names else []
    return names + [str(i) for i in range(len(names), num_classes)]


# ---------------------------------------------------------------------------------------------
# the two data sets quantize and import take: calibration and evaluation


@dataclass(frozen=True)
class PreparedData:
    """Data made ready for one model: `images` exactly as its input takes them (see the module
    docstring), labels (None for calibration data without them) and where they came from."""

    images: np.ndarray
    labels: Optional[np.ndarray]
    data: Dataset
    resized: Optional[dict[str, Any]]
    #: evaluation only: the uint8 pixels `images` were mapped from by `pre` (None when the map
    #: is the identity or the data is not uint8)
    pixels: Optional[np.ndarray] = None
    pre: Optional[Preprocessing] = None

    @property
    def source(self) -> str:
        return self.data.source


def _fits_mnist(model: ModelInput) -> bool:
    return _squeezed(model.sample_shape) == (28, 28)


#: purpose -> (MNIST split, the option that names the data, what it is called, labels needed)
PURPOSES = {
    "calibration": ("train", "--calibration-data", "calibration data", False),
    "evaluation": ("test", "--eval-data", "evaluation data", True),
    "training": ("train", "--data", "training data", True),
    "test": ("test", "--test-data", "test data", True),
}


def prepare_data(
    where: Optional[Any],
    model: ModelInput,
    pre: Preprocessing,
    *,
    purpose: str,
    data_dir: Optional[Any] = None,
    limit: Optional[int] = None,
    sample_size: Optional[int] = None,
    seed: int = 0,
) -> PreparedData:
    """Load `where` (None: the built-in MNIST) for `purpose` (a key of PURPOSES), check it
    against `model` and preprocess it. The built-in MNIST is used only when the model takes
    28x28 images with one channel (and, when labels count, gives 10 classes); otherwise the
    error asks for the option that names the data (--calibration-data, --eval-data, ...).

    `limit` keeps the first N samples; `sample_size` draws N without replacement with numpy's
    default_rng(seed) (all of them, sorted, when there are fewer), before preprocessing."""
    from edgeq.host.data import NUM_CLASSES, load_dataset

    split, flag, what, labelled = PURPOSES[purpose]
    if where is None and (not _fits_mnist(model)
                          or (labelled and model.num_classes != NUM_CLASSES)):
        raise DataFitError(
            f"{model.name} takes {list(model.sample_shape)} and gives {model.num_classes} "
            f"classes; the built-in MNIST ({what} by default: [28, 28], 10 classes) does not "
            "fit it", hint=f"pass {flag} with your own data (an .npz or an image folder)")
    data = load_dataset(where, split=split, labels_required=labelled, data_dir=data_dir,
                        limit=None if sample_size is not None else limit,
                        image_size=model.image_size, what=what)
    label = f"MNIST {split} images" if where is None else str(where)
    if labelled:
        check_labels(data, model, label)
    if sample_size is not None:
        n = min(sample_size, len(data))
        if n < sample_size:
            logger.warning("%s has %d samples, fewer than the %d asked for; using all",
                           label, n, sample_size)
        idx = np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False))
        data = Dataset(data.images[idx], data.labels[idx] if data.labels is not None else None,
                       data.class_names, data.source, data.path, data.resized)
    fitted, resized = fit_for_map(data.images, model, pre, label)
    images = map_values(fitted, pre)
    keep = purpose == "evaluation" and fitted.dtype == np.uint8 and not pre.identity
    return PreparedData(images, data.labels if labelled else None, data,
                        resized or data.resized, fitted if keep else None, pre if keep else None)
