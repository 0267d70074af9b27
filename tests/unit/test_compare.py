"""The float32/int8 comparison, fed with real device results.

The bench results come from the real one-shot agent (`python -m edgeq.device bench ... --json`)
run on the session's tiny real models, two rounds per model as bench-remote does; the
expected numbers are recomputed from the files and the raw latencies, not typed in.
"""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeq.host.compare import (
    COMPARE_SCHEMA,
    ResultError,
    agreement,
    build_compare,
    delta_rows,
    environment_rows,
    latency_stats,
    model_summary,
    predictions,
    ratios,
    table_rows,
)

EVAL_LIMIT = 300


def _agent_bench(home: Path, model: Path, data: Path | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "edgeq.device", "--home", str(home), "bench", str(model),
            "--runs-min", "20", "--run-s-min", "0.05", "--warmup-runs-min", "2",
            "--warmup-s-min", "0.01", "--json"]
    if data is not None:
        argv += ["--data", str(data), "--eval-limit", str(EVAL_LIMIT)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def device_rounds(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, list[dict[str, Any]]]:
    """float32 and int8, ABBA: each model's first round evaluates, the second only times."""
    home = tmp_path_factory.mktemp("edgeq-home")
    data = tiny_artifacts / "eval.npz"
    files = {"float32": tiny_artifacts / "model_float32.tflite",
             "int8": tiny_artifacts / "model_int8.tflite"}
    out: dict[str, list[dict[str, Any]]] = {"float32": [], "int8": []}
    for kind in ("float32", "int8", "int8", "float32"):
        first = not out[kind]
        out[kind].append(_agent_bench(home, files[kind], data if first else None))
    return out


@pytest.fixture(scope="module")
def compare_doc(device_rounds: dict[str, list[dict[str, Any]]], tiny_artifacts: Path
                ) -> dict[str, Any]:
    return build_compare(device_rounds["float32"], device_rounds["int8"], host="local",
                         settings={"threads": 1, "xnnpack": True, "rounds": 2, "order": "ABBA",
                                   "path": "one-shot"},
                         time_utc="2026-11-28T12:00:00Z", artifacts_dir=str(tiny_artifacts))


def test_summary_pools_the_rounds(device_rounds: dict[str, list[dict[str, Any]]]) -> None:
    for kind, rounds in device_rounds.items():
        s = model_summary(rounds)
        raw = [x for r in rounds for x in r["timing"]["latencies_ms"]]
        assert s["runs"] == len(raw) >= 40
        assert s["latencies_ms"] == raw
        p50, p90, p99 = np.percentile(raw, [50, 90, 99])
        assert s["latency_ms_p50"] == pytest.approx(p50)
        assert s["latency_ms_p90"] == pytest.approx(p90)
        assert s["latency_ms_p99"] == pytest.approx(p99)
        assert s["latency_ms_p50"] <= s["latency_ms_p90"] <= s["latency_ms_p99"]
        per_round_p50 = [r["latency_ms_p50"] for r in s["rounds"]]
        assert min(per_round_p50) <= s["latency_ms_p50"] <= max(per_round_p50)
        assert s["peak_rss_bytes"] == max(r["memory"]["peak_rss_bytes"] for r in rounds)
        assert s["init_ms"] == pytest.approx(
            float(np.median([r["timing"]["init_ms"] for r in rounds])))
        # the evaluating round is the one kept as `result`
        assert s["result"] is rounds[0] and rounds[1]["accuracy"] is None
        assert s["accuracy"] == rounds[0]["accuracy"]["top1"]
        assert s["eval_count"] == EVAL_LIMIT


def test_sizes_and_hashes_are_the_files(compare_doc: dict[str, Any], tiny_artifacts: Path
                                        ) -> None:
    for kind in ("float32", "int8"):
        path = tiny_artifacts / f"model_{kind}.tflite"
        entry = compare_doc["models"][kind]
        assert entry["size_bytes"] == path.stat().st_size
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    r = compare_doc["ratios"]
    assert r["size_bytes"] == pytest.approx(
        (tiny_artifacts / "model_int8.tflite").stat().st_size
        / (tiny_artifacts / "model_float32.tflite").stat().st_size)
    assert r["size_bytes"] < 0.35, "int8 weights take a quarter of the float32 bytes"


def test_accuracy_and_agreement_match_the_labels(compare_doc: dict[str, Any],
                                                 tiny_artifacts: Path) -> None:
    labels = np.load(tiny_artifacts / "eval.npz")["labels"][:EVAL_LIMIT]
    p32 = np.asarray(predictions(compare_doc["models"]["float32"]))
    p8 = np.asarray(predictions(compare_doc["models"]["int8"]))
    assert len(p32) == len(p8) == EVAL_LIMIT
    assert compare_doc["models"]["float32"]["accuracy"] == pytest.approx(np.mean(p32 == labels))
    assert compare_doc["models"]["int8"]["accuracy"] == pytest.approx(np.mean(p8 == labels))
    assert compare_doc["agreement"] == pytest.approx(np.mean(p32 == p8))
    assert compare_doc["agreement"] > 0.9
    assert compare_doc["schema"] == COMPARE_SCHEMA
    for key in ("size_bytes", "sha256", "accuracy", "latency_ms_p50", "latency_ms_p90",
                "latency_ms_p99", "throughput_samples_per_s", "init_ms", "peak_rss_bytes",
                "runtime", "result"):
        assert key in compare_doc["models"]["int8"], key
    assert compare_doc["device"]["machine"]


def test_table_rows_show_the_document_numbers(compare_doc: dict[str, Any]) -> None:
    rows = {row.name: row for row in table_rows(compare_doc)}
    f32, i8 = compare_doc["models"]["float32"], compare_doc["models"]["int8"]
    assert float(rows["Size (KB)"].float32) == pytest.approx(f32["size_bytes"] / 1024, abs=0.05)
    assert float(rows["Size (KB)"].int8) == pytest.approx(i8["size_bytes"] / 1024, abs=0.05)
    assert float(rows["Latency p50 (ms)"].int8) == pytest.approx(i8["latency_ms_p50"], abs=5e-4)
    assert float(rows["Top-1 (%)"].int8) == pytest.approx(i8["accuracy"] * 100, abs=0.005)
    assert float(rows["Peak memory (MiB)"].float32) == pytest.approx(
        f32["peak_rss_bytes"] / 2**20, abs=0.05)
    assert float(rows["float/int8 agreement (%)"].ratio) == pytest.approx(
        compare_doc["agreement"] * 100, abs=0.005)
    ratio = float(rows["Throughput (samples/s)"].ratio.rstrip("x"))
    assert ratio == pytest.approx(compare_doc["ratios"]["throughput_samples_per_s"], abs=5e-4)
    assert "pt" in rows["Top-1 (%)"].ratio
    # 10 classes: top-5 from the device's own count, with its change in points
    assert float(rows["Top-5 (%)"].int8) == pytest.approx(i8["accuracy_top5"] * 100, abs=0.005)
    res = i8["result"]["accuracy"]
    assert i8["accuracy_top5"] == res["correct_top5"] / res["count"] >= i8["accuracy"]
    assert "pt" in rows["Top-5 (%)"].ratio
    assert [r.name for r in table_rows(compare_doc)][:5] == [
        "Size (KB)", "Top-1 (%)", "Top-5 (%)", "float/int8 agreement (%)", "Latency p50 (ms)"]
    # five classes or fewer: no top-5 anywhere, no row for it
    few = copy.deepcopy(compare_doc)
    for kind in ("float32", "int8"):
        few["models"][kind]["accuracy_top5"] = None
    assert [r.name for r in table_rows(few)][:4] == [
        "Size (KB)", "Top-1 (%)", "float/int8 agreement (%)", "Latency p50 (ms)"]
    assert all("Top-5" not in name for name, *_ in delta_rows(few, few))


def test_environment_block_says_emulated_loudly(compare_doc: dict[str, Any]) -> None:
    env = dict(environment_rows(compare_doc))
    assert env["threads"] == "1" and env["XNNPACK"].startswith("on")
    assert env["machine"].startswith(compare_doc["device"]["machine"])
    emulated = copy.deepcopy(compare_doc)
    emulated["device"]["emulated"] = True
    emulated["device"]["emulator"] = "qemu-aarch64"
    text = dict(environment_rows(emulated))["emulated"]
    assert "YES" in text and "qemu-aarch64" in text and "NOT" in text


def test_deltas_between_two_runs(compare_doc: dict[str, Any]) -> None:
    slower = copy.deepcopy(compare_doc)
    slower["models"]["int8"]["latency_ms_p50"] *= 2
    rows = {name: (a, b, change) for name, a, b, change in delta_rows(compare_doc, slower)}
    assert rows["int8 Latency p50 (ms)"][2] == "2.000x"
    assert rows["float32 Latency p50 (ms)"][2] == "1.000x"
    assert rows["float/int8 agreement (%)"][2] == "+0.00 pt"


def test_inconsistent_inputs_are_refused(device_rounds: dict[str, list[dict[str, Any]]]
                                         ) -> None:
    with pytest.raises(ResultError, match="different sets"):
        agreement([1, 2, 3], [1, 2])
    with pytest.raises(ResultError, match="different sha256"):
        model_summary([device_rounds["float32"][0], device_rounds["int8"][1]])
    broken = copy.deepcopy(device_rounds["int8"][0])
    broken["schema"] = "edgeq.bench/0"
    with pytest.raises(ResultError, match="schema"):
        model_summary([broken])
    missing = copy.deepcopy(device_rounds["int8"][0])
    del missing["timing"]
    with pytest.raises(ResultError, match="timing"):
        model_summary([missing])


def test_ratio_and_stats_edge_cases() -> None:
    assert ratios({"init_ms": 0.0, "size_bytes": None}, {"init_ms": 1.0, "size_bytes": 3}) == {
        key: None for key in ratios({}, {})}
    assert latency_stats([])["latency_ms_p50"] is None
    assert agreement([3, 1, 4, 1], [3, 1, 4, 2]) == 0.75


# ------------------------------------------------------------------ issue 13: memory, MLPerf


def test_model_memory_is_the_headline_row(compare_doc: dict[str, Any],
                                          device_rounds: dict[str, list[dict[str, Any]]]
                                          ) -> None:
    f32, i8 = compare_doc["models"]["float32"], compare_doc["models"]["int8"]
    for kind, entry in (("float32", f32), ("int8", i8)):
        per_round = [r["memory"]["model_memory_bytes"] for r in device_rounds[kind]]
        assert entry["model_memory_bytes"] == int(np.median(per_round)) > 0
        assert entry["model_memory_bytes"] < entry["peak_rss_bytes"]
        assert [r["model_memory_bytes"] for r in entry["rounds"]] == per_round
    assert compare_doc["ratios"]["model_memory_bytes"] == pytest.approx(
        i8["model_memory_bytes"] / f32["model_memory_bytes"])
    names = [r.name for r in table_rows(compare_doc)]
    assert names.index("Model memory (MiB)") + 1 == names.index("Peak memory (MiB)")
    row = {r.name: r for r in table_rows(compare_doc)}["Model memory (MiB)"]
    assert float(row.int8) == pytest.approx(i8["model_memory_bytes"] / 2**20, abs=0.005)
    # runs without the option: no early-stopping row, the key is null
    assert f32["latency_ms_p90_early_stopping"] is None and f32["early_stopping"] is None
    assert not any("MLPerf" in n for n in names)
    # a stored run from an agent before issue 13: no model memory row, no error
    old = copy.deepcopy(compare_doc)
    for kind in ("float32", "int8"):
        old["models"][kind].pop("model_memory_bytes")
    old.pop("ratios")
    assert "Model memory (MiB)" not in [r.name for r in table_rows(old)]


def test_single_stream_rounds_give_the_worst_early_stopping_p90(
        tiny_artifacts: Path, tmp_path: Path) -> None:
    """Two real single-stream rounds per model (the agent's --mlperf-min-s): the compare
    entry keeps the larger estimate and that round's rule; the table shows the row."""
    home = tmp_path / "home"
    rounds: dict[str, list[dict[str, Any]]] = {"float32": [], "int8": []}
    for kind in ("float32", "int8", "int8", "float32"):
        argv = [sys.executable, "-m", "edgeq.device", "--home", str(home), "bench",
                str(tiny_artifacts / f"model_{kind}.tflite"), "--runs-min", "5",
                "--run-s-min", "0", "--warmup-runs-min", "1", "--warmup-s-min", "0",
                "--mlperf-min-s", "0.05", "--json"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rounds[kind].append(json.loads(proc.stdout))
    doc = build_compare(rounds["float32"], rounds["int8"], host="local", settings={},
                        time_utc="2026-12-02T08:00:00Z", artifacts_dir=None)
    for kind in ("float32", "int8"):
        values = [r["timing"]["single_stream"]["latency_ms_p90_early_stopping"]
                  for r in rounds[kind]]
        entry = doc["models"][kind]
        assert entry["latency_ms_p90_early_stopping"] == max(values)
        worst = rounds[kind][values.index(max(values))]["timing"]["single_stream"]
        assert entry["early_stopping"] == worst["early_stopping"]
        assert entry["early_stopping"]["queries"] >= 100
    assert doc["ratios"]["latency_ms_p90_early_stopping"] == pytest.approx(
        doc["models"]["int8"]["latency_ms_p90_early_stopping"]
        / doc["models"]["float32"]["latency_ms_p90_early_stopping"])
    row = {r.name: r for r in table_rows(doc)}["Latency p90 MLPerf early stop (ms)"]
    assert float(row.float32) == pytest.approx(
        doc["models"]["float32"]["latency_ms_p90_early_stopping"], abs=5e-4)
