"""edgeq.models: the model zoo (one module per model) and the MNIST data it ships with.

A model module defines NAME (the name users pass as `--model`), DESCRIPTION,
DEFAULT_EPOCHS and `build(seed: int) -> keras.Model`. Adding a model is adding a
file and one line to _MODULES. Keras is imported only inside `build`.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from edgeq.device.errors import EdgeqError

MNIST_DATA_DIR = Path(__file__).resolve().parent / "mnist" / "data"

# model name -> module (relative to this package)
_MODULES: dict[str, str] = {
    "mnist-cnn": ".mnist_cnn",
    "mnist-skip-dsconv": ".mnist_skip_dsconv",
}


class UnknownModelError(EdgeqError):
    """A model name that is not in the zoo."""


def available_models() -> list[str]:
    """Names users can pass as `--model`."""
    return sorted(_MODULES)


def get_model_module(name: str) -> ModuleType:
    """The zoo module for `name`, or a clear error listing the known names."""
    try:
        module_name = _MODULES[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}",
            hint=f"choose one of: {', '.join(available_models())}",
        ) from None
    return importlib.import_module(module_name, __name__)
