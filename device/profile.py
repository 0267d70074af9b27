"""Per-layer timing on the device: many small models timed interleaved, in one process.

The LiteRT Python interpreter has no op profiler, so the host (edgeq.host.profile) cuts small
models from the .tflite under test (prefix models: its first k+1 ops; single-op models; a
zero-op model that only measures the harness) and pushes them, named by content, to
`Layout.profiles_dir` (edgeq.device.store) on the device. This module times them; the host
turns the times into per-layer figures.

A plan (`edgeq.profile_plan/1`, JSON; `read_plan` checks it) names the models and the timing:
    {"schema": "edgeq.profile_plan/1", "models": [{"sha256": str, "path": str}, ...],
     "warmup_runs_min": int, "runs_min": int, "rounds": int, "seed": int}
The daemon writes one from a validated `profile` request (edgeq.device.protocol) and runs it
in a worker process under its measurement lock, like bench; the one-shot path runs the plan
file the host pushed (`python -m edgeq.device profile PLAN.json --json`).

`run_profile(plan, settings)`, the method:
1. every model is loaded and allocated first (edgeq.device.runtime.open_model with the
   request's threads / XNNPACK / runtime); how many of its nodes the delegate took is read
   from the interpreter's node list after delegation (runtime.count_delegated_nodes);
2. each model gets one input, seeded random values of its input's own dtype and shape
   (floats uniform in [0, 1), integers uniform over the dtype's range): timing does not
   depend on the values for these kernels, and a prefix or single-op model has no
   evaluation data of its own;
3. warm-up: `warmup_runs_min` untimed runs per model;
4. `rounds` rounds; each visits every model once in an order shuffled by
   random.Random(seed * 1_000_003 + round) and runs 2 untimed runs (caches refilled after the
   previous model), then ceil(runs_min / rounds) timed set_tensor/invoke/get_tensor runs
   (edgeq.device.bench.timed_loop, the loop bench times): a drift in clock or temperature
   hits every model alike;
5. per model: the median of all its timed runs (`latency_ms_p50`) and of each round
   (`latency_ms_round_p50`, the spread the host reports as noise).
Memory: all models stay loaded at once (XNNPACK packs each one's weights); the host's cut
models keep only the weights their ops use, so a prefix of k ops holds k ops' weights.
Imports: standard library and edgeq.device (errors, fileutil, settings, protocol's limits)
at import time (the daemon imports this module
for `profile_dir`/`write_plan` and stays free of numpy); numpy and the runtime inside
`run_profile`.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import time
from pathlib import Path
from typing import Any, Optional, Union

from edgeq.device import __version__
from edgeq.device.errors import UsageError
from edgeq.device.fileutil import utc_now
from edgeq.device.protocol import MAX_PROFILE_MODELS, MAX_PROFILE_ROUNDS
from edgeq.device.settings import BenchSettings
from edgeq.device.store import Layout

PLAN_SCHEMA = "edgeq.profile_plan/1"
RESULT_SCHEMA = "edgeq.profile_run/1"
#: the directory of the store that holds cut models and plans (content-named, disposable)
#: untimed runs at the start of each model's turn in a round
RETOUCH_RUNS = 2
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def profile_dir(home: str) -> str:
    """The profile directory of the device store whose (absolute, POSIX) home is `home`
    (edgeq.device.store.Layout, the store layout's one owner)."""
    return Layout(home).profiles_dir


def profile_model_path(home: str, sha256: str) -> str:
    """Where a cut model named by its sha256 lives on the device."""
    return Layout(home).profile_model(sha256)


def _bad_plan(what: str) -> UsageError:
    return UsageError(f"the profile plan is invalid: {what}",
                      hint="run edgeq profile from the host again (it writes the plan)")


def _int_in(plan: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = plan.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad_plan(f"{key} must be an integer in [{lo}, {hi}], not {v!r}")
    return v


def check_plan(plan: Any) -> dict[str, Any]:
    """`plan` checked field by field (UsageError on anything off); returns it."""
    if not isinstance(plan, dict) or plan.get("schema") != PLAN_SCHEMA:
        raise _bad_plan(f"not an {PLAN_SCHEMA} document")
    unknown = set(plan) - {"schema", "models", "warmup_runs_min", "runs_min", "rounds", "seed"}
    if unknown:
        raise _bad_plan(f"unknown key(s) {', '.join(sorted(unknown))}")
    models = plan.get("models")
    if not isinstance(models, list) or not 1 <= len(models) <= MAX_PROFILE_MODELS:
        raise _bad_plan(f"models must be a list of 1..{MAX_PROFILE_MODELS} entries")
    for m in models:
        if not isinstance(m, dict) or set(m) != {"sha256", "path"} \
                or not isinstance(m["sha256"], str) or not _SHA256_RE.match(m["sha256"]) \
                or not isinstance(m["path"], str) or not m["path"]:
            raise _bad_plan("each model must be {\"sha256\": 64-hex, \"path\": str}")
    _int_in(plan, "warmup_runs_min", 0, 100_000)
    _int_in(plan, "runs_min", 1, 1_000_000)
    _int_in(plan, "rounds", 1, MAX_PROFILE_ROUNDS)
    _int_in(plan, "seed", 0, 2**31 - 1)
    return plan


def make_plan(models: list[tuple[str, str]], *, warmup_runs_min: int, runs_min: int,
              rounds: int, seed: int) -> dict[str, Any]:
    """A checked plan for (sha256, path) models."""
    return check_plan({"schema": PLAN_SCHEMA,
                       "models": [{"sha256": sha, "path": path} for sha, path in models],
                       "warmup_runs_min": warmup_runs_min, "runs_min": runs_min,
                       "rounds": rounds, "seed": seed})


def read_plan(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """The checked plan in the JSON file `path`."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"profile plan {path} does not exist",
                         hint="run edgeq profile from the host (it pushes the plan)") from None
    except (OSError, ValueError) as exc:
        raise _bad_plan(f"{path} is not readable JSON ({exc})") from None
    return check_plan(doc)


def round_order(n_models: int, seed: int, round_index: int) -> list[int]:
    """The order (model positions) of one round: shuffled, reproducible from seed and round."""
    order = list(range(n_models))
    random.Random(seed * 1_000_003 + round_index).shuffle(order)
    return order


def _random_input(model: Any, rng: Any) -> Any:
    import numpy as np

    detail = model.interpreter.get_input_details()[0]
    shape = tuple(int(d) if int(d) > 0 else 1 for d in detail["shape"])
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.random(size=shape).astype(dtype)


def run_profile(plan: dict[str, Any], settings: Optional[BenchSettings] = None
                ) -> dict[str, Any]:
    """Time every model of `plan` interleaved (the method of the module docstring); the
    `edgeq.profile_run/1` document: {"schema", "models": [per model: sha256, path,
    latency_ms_p50, latency_ms_round_p50, runs, warmup_runs, load_ms, init_ms,
    delegated_nodes, total_nodes, delegate_partitions, xnnpack_applied, delegate_note,
    input, output], "order" (round 0's order, model positions), "settings", "runtime",
    "environment", "edgeq_version", "time_utc", "pid", "elapsed_s"}."""
    import numpy as np
    from edgeq.device.bench import timed_loop
    from edgeq.device.environment import collect_environment
    from edgeq.device.runtime import detect_runtime, open_model

    check_plan(plan)
    s = settings or BenchSettings()
    started = time.perf_counter()
    time_utc = utc_now()
    runtime = detect_runtime(s.runtime)
    loaded = []
    for m in plan["models"]:
        model = open_model(m["path"], threads=s.threads, xnnpack=s.xnnpack, runtime=s.runtime,
                           sha256=m["sha256"])
        model.allocate()
        loaded.append(model)
    rng = np.random.default_rng(plan["seed"])
    inputs = [_random_input(model, rng) for model in loaded]
    rounds = plan["rounds"]
    per_round = max(1, math.ceil(plan["runs_min"] / rounds))
    warm = plan["warmup_runs_min"]
    for model, x in zip(loaded, inputs):
        if warm:
            timed_loop(model, x, runs_min=warm, s_min=0.0, runs_max=warm)
    durations: list[list[int]] = [[] for _ in loaded]
    round_p50: list[list[float]] = [[] for _ in loaded]
    for r in range(rounds):
        for i in round_order(len(loaded), plan["seed"], r):
            timed_loop(loaded[i], inputs[i], runs_min=RETOUCH_RUNS, s_min=0.0,
                       runs_max=RETOUCH_RUNS)
            ns, _ = timed_loop(loaded[i], inputs[i], runs_min=per_round, s_min=0.0,
                               runs_max=per_round)
            durations[i].extend(ns)
            round_p50[i].append(float(np.median(ns)) / 1e6)
    out = []
    for m, model, ns, rp in zip(plan["models"], loaded, durations, round_p50):
        info = model.info()
        out.append({
            "sha256": m["sha256"], "path": m["path"],
            "latency_ms_p50": float(np.median(ns)) / 1e6,
            "latency_ms_round_p50": rp,
            "runs": len(ns), "warmup_runs": warm,
            "load_ms": model.load_ms, "init_ms": model.init_ms,
            **{k: info["runtime"][k] for k in ("delegated_nodes", "total_nodes",
                                                "delegate_partitions", "xnnpack_applied",
                                                "delegate_note")},
            "input": info["model"]["input"], "output": info["model"]["output"],
        })
    return {
        "schema": RESULT_SCHEMA,
        "models": out,
        "order": round_order(len(loaded), plan["seed"], 0),
        "settings": {"threads": s.threads, "xnnpack": s.xnnpack, "runtime": s.runtime,
                     "warmup_runs_min": warm, "runs_min": plan["runs_min"], "rounds": rounds,
                     "runs_per_round": per_round, "seed": plan["seed"]},
        "runtime": {**runtime.to_dict(), "op_resolver": loaded[0].op_resolver},
        "environment": collect_environment(runtime),
        "edgeq_version": __version__,
        "time_utc": time_utc,
        "pid": os.getpid(),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


def write_plan_file(plan: dict[str, Any], directory: Union[str, os.PathLike]) -> Path:
    """Write the checked `plan` as a new file in `directory` (a worker's input); its path."""
    import tempfile

    check_plan(plan)
    fd, name = tempfile.mkstemp(prefix="plan-", suffix=".json", dir=os.fspath(directory))
    with os.fdopen(fd, "wb") as fh:
        fh.write(json.dumps(plan, separators=(",", ":")).encode("utf-8"))
    return Path(name)
