"""What a model costs in memory on the device: its own footprint vs the worker's whole process.

    python benchmarks/memory.py ARTIFACTS_DIR [--repeat N] [--eval-limit N]

Runs the device's bench for model_float32.tflite and model_int8.tflite of ARTIFACTS_DIR, each
in a fresh worker process (edgeq.device.worker, as bench-remote's daemon does), N times each,
alternating, with the artifacts' eval.npz, and prints the median of:
- model: `model_memory_bytes`, RSS growth from just before load to just after the first
  inference (the headline; older agents lack it, then load + allocate + invoke growth is
  shown, marked *);
- baseline: RSS of the worker before the model is loaded (Python, numpy, the runtime, data);
- peak b1: the process's peak after the batch-1 timed runs; peak: after throughput and
  accuracy (the `peak_rss_bytes` of edgeq.bench/1);
- top-1 on the evaluation set, so a memory change never hides an accuracy change.
Run it with PYTHONPATH pointing at an older agent's tree to get the "before" figures.
Imports: edgeq.device (worker, settings); standard library.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from edgeq.device.settings import BenchSettings
from edgeq.device.worker import run_in_worker

MiB = 2.0**20


def _model_bytes(mem: dict[str, Any]) -> tuple[float, bool]:
    """(the model's footprint, whether it was derived from the per-step growth)."""
    if mem.get("model_memory_bytes") is not None:
        return float(mem["model_memory_bytes"]), False
    parts = [mem.get(k) or 0 for k in ("rss_growth_bytes_load", "rss_growth_bytes_allocate",
                                       "rss_growth_bytes_invoke")]
    return float(sum(parts)), True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", type=Path, help="artifacts dir (edgeq train + quantize)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh workers per model (3)")
    ap.add_argument("--eval-limit", type=int, default=None, help="evaluate on N images")
    args = ap.parse_args()
    settings = BenchSettings(warmup_runs_min=10, warmup_s_min=0.2, runs_min=50, run_s_min=0.5,
                             eval_limit=args.eval_limit)
    data = args.artifacts / "eval.npz"
    rows: dict[str, dict[str, list[float]]] = {}
    derived = False
    for _ in range(args.repeat):
        for kind in ("float32", "int8"):
            doc = run_in_worker("bench", args.artifacts / f"model_{kind}.tflite",
                                data_path=data if data.is_file() else None, settings=settings)
            mem = doc["memory"]
            model, was_derived = _model_bytes(mem)
            derived = derived or was_derived
            r = rows.setdefault(kind, {})
            for key, value in (("model", model), ("baseline", mem["rss_bytes_start"]),
                               ("peak b1", mem["peak_rss_bytes_batch1"]),
                               ("peak", mem["peak_rss_bytes"]),
                               ("top-1", (doc.get("accuracy") or {}).get("top1") or 0.0)):
                r.setdefault(key, []).append(float(value))
    med = {kind: {k: statistics.median(v) for k, v in r.items()} for kind, r in rows.items()}
    print(f"{args.artifacts}: median of {args.repeat} fresh workers per model "
          f"(MiB; model{'*' if derived else ''} = RSS growth, load to first inference)")
    print(f"{'':<8}{'model':>10}{'baseline':>10}{'peak b1':>10}{'peak':>10}{'top-1':>9}")
    for kind in ("float32", "int8"):
        m = med[kind]
        print(f"{kind:<8}{m['model'] / MiB:>10.2f}{m['baseline'] / MiB:>10.1f}"
              f"{m['peak b1'] / MiB:>10.1f}{m['peak'] / MiB:>10.1f}{m['top-1'] * 100:>8.2f}%")
    f32, i8 = med["float32"], med["int8"]
    print(f"{'int8/f32':<8}{i8['model'] / f32['model']:>9.3f}x{'':>10}"
          f"{i8['peak b1'] / f32['peak b1']:>9.3f}x{i8['peak'] / f32['peak']:>9.3f}x")
    if derived:
        print("* this agent predates model_memory_bytes: load + allocate + timed-invoke growth")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
