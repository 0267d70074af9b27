"""One benchmark of one model, in this process: the `edgeq.bench/1` document.

Methodology after TFLite's benchmark_model and MLPerf LoadGen:
1. import the runtime and load the evaluation data first (fail fast; they are the baseline);
2. load (file checks + interpreter construction, `load_ms`), allocate (`init_ms`);
3. the first inference alone (`first_inference_ms`, includes lazy kernel preparation);
4. warm-up until both `warmup_runs_min` runs and `warmup_s_min` seconds are done;
5. timed batch-1 runs until both `runs_min` runs and `run_s_min` seconds are done, at most
   `runs_max`; each run is one set_tensor/invoke/get_tensor on a fixed prepared image,
   timed with perf_counter_ns and nothing else in the loop;
6. batched throughput at `batch_size` (when the model's batch dimension can be resized):
   a short warm-up, then batches until max(3, runs_min/10) runs and run_s_min/4 seconds;
   samples/s = batch x runs / summed run time (else batch-1 throughput from step 5);
7. accuracy over the evaluation set (uint8 raw pixels or float32 model-ready images, quantized
   with the model's own input scale/zero-point), streamed from the file a batch at a time
   (edgeq.device.evaldata): top-1, and top-5 when there are more than 5 classes, from the
   model's real output scores;
8. only with `mlperf_min_s` set: MLPerf Inference's single-stream scenario, batch-1 queries
   (the same prepared image) back to back until both `mlperf_min_s` seconds and MLPerf's
   minimum query count (edgeq.device.mlperf.MIN_QUERIES) are reached, with no upper bound,
   reported as MLPerf's early-stopping estimate of the 90th percentile and the rule used
   (`timing.single_stream`; `timing.latency_ms_p90_early_stopping`). It runs after the memory
   figures are taken, so its latency array never shows in them.
Memory: VmRSS/VmHWM/RssAnon/RssFile from /proc/self/status where available (else psutil /
getrusage). The headline is `model_memory_bytes`: the RSS growth from just before the model is
loaded (freed heap pages given back to the OS first, `heap_trimmed`) to just after its first
inference (load + allocate + the first invoke's lazy kernel
preparation and XNNPACK weight packing), the same interval for every model; the process's
peak (`peak_rss_bytes`) sits on top of the worker's baseline (`rss_bytes_start`: Python,
numpy, the runtime library, the labels; the images are never all in memory). RSS growth per
step (load, allocate, timed invokes) is kept too. Run it in a fresh process
(edgeq.device.worker) so one model's memory never shows in another's numbers.
Library code: no printing; progress via `progress(done, total)` over the 8 stages above.
Imports: standard library, numpy, psutil (optional), edgeq.device.
"""
from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from edgeq.device import __version__
from edgeq.device.environment import collect_environment
from edgeq.device.evaldata import EvalData, open_eval_data
from edgeq.device.fileutil import utc_now
from edgeq.device.mlperf import MIN_QUERIES, early_stopping_estimate
from edgeq.device.runtime import (
    LoadedModel,
    check_tflite_file,
    detect_runtime,
    open_model,
    sha256_file,
)
from edgeq.device.settings import BenchSettings

logger = logging.getLogger(__name__)

SCHEMA = "edgeq.bench/1"
ProgressCallback = Callable[[int, int], None]
STAGES = ("load", "allocate", "first_inference", "warmup", "timed", "throughput", "accuracy",
          "single_stream")
#: top-5 accuracy is reported for models with more than this many classes
TOP5_K = 5


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------


