"""edgeq.device.bench / environment / worker / one-shot CLI, with real LiteRT and real models."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgeq.device.bench import (
    BenchSettings,
    accuracy_section,
    latency_stats,
    run_benchmark,
    run_evaluation,
)
from edgeq.device.environment import collect_environment, detect_emulation
from edgeq.device.errors import (
    EvalDataError,
    ModelLoadError,
    UsageError,
    WorkerCrashedError,
    WorkerTimeoutError,
)
from edgeq.device.evaldata import load_eval_data
from edgeq.device.runtime import load_model
from edgeq.device.worker import run_in_worker
from test_device_runtime import damaged_model, truncated_copy

FAST = BenchSettings(warmup_runs_min=3, warmup_s_min=0.02, runs_min=20, run_s_min=0.1,
                     runs_max=2000, eval_limit=300)

SCHEMA_KEYS = {
    "schema", "model", "settings", "runtime", "timing", "memory", "accuracy", "environment",
    "edgeq_version", "time_utc",
}
TIMING_KEYS = {
    "load_ms", "init_ms", "first_inference_ms", "warmup_runs", "runs", "timed_s",
    "latency_ms_min", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_mean",
    "latency_ms_std", "latencies_ms", "throughput_samples_per_s", "throughput_batch_size",
}
MEMORY_KEYS = {
    "peak_rss_bytes", "rss_bytes_start", "rss_growth_bytes_load", "rss_growth_bytes_allocate",
    "rss_growth_bytes_invoke", "rss_anon_bytes", "rss_file_bytes",
}
ENV_KEYS = {
    "hostname", "machine", "system", "kernel", "cpu_model", "cpu_count", "python_version",
    "numpy_version", "runtime", "cpu_governor", "cpu_temperature_c", "throttled", "emulated",
    "emulator",
}
SETTINGS_KEYS = {"threads", "xnnpack", "batch_size", "warmup_runs_min", "warmup_s_min",
                 "runs_min", "run_s_min", "runs_max", "eval_limit"}


def test_bench_document_follows_the_schema(dev_models: dict[str, Path]) -> None:
    doc = run_benchmark(dev_models["int8"], data_path=dev_models["eval"], settings=FAST)
    assert SCHEMA_KEYS <= set(doc) and doc["schema"] == "edgeq.bench/1"
    assert set(doc["model"]) >= {"path", "sha256", "size_bytes", "input", "output"}
    assert set(doc["model"]["input"]) == {"name", "dtype", "shape", "scale", "zero_point"}
    assert SETTINGS_KEYS <= set(doc["settings"])
    assert {"name", "version", "xnnpack_applied", "delegated_nodes", "total_nodes"} <= set(
        doc["runtime"])
    assert TIMING_KEYS <= set(doc["timing"])
    assert MEMORY_KEYS <= set(doc["memory"])
    assert ENV_KEYS <= set(doc["environment"])
    json.dumps(doc, allow_nan=False)  # strictly JSON

    t = doc["timing"]
    assert t["runs"] == len(t["latencies_ms"]) >= FAST.runs_min
    assert t["timed_s"] >= FAST.run_s_min or t["runs"] == FAST.runs_max
    assert t["warmup_runs"] >= FAST.warmup_runs_min
    lat = np.array(t["latencies_ms"])
    assert t["latency_ms_min"] == pytest.approx(lat.min())
    assert t["latency_ms_min"] <= t["latency_ms_p50"] <= t["latency_ms_p90"] \
        <= t["latency_ms_p99"] <= lat.max()
    assert t["latency_ms_p50"] == pytest.approx(float(np.median(lat)))
    assert t["throughput_batch_size"] == 32 and t["throughput_samples_per_s"] > 0
    assert t["load_ms"] > 0 and t["init_ms"] > 0 and t["first_inference_ms"] > 0

    m = doc["memory"]
    assert m["peak_rss_bytes"] >= m["rss_bytes_start"] > 10 * 2**20
    assert m["rss_anon_bytes"] > 0 and m["rss_file_bytes"] > 0  # Linux reports both
    assert m["rss_growth_bytes_load"] is not None

    acc = doc["accuracy"]
    images, labels = load_eval_data(dev_models["eval"])
    preds = load_model(dev_models["int8"]).predict(images[:300], 32)
    assert acc["count"] == 300 and acc["predictions"] == preds.tolist()
    assert acc["correct"] == int((preds == labels[:300]).sum())
    assert acc["top1"] == pytest.approx(acc["correct"] / 300)
    assert len(acc["per_class_top1"]) == 10 and acc["num_classes"] == 10
    c0 = labels[:300] == 0
    assert acc["per_class_top1"][0] == pytest.approx((preds[c0] == 0).mean())
    # 10 classes > 5: top-5 from the model's real scores
    top5 = load_model(dev_models["int8"]).predict_top_k(images[:300], 5, 32)
    hits5 = int(np.any(top5 == labels[:300, None], axis=1).sum())
    assert acc["correct_top5"] == hits5 >= acc["correct"]
    assert acc["top5"] == pytest.approx(hits5 / 300)
    assert doc["runtime"]["delegated_nodes"] > 0 and doc["settings"]["threads"] == 1


def test_no_data_means_null_accuracy(dev_models: dict[str, Path]) -> None:
    doc = run_benchmark(dev_models["float32"], settings=FAST)
    assert doc["accuracy"] is None and doc["timing"]["runs"] >= 20


def test_runs_max_caps_and_run_s_min_extends(dev_models: dict[str, Path]) -> None:
    capped = run_benchmark(dev_models["int8"], settings=BenchSettings(
        warmup_runs_min=1, warmup_s_min=0.0, runs_min=5, run_s_min=30.0, runs_max=25,
        batch_size=1))
    assert capped["timing"]["runs"] == 25 and capped["timing"]["timed_s"] < 30
    assert capped["timing"]["throughput_batch_size"] == 1
    timed = run_benchmark(dev_models["int8"], settings=BenchSettings(
        warmup_runs_min=0, warmup_s_min=0.0, runs_min=1, run_s_min=0.25, runs_max=10**6,
        batch_size=1))
    assert timed["timing"]["timed_s"] >= 0.25 and timed["timing"]["runs"] > 1
    assert timed["timing"]["warmup_runs"] == 0 and capped["timing"]["warmup_runs"] >= 1


def test_no_xnnpack_and_threads_are_recorded(dev_models: dict[str, Path]) -> None:
    doc = run_benchmark(dev_models["int8"], settings=BenchSettings(
        xnnpack=False, threads=2, warmup_runs_min=1, warmup_s_min=0, runs_min=5, run_s_min=0))
    assert doc["settings"]["xnnpack"] is False and doc["settings"]["threads"] == 2
    assert doc["runtime"]["op_resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    assert doc["runtime"]["delegated_nodes"] == 0


def test_evaluate_document(dev_models: dict[str, Path]) -> None:
    doc = run_evaluation(dev_models["float32"], data_path=dev_models["eval"],
                         settings=BenchSettings(eval_limit=100))
    assert doc["schema"] == "edgeq.evaluate/1"
    assert doc["accuracy"]["count"] == 100 and len(doc["accuracy"]["predictions"]) == 100


@pytest.mark.parametrize("kw", [
    {"threads": 0}, {"threads": True}, {"runs_min": 0}, {"run_s_min": -1.0},
    {"run_s_min": float("nan")}, {"runs_max": 5, "runs_min": 10}, {"eval_limit": 0},
    {"xnnpack": "yes"}, {"batch_size": 1.5},
])
def test_bad_settings(kw: dict) -> None:
    with pytest.raises(UsageError):
        BenchSettings(**kw)
    with pytest.raises(UsageError):
        BenchSettings.from_dict({"bogus": 1})


def test_latency_stats_on_known_numbers() -> None:
    s = latency_stats([float(i) for i in range(1, 101)])
    assert s["latency_ms_min"] == 1.0 and s["latency_ms_p50"] == pytest.approx(50.5)
    assert s["latency_ms_p90"] == pytest.approx(90.1) and s["latency_ms_p99"] == pytest.approx(
        99.01)
    assert s["latency_ms_mean"] == pytest.approx(50.5)
    assert s["latency_ms_std"] == pytest.approx(np.std(np.arange(1, 101)))


# --- environment / emulation -----------------------------------------------------------------

INTEL_CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse sse2\n"
PI_CPUINFO = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd\n"
              "CPU implementer\t: 0x41\nCPU part\t: 0xd08\nModel\t: Raspberry Pi 4 Model B\n")


def test_emulation_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEQ_EMULATED", raising=False)
    emulated, emulator, signals = detect_emulation("aarch64", INTEL_CPUINFO, "Linux 6.1 amd64")
    assert emulated and emulator == "qemu-aarch64"
    assert "cpuinfo:mismatch" in signals and "kernel:mismatch" in signals
    emulated, emulator, signals = detect_emulation("aarch64", PI_CPUINFO, "Linux 6.6 rpi")
    assert not emulated and emulator is None and signals == []
    monkeypatch.setenv("EDGEQ_EMULATED", "qemu-aarch64")
    emulated, emulator, signals = detect_emulation("aarch64", PI_CPUINFO, "Linux 6.6 rpi")
    assert emulated and emulator == "qemu-aarch64" and signals == ["env:EDGEQ_EMULATED"]
    monkeypatch.setenv("EDGEQ_EMULATED", "0")
    assert detect_emulation("aarch64", INTEL_CPUINFO, "x86_64")[0] is False


def test_environment_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEQ_EMULATED", raising=False)
    env = collect_environment()
    assert ENV_KEYS <= set(env)
    assert env["machine"] == os.uname().machine and env["cpu_count"] == os.cpu_count()
    assert env["numpy_version"] == np.__version__
    assert env["emulated"] is False  # this test host runs natively


# --- worker process --------------------------------------------------------------------------


def test_worker_runs_a_bench_in_another_process(dev_models: dict[str, Path]) -> None:
    pids: list[int] = []
    doc = run_in_worker("bench", dev_models["int8"], data_path=dev_models["eval"],
                        settings=FAST, timeout_s=120, on_start=pids.append)
    assert doc["pid"] == pids[0] != os.getpid()
    assert doc["accuracy"]["count"] == 300


def test_worker_reraises_the_workers_own_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError):
        run_in_worker("bench", bad, settings=FAST, timeout_s=60)


def test_worker_killed_is_a_crash(dev_models: dict[str, Path]) -> None:
    def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    with pytest.raises(WorkerCrashedError) as exc:
        run_in_worker("bench", dev_models["int8"], settings=FAST, timeout_s=60, on_start=kill)
    assert "SIGKILL" in exc.value.message


def test_worker_turns_a_damaged_model_segfault_into_an_error(dev_models: dict[str, Path],
                                                             tmp_path: Path) -> None:
    bad = damaged_model(dev_models["int8"], tmp_path / "bad.tflite")
    with pytest.raises(WorkerCrashedError) as exc:
        run_in_worker("evaluate", bad, data_path=dev_models["eval"], settings=FAST,
                      timeout_s=120)
    assert "SIGSEGV" in exc.value.message and "check the .tflite file" in exc.value.hint


def test_accuracy_section_top5_only_above_five_classes() -> None:
    labels = np.array([0, 1, 2, 3])
    few = accuracy_section(np.array([[0], [2], [2], [3]]), labels, num_classes=4)
    assert few["top1"] == 0.75 and few["top5"] is None and few["correct_top5"] is None
    assert few["per_class_top1"] == [1.0, 0.0, 1.0, 1.0] and few["num_classes"] == 4
    top = np.array([[5, 0, 1, 2, 3], [1, 0, 2, 3, 4], [6, 7, 8, 9, 5], [3, 4, 5, 6, 7]])
    many = accuracy_section(top, labels, num_classes=10)
    assert many["correct"] == 2 and many["correct_top5"] == 3 and many["top5"] == 0.75
    assert many["predictions"] == [5, 1, 6, 3] and len(many["per_class_top1"]) == 10


def test_worker_hang_times_out(dev_models: dict[str, Path]) -> None:
    def freeze(pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)  # a worker that never makes progress

    with pytest.raises(WorkerTimeoutError) as exc:
        run_in_worker("bench", dev_models["int8"], settings=FAST, timeout_s=1.0,
                      on_start=freeze)
    assert "1 s" in exc.value.message


# --- one-shot CLI ----------------------------------------------------------------------------


def _agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeq.device", *args], capture_output=True,
                          timeout=120)


def test_one_shot_bench_json(dev_models: dict[str, Path]) -> None:
    r = _agent("bench", str(dev_models["int8"]), "--data", str(dev_models["eval"]),
               "--eval-limit", "50", "--runs-min", "10", "--run-s-min", "0.05",
               "--warmup-s-min", "0", "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "edgeq.bench/1" and doc["accuracy"]["count"] == 50
    assert doc["settings"]["runs_min"] == 10


def test_one_shot_human_summary(dev_models: dict[str, Path]) -> None:
    r = _agent("bench", str(dev_models["float32"]), "--runs-min", "5", "--run-s-min", "0",
               "--warmup-s-min", "0", "--no-xnnpack")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "latency   p50" in out and "XNNPACK off" in out


def test_one_shot_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model" * 10)
    r = _agent("bench", str(bad), "--json")
    assert r.returncode == 1
    err_lines = [ln for ln in r.stderr.decode().splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and " / hint: " in err_lines[0]
    assert json.loads(r.stdout)["error"]["type"] == "ModelLoadError"
    r = _agent("bench", str(bad), "--threads", "0")
    assert r.returncode == 2 and r.stderr.decode().startswith("error:")


def test_one_shot_truncated_eval_data(dev_models: dict[str, Path], tmp_path: Path) -> None:
    """A real eval.npz cut short: a one-line EvalDataError with a hint, not an internal error."""
    cut = truncated_copy(dev_models["eval"], tmp_path / "eval.npz")
    r = _agent("bench", str(dev_models["int8"]), "--data", str(cut), "--json")
    assert r.returncode == 1, r.stderr
    err = json.loads(r.stdout)["error"]
    assert err["type"] == "EvalDataError" and "not a readable .npz" in err["message"]
    assert "truncated" in err["hint"]
    with pytest.raises(EvalDataError):
        run_evaluation(dev_models["int8"], data_path=cut)


# ------------------------------------------------------------------ issue 13: MLPerf, memory


def test_single_stream_reports_the_early_stopping_p90(dev_models: dict[str, Path]) -> None:
    from edgeq.device.mlperf import MIN_QUERIES, overlatency_allowed

    doc = run_benchmark(dev_models["int8"], settings=BenchSettings(
        warmup_runs_min=1, warmup_s_min=0.0, runs_min=5, run_s_min=0.0, mlperf_min_s=0.3))
    ss = doc["timing"]["single_stream"]
    assert doc["settings"]["mlperf_min_s"] == 0.3
    assert ss["queries"] >= MIN_QUERIES and ss["duration_s"] >= 0.3
    rule = ss["early_stopping"]
    assert rule["queries"] == ss["queries"] and rule["percentile"] == 0.9
    assert rule["confidence"] == 0.99
    assert rule["overlatency_allowed"] == overlatency_allowed(ss["queries"]) >= 1
    assert rule["order_statistic"] == ss["queries"] - rule["overlatency_allowed"] + 1
    est = doc["timing"]["latency_ms_p90_early_stopping"]
    assert est == ss["latency_ms_p90_early_stopping"]
    assert ss["latency_ms_p50"] <= ss["latency_ms_p90"] <= est
    json.dumps(doc, allow_nan=False)


def test_without_the_option_there_is_no_single_stream(dev_models: dict[str, Path]) -> None:
    doc = run_benchmark(dev_models["int8"], settings=FAST)
    assert doc["timing"]["single_stream"] is None
    assert doc["timing"]["latency_ms_p90_early_stopping"] is None


def test_single_stream_flag_reaches_the_worker(dev_models: dict[str, Path]) -> None:
    s = BenchSettings(warmup_runs_min=1, warmup_s_min=0.0, runs_min=5, run_s_min=0.0,
                      mlperf_min_s=0.05)
    assert "--mlperf-min-s" in s.to_argv()
    doc = run_in_worker("bench", dev_models["float32"], settings=s, timeout_s=120)
    assert doc["timing"]["single_stream"]["min_duration_s"] == 0.05


def test_model_memory_is_the_headline(dev_models: dict[str, Path]) -> None:
    doc = run_benchmark(dev_models["float32"], data_path=dev_models["eval"], settings=FAST)
    m = doc["memory"]
    assert 0 < m["model_memory_bytes"] < m["peak_rss_bytes"]
    assert m["model_memory_bytes"] < m["peak_rss_bytes"] - m["rss_bytes_start"] + 4096
    assert m["model_memory_anon_bytes"] is not None


def test_int8_costs_less_memory_than_float32(dev_models: dict[str, Path]) -> None:
    """Each model in a fresh worker (as bench-remote runs them): the model's own footprint,
    load to first inference, is smaller for int8 (smaller weights, no float32 copies for
    XNNPACK to pack). mnist-cnn: about 5.3 MB float32 vs 3.9 MB int8 on x86-64."""
    s = BenchSettings(warmup_runs_min=1, warmup_s_min=0.0, runs_min=5, run_s_min=0.0,
                      batch_size=1)
    got = {kind: run_in_worker("bench", dev_models[kind], settings=s, timeout_s=120)
           ["memory"]["model_memory_bytes"] for kind in ("float32", "int8")}
    assert 0 < got["int8"] < got["float32"], got


def test_streamed_accuracy_equals_the_in_memory_one(dev_models: dict[str, Path]) -> None:
    """The bench streams eval.npz a batch at a time; its predictions are those of the whole
    set in memory (the path before issue 13)."""
    doc = run_benchmark(dev_models["int8"], data_path=dev_models["eval"], settings=BenchSettings(
        warmup_runs_min=1, warmup_s_min=0.0, runs_min=5, run_s_min=0.0, batch_size=7))
    images, labels = load_eval_data(dev_models["eval"])
    preds = load_model(dev_models["int8"]).predict(images, 32)
    assert doc["accuracy"]["count"] == len(labels)
    assert doc["accuracy"]["predictions"] == preds.tolist()
