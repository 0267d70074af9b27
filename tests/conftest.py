"""Shared fixtures: small real artifacts, trained and converted once per test session.

The models are trained on a few thousand MNIST images for one epoch so the suite
stays fast; they are real Keras models converted by the real TFLiteConverter.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet TensorFlow in tests; it is imported lazily by the library.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifacts dir (see docs/SCHEMA.md) with a small but real trained and quantized model."""
    from edgeq.host.quantize import quantize
    from edgeq.host.train import train

    out = tmp_path_factory.mktemp("artifacts")
    train(out, model_name="mnist-cnn", epochs=1, seed=0, train_limit=3000)
    quantize(out, calibration_size=100, seed=0, eval_limit=2000)
    return out
