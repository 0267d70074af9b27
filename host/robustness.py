"""Robustness under distribution shift: float32 and int8 variants on corrupted evaluation data.

`corrupt(images, corruption, severity, seed)` makes a corrupted copy of the evaluation images
(uint8 raw pixels or float32 model-ready values, (N, H, W) or (N, H, W, C)), deterministic
from `seed` (numpy's default_rng([seed, corruption index, severity])) with numpy and
scipy.ndimage. With r = the data's value range (max - min over the whole set) and severities
1..3:

| corruption       | what                                                  | severity 1, 2, 3    |
|------------------|-------------------------------------------------------|---------------------|
| `gaussian_noise` | x + N(0, (k r)^2) per pixel                           | k = 0.08, 0.16, 0.24 |
| `blur`           | Gaussian filter over H and W, sigma in pixels         | 0.7, 1.1, 1.6       |
| `rotation`       | rotate each image by +-a degrees (sign drawn per image)| a = 15, 30, 45     |
| `contrast`       | mean + c (x - mean), mean per image                   | c = 0.5, 0.3, 0.15  |
| `brightness`     | x + b r                                               | b = 0.2, 0.4, 0.6   |

Values are clipped to the clean data's [min, max] and cast back to its dtype (rounded for
integers). `robustness(DIR)` evaluates DIR's float32 and int8 models, and the int8 model of
each extra variant directory (e.g. the sweep's), with the host runner edgeq.host.evaluate uses
(edgeq.device.runtime's LoadedModel.predict_top_k + edgeq.device.bench.accuracy_section, the
files probed in a child process first), and saves DIR/robustness.json (temp-then-rename):

    {"schema": "edgeq.robustness/1", "created_utc", "artifacts_dir", "path", "seed", "count",
     "corruptions", "severities", "runtime",
     "models": [{"name", "kind", "dir", "file", "sha256", "method", "granularity",
                 "clean_top1", "top1": {corruption: {"1": top1, "2": ..., "3": ...}},
                 "mean_corrupted_top1",
                 "gap_points": {corruption: mean over severities of float32 - this, points}
                               (null for float32), "mean_gap_points", "clean_gap_points"}]}

Imports: standard library, numpy, scipy.ndimage (inside corrupt), edgeq.device,
edgeq.host.{artifacts,evaluate}; no TensorFlow.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from edgeq.device.errors import EdgeqError
from edgeq.device.fileutil import utc_now
from edgeq.device.store import atomic_write_json

ROBUSTNESS_SCHEMA = "edgeq.robustness/1"
ROBUSTNESS_FILE = "robustness.json"
CORRUPTIONS = ("gaussian_noise", "blur", "rotation", "contrast", "brightness")
SEVERITIES = (1, 2, 3)
_LEVELS = {
    "gaussian_noise": (0.08, 0.16, 0.24),
    "blur": (0.7, 1.1, 1.6),
    "rotation": (15.0, 30.0, 45.0),
    "contrast": (0.5, 0.3, 0.15),
    "brightness": (0.2, 0.4, 0.6),
}

ProgressCallback = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]", Path]


class RobustnessError(EdgeqError):
    """A corruption, severity or variant that cannot be evaluated."""


def parse_corruptions(text: str) -> tuple[str, ...]:
    """"blur,rotation" -> ("blur", "rotation"); RobustnessError for unknown names."""
    names = tuple(v.strip() for v in str(text).split(",") if v.strip())
    bad = [n for n in names if n not in CORRUPTIONS]
    if not names or bad:
        raise RobustnessError(f"unknown corruption {', '.join(bad) or repr(text)}",
                              hint=f"choose from {', '.join(CORRUPTIONS)}")
    return names


def corrupt(images: np.ndarray, corruption: str, severity: int, seed: int = 0) -> np.ndarray:
    """A corrupted copy of `images` (same shape and dtype); see the module docstring."""
    from scipy import ndimage

    if corruption not in _LEVELS:
        raise RobustnessError(f"unknown corruption {corruption!r}",
                              hint=f"choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise RobustnessError(f"severity must be one of {SEVERITIES}, got {severity}",
                              hint="pass severities 1, 2 or 3")
    x = np.asarray(images).astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    r = max(hi - lo, 1e-6)
    level = _LEVELS[corruption][severity - 1]
    rng = np.random.default_rng([int(seed), CORRUPTIONS.index(corruption), int(severity)])
    if corruption == "gaussian_noise":
        y = x + rng.normal(0.0, level * r, size=x.shape).astype(np.float32)
    elif corruption == "blur":
        sigma = [0.0] * x.ndim
        sigma[1] = sigma[2] = level
        y = ndimage.gaussian_filter(x, sigma=sigma, mode="constant", cval=lo)
    elif corruption == "rotation":
        signs = rng.choice([-1.0, 1.0], size=len(x))
        y = np.stack([ndimage.rotate(img, level * s, axes=(1, 0), reshape=False, order=1,
                                     mode="constant", cval=lo) for img, s in zip(x, signs)])
    elif corruption == "contrast":
        mean = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
        y = mean + level * (x - mean)
    else:  # brightness
        y = x + level * r
    y = np.clip(y, lo, hi)
    dt = np.asarray(images).dtype
    return (np.round(y) if dt.kind in "iu" else y).astype(dt)


def _variant_label(manifest: dict[str, Any]) -> tuple[str, str]:
    cal = manifest.get("calibration") or {}
    precision = manifest.get("precision") or {}
    method = str(cal.get("method") or "minmax")
    gran = "per-channel" if cal.get("per_channel", True) else "per-tensor"
    extra = ""
    if precision.get("float_fallback"):
        extra += f"+fallback{precision['float_fallback']}"
    if precision.get("activations") == "int16":
        extra += "+int16"
    return method + extra, gran


def robustness(
    artifacts_dir: PathLike,
    *,
    variants: Sequence[PathLike] = (),
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    limit: Optional[int] = None,
    threads: int = 1,
    progress: Optional[ProgressCallback] = None,
) -> dict[str, Any]:
    """Evaluate DIR's float32 and int8 (and each variant directory's int8) on every corrupted
    copy; save and return DIR/robustness.json (see the module docstring)."""
    from edgeq.device.bench import accuracy_section
    from edgeq.device.runtime import load_model
    from edgeq.host.artifacts import load_artifacts
    from edgeq.host.evaluate import HOST_BATCH_SIZE, evaluation_data, probe_models

    root = Path(artifacts_dir)
    corruptions = tuple(corruptions)
    parse_corruptions(",".join(corruptions))
    sevs = tuple(int(s) for s in severities)
    if not sevs or any(s not in SEVERITIES for s in sevs):
        raise RobustnessError(f"severities must be among {SEVERITIES}, got {list(sevs)}",
                              hint="e.g. --severities 1,2,3")
    art = load_artifacts(root)
    images, labels, _info = evaluation_data(art, limit=limit)
    entries: list[tuple[str, Any, Path]] = [("float32", art, root), ("int8", art, root)]
    for v in variants:
        entries.append(("int8", load_artifacts(v), Path(v)))
    probe_models([a.models[k].path for k, a, _ in entries],
                 data=art.eval_data.path if art.eval_data else None)
    sets = {(c, s): corrupt(images, c, s, seed) for c in corruptions for s in sevs}
    total, done = len(entries) * (1 + len(sets)), 0
    models: list[dict[str, Any]] = []
    runtime: dict[str, Any] = {}
    for kind, a, d in entries:
        mf = a.models[kind]
        model = load_model(mf.path, threads=threads, sha256=mf.sha256)
        runtime = {"name": model.runtime.name, "version": model.runtime.version}

        def top1(x: np.ndarray) -> float:
            top = model.predict_top_k(x, 1, batch_size=HOST_BATCH_SIZE)
            return float(accuracy_section(top, labels, model.num_classes)["top1"])

        clean = top1(images)
        done += 1
        table: dict[str, dict[str, float]] = {c: {} for c in corruptions}
        for (c, s), x in sets.items():
            table[c][str(s)] = top1(x)
            done += 1
            if progress:
                progress(done, total)
        method, gran = _variant_label(a.manifest)
        rel = "." if d.resolve() == root.resolve() else os.path.relpath(d, root)
        models.append({
            "name": "float32" if kind == "float32" else f"int8 {method} {gran}",
            "kind": kind, "dir": rel, "file": mf.path.name, "sha256": mf.sha256,
            "method": None if kind == "float32" else method,
            "granularity": None if kind == "float32" else gran,
            "clean_top1": clean, "top1": table,
            "mean_corrupted_top1": float(np.mean([v for t in table.values()
                                                   for v in t.values()])),
        })
    ref = models[0]
    for m in models:
        if m["kind"] == "float32":
            m.update(gap_points=None, mean_gap_points=None, clean_gap_points=None)
            continue
        gaps = {c: round(100.0 * float(np.mean([ref["top1"][c][s] - m["top1"][c][s]
                                                 for s in m["top1"][c]])), 4)
                for c in corruptions}
        m["gap_points"] = gaps
        m["mean_gap_points"] = round(float(np.mean(list(gaps.values()))), 4)
        m["clean_gap_points"] = round(100.0 * (ref["clean_top1"] - m["clean_top1"]), 4)
    path = root / ROBUSTNESS_FILE
    doc = {"schema": ROBUSTNESS_SCHEMA, "created_utc": utc_now(),
           "artifacts_dir": str(root.resolve()), "path": str(path), "seed": seed,
           "count": int(len(labels)), "corruptions": list(corruptions),
           "severities": list(sevs), "runtime": runtime, "models": models}
    atomic_write_json(path, doc, mode=None, sort_keys=False)
    return doc


def sweep_variant_dirs(artifacts_dir: PathLike) -> list[Path]:
    """The variant directories of DIR/sweep.json (none when there is no sweep)."""
    path = Path(artifacts_dir) / "sweep.json"
    if not path.is_file():
        raise RobustnessError(f"no sweep at {path}", hint="run edgeq sweep first, or drop --sweep")
    doc = json.loads(path.read_text(encoding="utf-8"))
    return [Path(artifacts_dir) / p["dir"] for p in doc.get("points") or []]


def load_robustness(artifacts_dir: PathLike) -> Optional[dict[str, Any]]:
    """DIR/robustness.json, or None when there is none."""
    path = Path(artifacts_dir) / ROBUSTNESS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RobustnessError(f"cannot read {path}: {exc}",
                              hint="run edgeq robustness again") from None
    if not isinstance(doc, dict) or doc.get("schema") != ROBUSTNESS_SCHEMA:
        raise RobustnessError(f"{path} is not an {ROBUSTNESS_SCHEMA} document",
                              hint="run edgeq robustness again")
    return doc
