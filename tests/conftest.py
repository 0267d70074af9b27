"""Shared fixtures: small real artifacts, trained and converted once per test session.

The models are trained on a few thousand MNIST images for one epoch so the suite
stays fast; they are real Keras models converted by the real TFLiteConverter.

The `slow` marker: `make test-fast` runs `pytest tests/unit -m "not slow"`, which must train
nothing, convert nothing and build no wheel. `pytest_collection_modifyitems` below marks slow
every test that uses a fixture in SLOW_FIXTURES (directly or through another fixture) and
every test listed in SLOW_TESTS (those that train, convert or build a wheel in their body).
As a guard, a test that is not marked slow and imports TensorFlow fails with a pointer here.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

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


#: fixtures that train a Keras model or run the TFLiteConverter (dev_models: tests/unit/conftest.py)
SLOW_FIXTURES = frozenset({"tiny_artifacts", "dev_models"})

#: tests that train, convert or build a wheel themselves ("path::name", parameters ignored)
SLOW_TESTS = frozenset({
    "tests/unit/test_cli_pipeline.py::test_train_cli_is_seeded",
    "tests/unit/test_train_quantize.py::test_user_keras_model_other_input_shape",
    "tests/unit/test_train_quantize.py::test_model_errors",
    "tests/unit/test_packaging.py::test_wheel_maps_the_rooms_under_edgeq",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `slow` what trains, converts or builds a wheel (see the module docstring)."""
    for item in items:
        node = item.nodeid.split("[", 1)[0]
        if node in SLOW_TESTS or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tests_import_no_tensorflow(request: pytest.FixtureRequest) -> Iterator[None]:
    """A unit test not marked slow that imports TensorFlow fails: it would slow make test-fast."""
    before = "tensorflow" in sys.modules
    yield
    if not before and "tensorflow" in sys.modules \
            and request.node.get_closest_marker("slow") is None \
            and Path(request.node.path).is_relative_to(REPO_ROOT / "tests" / "unit"):
        pytest.fail(f"{request.node.nodeid} imports TensorFlow but is not marked slow: add it "
                    "to SLOW_TESTS (or its fixture to SLOW_FIXTURES) in tests/conftest.py",
                    pytrace=False)
