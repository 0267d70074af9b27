"""Train the float32 baseline of a zoo model on MNIST, with fixed seeds, and record it.

`train(out_dir)` writes `out_dir/model.keras` and `out_dir/train.json`
(`"schema": "edgeq.train/1"`): model name, epochs, seed, training-set size, float32 top-1 on
all 10,000 test images, training time, per-epoch history and library versions.
Every file is written atomically with the edgeq.device.store helpers (temp file in the same
directory, fsync, os.replace).

Imports: standard library, numpy, edgeq.device, edgeq.models, edgeq.host.{artifacts,data};
TensorFlow and Keras only inside functions.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgeq.device import __version__ as edgeq_version
from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import utc_now
from edgeq.device.store import atomic_write_file, atomic_write_json
from edgeq.host.artifacts import KERAS_FILE, TRAIN_JSON
from edgeq.host.data import load_mnist
from edgeq.models import get_model_module

logger = logging.getLogger(__name__)

TRAIN_SCHEMA = "edgeq.train/1"
EVAL_BATCH_SIZE = 500

ProgressCallback = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]", Path]


class TrainError(EdgeqError):
    """Training could not run or its outputs could not be written."""


def library_versions() -> dict[str, str]:
    """Versions recorded in train.json and the manifest."""
    import keras
    import tensorflow as tf

    return {
        "edgeq": edgeq_version,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def set_determinism(seed: int) -> None:
    """Seed Python, numpy and TensorFlow and ask TensorFlow for deterministic kernels."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception as exc:  # pragma: no cover - older TF without it
        logger.debug("op determinism unavailable: %s", exc)


def as_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N,28,28) images -> float32 (N,28,28,1) raw pixels 0..255 (docs/SCHEMA.md)."""
    return images.astype(np.float32)[..., None]


# ---------------------------------------------------------------------------------------------
# training


def train(
    out_dir: PathLike,
    *,
    model_name: str = "mnist-cnn",
    epochs: Optional[int] = None,
    seed: int = 0,
    train_limit: Optional[int] = None,
    data_dir: Optional[PathLike] = None,
    progress: Optional[ProgressCallback] = None,
    batch_size: Optional[int] = None,
) -> dict[str, Any]:
    """Train `model_name` on MNIST and save model.keras + train.json in `out_dir`.

    `epochs` defaults to the model's DEFAULT_EPOCHS; `train_limit` uses only the first N
    training images (for fast tests). The float32 top-1 is always measured on all test images.
    `progress(done_batches, total_batches)` is called after every training batch.
    Returns the train.json record.
    """
    out = Path(out_dir)
    module = get_model_module(model_name)
    n_epochs = int(epochs if epochs is not None else module.DEFAULT_EPOCHS)
    if n_epochs < 1:
        raise TrainError(
            f"epochs must be at least 1, got {n_epochs}", hint="pass --epochs 1 or more"
        )
    if train_limit is not None and train_limit < 1:
        raise TrainError(
            f"train limit must be at least 1, got {train_limit}",
            hint="pass a positive --train-limit or leave it out",
        )
    bs: int = int(batch_size or getattr(module, "BATCH_SIZE", 64) or 64)  # type: ignore[arg-type]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainError(
            f"cannot create output directory {out}: {exc.strerror}",
            hint="choose a writable --out directory",
        ) from None

    x_train, y_train = load_mnist("train", data_dir, limit=train_limit)
    x_test, y_test = load_mnist("test", data_dir)

    import keras

    set_determinism(seed)
    model = module.build(seed)
    steps_per_epoch = -(-len(y_train) // bs)
    total_steps = steps_per_epoch * n_epochs
    callbacks: list[Any] = []
    if progress is not None:
        callbacks.append(_ProgressCallback(progress, steps_per_epoch, total_steps))
    lr_fn = getattr(module, "learning_rate", None)
    if lr_fn is not None:
        callbacks.append(
            keras.callbacks.LearningRateScheduler(lambda epoch, lr: float(lr_fn(epoch)))
        )

    logger.info(
        "training %s: %d images, %d epochs, batch %d, seed %d",
        model_name,
        len(y_train),
        n_epochs,
        bs,
        seed,
    )
    t0 = time.perf_counter()
    history = model.fit(
        as_model_input(x_train),
        y_train.astype(np.int64),
        batch_size=bs,
        epochs=n_epochs,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    train_time_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    probs = model.predict(as_model_input(x_test), batch_size=EVAL_BATCH_SIZE, verbose=0)
    eval_time_s = time.perf_counter() - t1
    predictions = np.argmax(probs, axis=1)
    correct = int(np.sum(predictions == y_test))
    top1 = correct / len(y_test)

    keras_path = out / KERAS_FILE
    _save_keras_atomic(model, keras_path)
    record: dict[str, Any] = {
        "schema": TRAIN_SCHEMA,
        "model_name": model_name,
        "description": getattr(module, "DESCRIPTION", ""),
        "keras_file": KERAS_FILE,
        "epochs": n_epochs,
        "batch_size": bs,
        "seed": seed,
        "train_count": len(y_train),
        "train_limit": train_limit,
        "float32_test_top1": top1,
        "float32_test_correct": correct,
        "test_count": len(y_test),
        "train_time_s": round(train_time_s, 3),
        "eval_time_s": round(eval_time_s, 3),
        "params": int(model.count_params()),
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "versions": library_versions(),
        "created_utc": utc_now(),
    }
    atomic_write_json(out / TRAIN_JSON, record, mode=None, sort_keys=False)
    logger.info(
        "trained %s in %.1f s: float32 top-1 %.4f on %d test images",
        model_name,
        train_time_s,
        top1,
        len(y_test),
    )
    return record


def _save_keras_atomic(model: Any, path: Path) -> None:
    # Keras insists on the .keras suffix, so the temp file is a hidden *.keras in the same dir.
    atomic_write_file(path, model.save, mode=None, suffix=".tmp.keras")


def _make_progress_callback_class() -> Any:
    import keras

    class _Progress(keras.callbacks.Callback):
        def __init__(self, fn: ProgressCallback, steps_per_epoch: int, total: int) -> None:
            super().__init__()
            self._fn = fn
            self._steps = steps_per_epoch
            self._total = total
            self._epoch = 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._epoch = epoch

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._fn(min(self._epoch * self._steps + batch + 1, self._total), self._total)

    return _Progress


def _ProgressCallback(fn: ProgressCallback, steps_per_epoch: int, total: int) -> Any:
    return _make_progress_callback_class()(fn, steps_per_epoch, total)