def _proc_status() -> dict[str, int]:
    """Vm*/Rss* lines of /proc/self/status in bytes ({} where there is no such file)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", "rb") as fh:
            for raw in fh:
                line = raw.decode("ascii", "replace")
                if line.startswith(("Vm", "Rss")) and line.rstrip().endswith("kB"):
                    key, _, rest = line.partition(":")
                    out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        return {}
    return out


def memory_snapshot() -> dict[str, Optional[int]]:
    """rss, peak rss (high-water mark), anonymous and file-backed rss, in bytes or None."""
    st = _proc_status()
    rss = st.get("VmRSS")
    peak = st.get("VmHWM")
    anon = st.get("RssAnon")
    file_backed = st.get("RssFile")
    if rss is None or peak is None:
        try:
            import psutil

            info = psutil.Process().memory_info()
            rss = rss if rss is not None else int(info.rss)
            peak_attr = getattr(info, "peak_wset", None)  # Windows
            if peak is None and peak_attr is not None:
                peak = int(peak_attr)
        except Exception:  # psutil missing or the OS refuses
            pass
    if peak is None:
        try:
            import resource

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = int(maxrss if sys.platform == "darwin" else maxrss * 1024)
        except (ImportError, OSError, ValueError):
            pass
    return {"rss": rss, "peak": peak, "anon": anon, "file": file_backed}


def release_free_memory() -> bool:
    """Give freed heap pages back to the OS (gc, then glibc's malloc_trim(0)), so memory the
    model allocates next shows as RSS growth instead of reusing pages freed earlier (e.g. by
    reading the evaluation data). False where there is no glibc (musl, macOS): then the
    growth may be smaller than the model's allocations."""
    import gc

    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = getattr(libc, "malloc_trim", None)
        if trim is None:
            return False
        trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _diff(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return None if a is None or b is None else int(a - b)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def latency_stats(latencies_ms: Sequence[float]) -> dict[str, Optional[float]]:
    """min / p50 / p90 / p99 / mean / std (population) of latencies in ms (all None for an
    empty sample). The one implementation: host/compare.py pools rounds through it too."""
    if len(latencies_ms) == 0:
        return {k: None for k in ("latency_ms_min", "latency_ms_p50", "latency_ms_p90",
                                  "latency_ms_p99", "latency_ms_mean", "latency_ms_std")}
    a = np.asarray(latencies_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "latency_ms_min": float(a.min()),
        "latency_ms_p50": float(p50),
        "latency_ms_p90": float(p90),
        "latency_ms_p99": float(p99),
        "latency_ms_mean": float(a.mean()),
        "latency_ms_std": float(a.std()),
    }


def timed_loop(model: LoadedModel, x: np.ndarray, *, runs_min: int, s_min: float,
               runs_max: int) -> tuple[list[int], float]:
    """Run set_tensor/invoke/get_tensor until runs_min AND s_min are reached (<= runs_max).

    Returns the per-run durations in ns and the wall time of the whole loop in s.
    """
    it = model.interpreter
    set_tensor = it.set_tensor
    invoke = it.invoke
    get_tensor = it.get_tensor
    in_idx = model._in_index
    out_idx = model._out_index
    clock = time.perf_counter_ns
    durations: list[int] = []
    append = durations.append
    s_min_ns = int(s_min * 1e9)
    start = clock()
    deadline = start + s_min_ns
    n = 0
    while n < runs_max:
        t0 = clock()
        set_tensor(in_idx, x)
        invoke()
        get_tensor(out_idx)
        t1 = clock()
        append(t1 - t0)
        n += 1
        if n >= runs_min and t1 >= deadline:
            break
    return durations, (clock() - start) / 1e9


def single_stream(model: LoadedModel, x: np.ndarray, *, min_s: float,
                  min_queries: int = MIN_QUERIES) -> dict[str, Any]:
    """MLPerf's single-stream scenario: one prepared batch-1 query after the other (the same
    set_tensor/invoke/get_tensor as `timed_loop`) until both `min_s` seconds and `min_queries`
    queries are done; the `timing.single_stream` section (docs/SCHEMA.md) with the
    early-stopping p90 of edgeq.device.mlperf and the rule it used."""
    it = model.interpreter
    set_tensor, invoke, get_tensor = it.set_tensor, it.invoke, it.get_tensor
    in_idx, out_idx = model._in_index, model._out_index
    clock = time.perf_counter_ns
    durations = np.empty(1 << 14, dtype=np.int64)  # grows by doubling; no upper bound
    n = 0
    start = clock()
    deadline = start + int(min_s * 1e9)
    while True:
        t0 = clock()
        set_tensor(in_idx, x)
        invoke()
        get_tensor(out_idx)
        t1 = clock()
        if n == len(durations):
            durations = np.concatenate([durations, np.empty_like(durations)])
        durations[n] = t1 - t0
        n += 1
        if n >= min_queries and t1 >= deadline:
            break
    duration_s = (clock() - start) / 1e9
    lat_ms = durations[:n] / 1e6
    estimate, rule = early_stopping_estimate(lat_ms)
    p50, p90 = np.percentile(lat_ms, [50, 90])
    return {
        "queries": n,
        "duration_s": duration_s,
        "min_duration_s": float(min_s),
        "min_queries": int(min_queries),
        "latency_ms_p50": float(p50),
        "latency_ms_p90": float(p90),
        "latency_ms_p90_early_stopping": estimate,
        "early_stopping": rule,
    }


def _sample_input(model: LoadedModel, data: Optional[EvalData]) -> np.ndarray:
    """One model-ready image: the first evaluation image, else a seeded random one."""
    if data is not None and len(data):
        return data.head(1)
    shape = tuple(abs(s) if s != -1 else 1 for s in model.sample_shape())
    # the standard library's generator: numpy.random would load ~2 MB into the worker (and,
    # imported here, into the model's memory interval)
    raw = random.Random(0).randbytes(int(np.prod(shape, dtype=np.int64)))
    return np.frombuffer(raw, dtype=np.uint8).reshape((1, *shape))


def top_k_for(num_classes: int) -> int:
    """How many best classes to keep per image: 5 when the model has more than 5 classes
    (top-5 is reported then), else 1."""
    return TOP5_K if num_classes > TOP5_K else 1


def accuracy_section(top: np.ndarray, labels: np.ndarray, num_classes: int = 0
                     ) -> dict[str, Any]:
    """The ACCURACY section of docs/SCHEMA.md from each image's best classes.

    `top` is (N,) or (N, k) class indices, best first (from the model's real outputs).
    count / correct / top1; correct_top5 / top5 when the model has more than 5 classes (else
    null); num_classes; per_class_top1 (one entry per class 0..num_classes-1, null for a
    class with no image); predictions (the best class of every image).
    """
    labels = np.asarray(labels, dtype=np.int64)
    top = np.asarray(top, dtype=np.int64)
    if top.ndim == 1:
        top = top[:, None]
    predictions = top[:, 0]
    hit = predictions == labels
    count = int(labels.size)
    correct = int(hit.sum())
    n_classes = max(int(num_classes), int(labels.max()) + 1 if count else 0)
    correct5: Optional[int] = None
    if num_classes > TOP5_K and top.shape[1] >= TOP5_K:
        correct5 = int(np.any(top[:, :TOP5_K] == labels[:, None], axis=1).sum())
    per_class: list[Optional[float]] = []
    for c in range(n_classes):
        mask = labels == c
        total = int(mask.sum())
        per_class.append(float(hit[mask].sum()) / total if total else None)
    return {
        "count": count,
        "correct": correct,
        "top1": correct / count if count else None,
        "correct_top5": correct5,
        "top5": correct5 / count if correct5 is not None and count else None,
        "num_classes": n_classes,
        "per_class_top1": per_class,
        "predictions": [int(p) for p in predictions],
    }


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------


def run_benchmark(
    model_path: Union[str, os.PathLike],
    *,
    data_path: Union[str, os.PathLike, None] = None,
    settings: Optional[BenchSettings] = None,
    progress: Optional[ProgressCallback] = None,
    sha256: Optional[str] = None,
) -> dict[str, Any]:
    """Measure one model in this process; the edgeq.bench/1 document of docs/SCHEMA.md.

    `sha256` (already verified by the caller, e.g. the store) skips hashing the file.
    """
    s = settings or BenchSettings()
    total_stages = len(STAGES)

    def step(i: int) -> None:
        if progress is not None:
            progress(i, total_stages)

    time_utc = utc_now()
    runtime = detect_runtime(s.runtime)
    data: Optional[EvalData] = None
    if data_path is not None:
        data = open_eval_data(data_path).limited(s.eval_limit)
    if sha256 is None:
        check_tflite_file(model_path)  # clear errors before hashing
        sha256 = sha256_file(model_path)
    step(0)

    trimmed = release_free_memory()
    mem0 = memory_snapshot()
    model = open_model(model_path, threads=s.threads, xnnpack=s.xnnpack, runtime=s.runtime,
                       sha256=sha256)
    mem_load = memory_snapshot()
    step(1)
    model.allocate()
    mem_alloc = memory_snapshot()
    step(2)

    # input checks before any timing: a shape mismatch is an error, not a number
    sample = model.prepare_input(_sample_input(model, data))
    if model.batch_size != 1 and not model.set_batch(1):
        logger.info("%s has a fixed batch of %d; timing that batch", model.path.name,
                    model.batch_size)
    timed_batch = model.batch_size
    if sample.shape[0] != timed_batch:
        sample = np.repeat(sample, timed_batch, axis=0)

    t0 = time.perf_counter_ns()
    model.run_prepared(sample)
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    mem_first = memory_snapshot()
    step(3)

    warmup_runs = 0
    if s.warmup_runs_min > 0 or s.warmup_s_min > 0:
        warm, _ = timed_loop(model, sample, runs_min=s.warmup_runs_min, s_min=s.warmup_s_min,
                             runs_max=max(s.warmup_runs_min, s.runs_max))
        warmup_runs = len(warm)
    step(4)

    durations_ns, timed_s = timed_loop(model, sample, runs_min=s.runs_min, s_min=s.run_s_min,
                                       runs_max=s.runs_max)
    mem_invoke = memory_snapshot()
    latencies_ms = [d / 1e6 for d in durations_ns]
    step(5)

    # batched throughput
    tp_batch = timed_batch
    tp_samples_per_s: Optional[float] = None
    if s.batch_size > 1 and model.set_batch(s.batch_size):
        tp_batch = s.batch_size
        src = data.head(s.batch_size) if data is not None else None
        if src is None or len(src) < s.batch_size:
            base = src if src is not None and len(src) else _sample_input(model, None)
            reps = int(math.ceil(s.batch_size / max(1, len(base))))
            src = np.concatenate([base] * reps)[: s.batch_size]
        xb = model.prepare_input(src)
        timed_loop(model, xb, runs_min=max(1, min(3, s.warmup_runs_min)), s_min=0.0,
                   runs_max=s.runs_max)
        tp_durations, _ = timed_loop(model, xb, runs_min=max(3, s.runs_min // 10),
                                     s_min=s.run_s_min / 4.0, runs_max=s.runs_max)
        tp_samples_per_s = tp_batch * len(tp_durations) / (sum(tp_durations) / 1e9)
    elif latencies_ms:
        tp_samples_per_s = timed_batch * len(durations_ns) / (sum(durations_ns) / 1e9)
    step(6)

    accuracy: Optional[dict[str, Any]] = None
    if data is not None:
        top = model.predict_top_k(data, top_k_for(model.num_classes), batch_size=s.batch_size)
        accuracy = accuracy_section(top, data.labels, model.num_classes)
    step(7)
    mem_end = memory_snapshot()

    ss: Optional[dict[str, Any]] = None
    if s.mlperf_min_s is not None:
        if model.batch_size != timed_batch:
            model.set_batch(timed_batch)
        ss = single_stream(model, sample, min_s=s.mlperf_min_s)
    step(8)

    info = model.info()
    timing: dict[str, Any] = {
        "load_ms": model.load_ms,
        "init_ms": model.init_ms,
        "first_inference_ms": first_ms,
        "warmup_runs": warmup_runs,
        "runs": len(durations_ns),
        "timed_s": timed_s,
        **latency_stats(latencies_ms),
        "latencies_ms": latencies_ms,
        "timed_batch_size": timed_batch,
        "throughput_samples_per_s": tp_samples_per_s,
        "throughput_batch_size": tp_batch,
        "latency_ms_p90_early_stopping": ss["latency_ms_p90_early_stopping"] if ss else None,
        "single_stream": ss,
    }
    memory: dict[str, Any] = {
        "model_memory_bytes": _diff(mem_first["rss"], mem0["rss"]),
        "model_memory_anon_bytes": _diff(mem_first["anon"], mem0["anon"]),
        "peak_rss_bytes": mem_end["peak"],
        "peak_rss_bytes_batch1": mem_invoke["peak"],  # before batched throughput and accuracy
        "rss_bytes_start": mem0["rss"],
        "rss_growth_bytes_load": _diff(mem_load["rss"], mem0["rss"]),
        "rss_growth_bytes_allocate": _diff(mem_alloc["rss"], mem_load["rss"]),
        "rss_growth_bytes_invoke": _diff(mem_invoke["rss"], mem_alloc["rss"]),
        "rss_bytes_end": mem_end["rss"],
        "rss_anon_bytes": mem_invoke["anon"],
        "rss_file_bytes": mem_invoke["file"],
        "source": "/proc/self/status" if mem0["anon"] is not None else "psutil/getrusage",
        "heap_trimmed": trimmed,
    }
    settings_doc = s.to_dict()
    return {
        "schema": SCHEMA,
        "model": info["model"],
        "settings": settings_doc,
        "runtime": info["runtime"],
        "timing": timing,
        "memory": memory,
        "accuracy": accuracy,
        "environment": collect_environment(runtime),
        "edgeq_version": __version__,
        "time_utc": time_utc,
        "pid": os.getpid(),
    }



def run_evaluation(
    model_path: Union[str, os.PathLike],
    *,
    data_path: Union[str, os.PathLike],
    settings: Optional[BenchSettings] = None,
    progress: Optional[ProgressCallback] = None,
    sha256: Optional[str] = None,
) -> dict[str, Any]:
    """Accuracy only (no timing runs): the `edgeq.evaluate/1` document.

    `progress(done, total)` counts evaluated images.
    """
    s = settings or BenchSettings()
    time_utc = utc_now()
    runtime = detect_runtime(s.runtime)
    data = open_eval_data(data_path).limited(s.eval_limit)
    if sha256 is None:
        check_tflite_file(model_path)
        sha256 = sha256_file(model_path)
    model = open_model(model_path, threads=s.threads, xnnpack=s.xnnpack, runtime=s.runtime,
                       sha256=sha256)
    model.allocate()
    t0 = time.perf_counter()
    top = model.predict_top_k(data, top_k_for(model.num_classes), batch_size=s.batch_size,
                              progress=progress)
    eval_ms = (time.perf_counter() - t0) * 1000.0
    info = model.info()
    return {
        "schema": "edgeq.evaluate/1",
        "model": info["model"],
        "runtime": info["runtime"],
        "settings": s.to_dict(),
        "accuracy": accuracy_section(top, data.labels, model.num_classes),
        "eval_ms": eval_ms,
        "memory": {"peak_rss_bytes": memory_snapshot()["peak"]},
        "environment": collect_environment(runtime),
        "edgeq_version": __version__,
        "time_utc": time_utc,
    }
