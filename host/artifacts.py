"""The artifacts directory: the one owner of its file names, its manifest and their checks.

An artifacts directory is what `edgeq train` + `edgeq quantize` (or `edgeq run`) write and
what evaluate, deploy, bench-remote, sweep and report read:
    model.keras, train.json          the float baseline and its training record (optional)
    model_float32.tflite, model_int8.tflite
    eval.npz                         the evaluation set (`eval_file_bytes`, the one writer)
    manifest.json                    sha256, size, input/output quantization of every file
    sweep.json                       `edgeq sweep`'s results (optional)
Every reader goes through `read_manifest` / `load_artifacts`, so a missing or damaged
directory gets the same one-line error everywhere (`ArtifactsError`). The files a manifest
names must be plain names inside DIR (no `/`, no `..`, not absolute), so a crafted manifest
cannot make deploy read and upload a file from elsewhere. What the model takes and gives
(`Artifacts.preprocessing`, `.class_names`, `.num_classes`) is read here too, with the
defaults manifests written before those keys existed mean (raw pixels, classes "0", "1", ...).

The eval file (EVAL_FILE), compressed .npz, read by edgeq.device.evaldata (open_eval_data
streams it a batch at a time on the device; load_eval_data reads it whole on the host):
- `labels` (uint8 when the classes fit a byte, else int64) and either
- `images`: uint8 raw pixels when the preprocessing is the identity, or float32 model-ready
  values when the data itself is not uint8 (genuinely float data); or
- `pixels` (uint8, fitted to the model's input shape) with `pre_mean`, `pre_std`, `pre_scale`,
  `pre_offset` (float32) when uint8 data goes through the affine preprocessing: 4x smaller
  than the float32 values in memory and on disk, and mapped per batch on the device with the
  same float32 operations as the host's Preprocessing.apply (same values, same predictions).
Directories written before `pixels` existed (float32 `images`) stay readable as they are.
The manifest's `eval_data` (`eval_data_entry`) says which: `stored` is "images" or "pixels".
Imports: standard library and edgeq.device (errors, fileutil, store); numpy and
edgeq.device.evaldata inside eval_file_bytes only; no TensorFlow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import sha256_file
from edgeq.device.store import MODEL_KINDS, atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from edgeq.host.preprocess import PreparedData

__all__ = [
    "MODEL_KINDS", "MANIFEST_FILE", "KERAS_FILE", "TRAIN_JSON", "EVAL_FILE", "SWEEP_FILE",
    "DEFAULT_ARTIFACTS_DIR", "ArtifactsError", "Artifacts", "model_file_name", "read_manifest",
    "load_artifacts", "default_artifacts_dir", "DEFAULT_PREPROCESSING", "plain_file_name",
    "write_artifacts", "eval_file_bytes", "eval_data_entry",
]

PathLike = Union[str, "os.PathLike[str]"]

MANIFEST_FILE = "manifest.json"
KERAS_FILE = "model.keras"
TRAIN_JSON = "train.json"
EVAL_FILE = "eval.npz"
SWEEP_FILE = "sweep.json"
#: where `edgeq run` / `make demo` put the MNIST artifacts, and what commands default to
DEFAULT_ARTIFACTS_DIR = Path("runs/mnist")
#: the manifest's `preprocessing` for raw pixels (edgeq.host.preprocess.Preprocessing().to_dict())
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "formula": "(x - mean) / std * scale + offset", "scale": 1.0, "offset": 0.0,
    "mean": None, "std": None, "resize": "bilinear", "identity": True,
}


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

    @property
    def preprocessing(self) -> dict[str, Any]:
        """How eval.npz was made from raw pixels (raw pixels when the manifest predates it)."""
        pre = self.manifest.get("preprocessing")
        return dict(pre) if isinstance(pre, dict) else dict(DEFAULT_PREPROCESSING)

    @property
    def num_classes(self) -> int:
        """The classifier's outputs: `num_classes`, else the float32 output's last dimension."""
        n = self.manifest.get("num_classes")
        if isinstance(n, int) and n > 0:
            return n
        shape = (self.manifest["models"]["float32"].get("output") or {}).get("shape") or [0]
        return int(shape[-1])

    @property
    def class_names(self) -> list[str]:
        """One name per class, in label order ("0", "1", ... when the manifest names none)."""
        names = self.manifest.get("class_names")
        if isinstance(names, list) and all(isinstance(n, str) for n in names) and names:
            return list(names)
        return [str(i) for i in range(self.num_classes)]


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


def plain_file_name(name: Any, what: str, manifest_path: PathLike = MANIFEST_FILE) -> str:
    """`name` when it is a plain file name (no directory part, not '.' or '..'); else
    ArtifactsError naming the manifest and the offending value."""
    text = str(name) if isinstance(name, str) else ""
    if (not text or "/" in text or "\\" in text or "\0" in text or text in (".", "..")
            or Path(text).is_absolute() or Path(text).name != text):
        raise ArtifactsError(
            f"{manifest_path} names {what} {name!r}: not a plain file name in the directory",
            hint="the manifest was edited or crafted; run edgeq quantize (or import) again")
    return text


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
        name = plain_file_name(entry.get("file") or model_file_name(kind), f"the {kind} model",
                               d / MANIFEST_FILE)
        models[kind] = _checked(d / name, entry.get("sha256"), f"the {kind} model", verify)
    eval_data = None
    ed = manifest.get("eval_data")
    if isinstance(ed, dict) and ed.get("file"):
        name = plain_file_name(ed["file"], "the evaluation data", d / MANIFEST_FILE)
        eval_data = _checked(d / name, ed.get("sha256"), "the evaluation data", verify)
    return Artifacts(d, manifest, models, eval_data)


def default_artifacts_dir() -> Optional[Path]:
    """DEFAULT_ARTIFACTS_DIR when it holds a manifest (what `make demo` wrote), else None."""
    return DEFAULT_ARTIFACTS_DIR if (DEFAULT_ARTIFACTS_DIR / MANIFEST_FILE).is_file() else None


def write_artifacts(artifacts_dir: PathLike, files: dict[str, bytes],
                    manifest: dict[str, Any]) -> None:
    """Write `files` (plain name -> bytes), then manifest.json, into `artifacts_dir`.

    Callers check everything before calling, so a refused run writes nothing. Each file is
    written atomically (temp file in the same directory, fsync, rename) and the manifest last:
    a reader sees the old directory or the new one, never a manifest naming files not in place
    (a crash in between leaves files the old manifest's hashes reject).
    """
    d = Path(artifacts_dir)
    names = {name: plain_file_name(name, "a file") for name in files}
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactsError(f"cannot create the artifacts directory {d}: {exc.strerror}",
                             hint="choose a writable directory") from None
    for name, data in files.items():
        atomic_write_bytes(d / names[name], data, mode=None)
    atomic_write_json(d / MANIFEST_FILE, manifest, mode=None, sort_keys=False)


def eval_file_bytes(evalset: "PreparedData", num_classes: int) -> bytes:
    """The EVAL_FILE bytes for a prepared evaluation set (the contract in the module
    docstring): uint8 `pixels` + the affine map when `evalset.pixels` is set, else `images`
    exactly as the float32 model takes them; `labels` uint8 when the classes fit a byte."""
    import numpy as np
    from edgeq.device.evaldata import Affine, encode_eval_npz

    labels = evalset.labels if evalset.labels is not None else np.zeros(0, np.int64)
    labels = labels.astype(np.uint8 if num_classes <= 256 else np.int64)
    pre = evalset.pre
    if evalset.pixels is None or pre is None:
        return encode_eval_npz(evalset.images, labels)
    affine = Affine(scale=pre.scale, offset=pre.offset,
                    mean=None if pre.mean is None else np.asarray(pre.mean, np.float32),
                    std=None if pre.std is None else np.asarray(pre.std, np.float32))
    return encode_eval_npz(evalset.pixels, labels, affine)


def eval_data_entry(evalset: "PreparedData", eval_bytes: bytes) -> dict[str, Any]:
    """The manifest's `eval_data` (docs/SCHEMA.md): `dtype`/`shape` of what the model takes,
    `stored` ("images" or "pixels": uint8 + the affine map, applied on the device)."""
    from edgeq.device.fileutil import sha256_bytes

    return {
        "file": EVAL_FILE,
        "sha256": sha256_bytes(eval_bytes),
        "size_bytes": len(eval_bytes),
        "count": len(evalset.images),
        "source": evalset.source,
        "dtype": str(evalset.images.dtype),
        "shape": [int(d) for d in evalset.images.shape[1:]],
        "stored": "pixels" if evalset.pixels is not None else "images",
        "resized": evalset.resized,
    }
