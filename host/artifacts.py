"""The artifacts directory: the one owner of its file names, its manifest and their checks.

An artifacts directory is what `edgeq train` + `edgeq quantize` (or `edgeq run`) write and
what evaluate, deploy, bench-remote, sweep and report read:
    model.keras, train.json          the float baseline and its training record (optional)
    model_float32.tflite, model_int8.tflite
    eval.npz                         the evaluation set, preprocessed once on the host
    manifest.json                    sha256, size, input/output quantization of every file
    sweep.json                       `edgeq sweep`'s results (optional)
Every reader goes through `read_manifest` / `load_artifacts`, so a missing or damaged
directory gets the same one-line error everywhere (`ArtifactsError`).
Imports: standard library and edgeq.device (errors, fileutil, store); no numpy, no TensorFlow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import sha256_file
from edgeq.device.store import MODEL_KINDS

__all__ = [
    "MODEL_KINDS", "MANIFEST_FILE", "KERAS_FILE", "TRAIN_JSON", "EVAL_FILE", "SWEEP_FILE",
    "DEFAULT_ARTIFACTS_DIR", "ArtifactsError", "Artifacts", "model_file_name", "read_manifest",
    "load_artifacts", "default_artifacts_dir",
]

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST_FILE = "manifest.json"
KERAS_FILE = "model.keras"
TRAIN_JSON = "train.json"
EVAL_FILE = "eval.npz"
SWEEP_FILE = "sweep.json"
#: where `edgeq run` / `make demo` put the MNIST artifacts, and what commands default to
DEFAULT_ARTIFACTS_DIR = Path("runs/mnist")


class ArtifactsError(EdgeqError):
    """An artifacts directory that is missing, incomplete or does not match its manifest."""


def model_file_name(kind: str) -> str:
    """The file name quantize gives a model of `kind` ("float32" or "int8")."""
    return f"model_{kind}.tflite"


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Artifacts:
    """A checked artifacts directory: every file the manifest names is there, as hashed."""

    dir: Path
    manifest: dict[str, Any]
    models: dict[str, ModelFile]  # kind -> file, in MODEL_KINDS order
    eval_data: Optional[ModelFile]

    @property
    def model_name(self) -> str:
        return str(self.manifest.get("model_name") or "model")


def read_manifest(artifacts_dir: PathLike) -> dict[str, Any]:
    """DIR/manifest.json as a dict, with both model entries; ArtifactsError otherwise."""
    d = Path(artifacts_dir)
    if not d.is_dir():
        raise ArtifactsError(
            f"artifacts directory {d} does not exist",
            hint="run edgeq train and edgeq quantize (or edgeq run) first, "
            "or pass the right directory",
        )
    path = d / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for kind in MODEL_KINDS:
            if not isinstance(manifest["models"][kind], dict):
                raise TypeError(f"models.{kind} is not an object")
    except FileNotFoundError:
        raise ArtifactsError(
            f"{path} does not exist", hint="run edgeq quantize on this directory first"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactsError(
            f"{path} is unreadable ({type(exc).__name__}: {exc})",
            hint="run edgeq quantize again to rewrite it",
        ) from None
    return manifest


def _checked(path: Path, want: Any, what: str, verify: bool) -> ModelFile:
    if not path.is_file():
        raise ArtifactsError(f"{what} {path} is missing",
                             hint="run edgeq quantize again to write it")
    got = sha256_file(path) if verify else str(want or "")
    if verify and want and got != want:
        raise ArtifactsError(
            f"{what} {path} does not match {MANIFEST_FILE} (sha256 {got[:12]}, "
            f"manifest says {str(want)[:12]})",
            hint="run edgeq quantize again; the files changed after it ran",
        )
    return ModelFile(path, got, path.stat().st_size)


def load_artifacts(artifacts_dir: PathLike, *, verify: bool = True) -> Artifacts:
    """Read the manifest and check that every file it names is there (and, with `verify`,
    hashes to the sha256 it records)."""
    d = Path(artifacts_dir)
    manifest = read_manifest(d)
    models = {}
    for kind in MODEL_KINDS:
        entry = manifest["models"][kind]
        path = d / str(entry.get("file") or model_file_name(kind))
        models[kind] = _checked(path, entry.get("sha256"), f"the {kind} model", verify)
    eval_data = None
    ed = manifest.get("eval_data")
    if isinstance(ed, dict) and ed.get("file"):
        eval_data = _checked(d / str(ed["file"]), ed.get("sha256"), "the evaluation data", verify)
    return Artifacts(d, manifest, models, eval_data)


def default_artifacts_dir() -> Optional[Path]:
    """DEFAULT_ARTIFACTS_DIR when it holds a manifest (what `make demo` wrote), else None."""
    return DEFAULT_ARTIFACTS_DIR if (DEFAULT_ARTIFACTS_DIR / MANIFEST_FILE).is_file() else None
