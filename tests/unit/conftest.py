"""Fixtures shared by the unit tests of edgeq.device (runtime, bench, isolation)."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_device_runtime import device_model_paths


@pytest.fixture(scope="session")
def dev_models(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real models (see test_device_runtime.device_model_paths).

    It trains and converts (through tiny_artifacts, or its own tiny net), so tests/conftest.py
    marks every test that uses it `slow`: make test-fast leaves them out."""
    return device_model_paths(request, tmp_path_factory)
