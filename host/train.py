"""Train the float32 baseline of a zoo model, with fixed seeds, and record it.

`train(out_dir)` writes `out_dir/model.keras` and `out_dir/train.json`
(`"schema": "edgeq.train/1"`): model name, epochs, seed, training-set size, float32 top-1 on
the test images, training time, per-epoch history, library versions, and the data: MNIST by
default, or the user's `data` (an .npz or an image folder, edgeq.host.data.load_dataset)
fitted to the zoo model's input and mapped by `preprocessing` (edgeq.host.preprocess), with
`test_data` or else a seeded 20 % held out of `data` as the test set. quantize reads the
record back: a model trained on other data is quantized with that preprocessing and never
silently evaluated on MNIST.
Every file is written atomically with the edgeq.device.store helpers (temp file in the same
directory, fsync, os.replace).

Imports: standard library, numpy, edgeq.device, edgeq.models,
edgeq.host.{artifacts,data,preprocess};
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
from edgeq.host.preprocess import (
    ModelInput,
    PreparedData,
    Preprocessing,
    class_names_for,
    prepare_data,
)
from edgeq.models import get_model_module

logger = logging.getLogger(__name__)

TRAIN_SCHEMA = "edgeq.train/1"
EVAL_BATCH_SIZE = 500
HOLDOUT_FRACTION = 0.2

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
    data: Optional[PathLike] = None,
    test_data: Optional[PathLike] = None,
    preprocessing: Optional[Preprocessing] = None,
) -> dict[str, Any]:
    """Train `model_name` on MNIST (or `data`) and save model.keras + train.json in `out_dir`.

    `epochs` defaults to the model's DEFAULT_EPOCHS; `train_limit` uses only the first N
    training images (for fast tests). The float32 top-1 is always measured on all test images
    (`test_data`, else 20 % of `data` held out with `seed`, else the MNIST test set).
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
    pre = preprocessing or Preprocessing()
    model_in = ModelInput(tuple(getattr(module, "INPUT_SHAPE", (28, 28, 1))),
                          int(getattr(module, "NUM_CLASSES", 10)), f"zoo model {model_name}")
    train_set, test_set, test_source = _datasets(model_in, pre, data, test_data, data_dir,
                                                 train_limit, seed)
    x_train, y_train = _as_input(train_set, model_in), train_set.labels
    x_test, y_test = _as_input(test_set, model_in), test_set.labels
    assert y_train is not None and y_test is not None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainError(
            f"cannot create output directory {out}: {exc.strerror}",
            hint="choose a writable --out directory",
        ) from None

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
        x_train,
        y_train.astype(np.int64),
        batch_size=bs,
        epochs=n_epochs,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    train_time_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    probs = model.predict(x_test, batch_size=EVAL_BATCH_SIZE, verbose=0)
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
        "data": {"train_source": train_set.source, "test_source": test_source,
                 "resized": train_set.resized},
        "preprocessing": pre.to_dict(),
        "num_classes": model_in.num_classes,
        "class_names": class_names_for(train_set.data, model_in.num_classes),
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


def _datasets(model_in: ModelInput, pre: Preprocessing, data: Optional[PathLike],
              test_data: Optional[PathLike], data_dir: Optional[PathLike],
              train_limit: Optional[int], seed: int) -> tuple[PreparedData, PreparedData, str]:
    """(training set, test set, where the test set came from), checked and preprocessed."""
    train_set = prepare_data(data, model_in, pre, purpose="training", data_dir=data_dir)
    if test_data is not None or data is None:
        test_set = prepare_data(test_data, model_in, pre, purpose="test", data_dir=data_dir)
        return _head(train_set, train_limit), test_set, test_set.source
    n = len(train_set.images)
    if n < 2:
        raise TrainError(f"{data} holds {n} image; a test set cannot be held out of it",
                         hint="give more images, or a separate --test-data")
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(HOLDOUT_FRACTION * n)))
    test_set, rest = _take(train_set, np.sort(order[:k])), _take(train_set, np.sort(order[k:]))
    return (_head(rest, train_limit), test_set,
            f"{train_set.source} (held out {k} of {n}, seed {seed})")


def _take(p: PreparedData, idx: np.ndarray) -> PreparedData:
    labels = p.labels[idx] if p.labels is not None else None
    return PreparedData(p.images[idx], labels, p.data, p.resized)


def _head(p: PreparedData, limit: Optional[int]) -> PreparedData:
    return p if limit is None else _take(p, np.arange(min(limit, len(p.images))))


def _as_input(p: PreparedData, model_in: ModelInput) -> np.ndarray:
    return p.images.astype(np.float32).reshape((len(p.images), *model_in.sample_shape))


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
