"""The calibration-method table for the hard zoo model (mnist-gated-dsconv), from real runs.

Trains the model once if DIR has no model.keras (edgeq.host.train, --train-limit images), runs
`edgeq sweep` as a library call over the methods x weight granularities (one calibration size,
no fallback; DIR/sweep.json, the report's input), adds two mixed-precision variants of the
converter's Min-Max settings (--float-fallback 2 and --activations int16, per-channel), and
prints per variant: method, granularity, float32 and int8 top-1 (edgeq's host evaluation,
LiteRT), the drop in points, the int8 size, and an independent top-1 (a plain
ai_edge_litert Interpreter loop over eval.npz, no edgeq runtime code) that must agree. With
--robustness it also runs edgeq.host.robustness over every variant and adds the mean
top-1 over all corruptions and severities. It compares the converter's Min-Max file with
ai-edge-quantizer's Min-Max file tensor by tensor and saves a bar chart of the drop per method
(--figure, default docs/methods.png).

    .venv/bin/python benchmarks/methods.py [--dir runs/methods] [--robustness]
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "mnist-gated-dsconv"
METHODS = ("minmax", "aeq-minmax", "percentile:99.9", "percentile:99.99", "mse", "moving-average")


def independent_top1(path: Path, eval_npz: Path) -> float:
    """Top-1 of one .tflite on eval.npz with a bare ai_edge_litert Interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    data = np.load(eval_npz)
    images, labels = data["images"], data["labels"].astype(np.int64)
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    correct = 0
    for k in range(len(labels)):
        x = images[k:k + 1].astype(np.float32).reshape(inp["shape"])
        if inp["dtype"] != np.float32:
            s, z = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / s + z), info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        correct += int(np.argmax(it.get_tensor(out["index"])[0]) == labels[k])
    return correct / len(labels)


def converter_vs_aeq(a: Path, b: Path) -> list[str]:
    """How the converter's and ai-edge-quantizer's Min-Max int8 files differ."""
    from edgeq.host.tflite_file import read_tflite

    fa, fb = read_tflite(a), read_tflite(b)
    lines = [f"ops: converter {len(fa.operators)} {sorted({o.name for o in fa.operators})}; "
             f"ai-edge-quantizer {len(fb.operators)} {sorted({o.name for o in fb.operators})}"]
    ta = {t.name: t for t in fa.tensors if t.scales and not t.is_constant}
    tb = {t.name: t for t in fb.tensors if t.scales and not t.is_constant}
    common = sorted(set(ta) & set(tb))
    diff = [n for n in common if abs(ta[n].scales[0] - tb[n].scales[0]) > 0.01 * ta[n].scales[0]
            or ta[n].zero_points[0] != tb[n].zero_points[0]]
    lines.append(f"activation tensors with the same name: {len(common)}; scale (>1 %) or zero "
                 f"point differs on {len(diff)}")
    for n in diff[:6]:
        lines.append(f"  {n[:60]}: converter s={ta[n].scales[0]:.6g} z={ta[n].zero_points[0]}"
                     f", aeq s={tb[n].scales[0]:.6g} z={tb[n].zero_points[0]}")
    wa = {t.name: t for t in fa.tensors if t.is_constant and t.dtype == "INT32"}
    wb = {t.name: t for t in fb.tensors if t.is_constant and t.dtype == "INT32"}
    lines.append(f"int32 bias tensors: converter {len(wa)}, aeq {len(wb)}; sizes "
                 f"{fa.size_bytes} vs {fb.size_bytes} bytes")
    return lines


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['method']}\n{r['granularity']}" for r in rows]
    drops = [r["drop_points"] for r in rows]
    colors = ["#d62728" if r["method"] == "minmax" else "#1f77b4" for r in rows]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.62 * len(rows)), 4.2))
    ax.bar(range(len(rows)), drops, color=colors)
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("top-1 drop vs float32 (points)")
    ax.set_title(f"{MODEL}: int8 accuracy drop per calibration method (red: converter Min-Max)")
    ax.axhline(0, color="black", linewidth=0.6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("runs/methods"))
    ap.add_argument("--train-limit", type=int, default=20000)
    ap.add_argument("--calibration-size", type=int, default=500)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--robustness", action="store_true")
    ap.add_argument("--robustness-limit", type=int, default=2000)
    ap.add_argument("--figure", type=Path, default=Path("docs/methods.png"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from edgeq.host.evaluate import evaluate
    from edgeq.host.quantize import quantize
    from edgeq.host.sweep import SWEEP_DIR, sweep
    from edgeq.host.train import train

    d: Path = args.dir
    if not (d / "model.keras").is_file():
        t0 = time.perf_counter()
        rec = train(d, model_name=MODEL, seed=0, train_limit=args.train_limit)
        print(f"trained {MODEL} on {args.train_limit} images in {time.perf_counter() - t0:.0f} s:"
              f" float32 top-1 {rec['float32_test_top1'] * 100:.2f} %", flush=True)
    if not (d / "manifest.json").is_file():  # DIR itself: the converter's Min-Max, per-channel
        quantize(d, calibration_size=args.calibration_size, eval_limit=args.eval_limit)
    t0 = time.perf_counter()
    doc = sweep(d, calibration_sizes=(args.calibration_size,),
                granularities=("per-tensor", "per-channel"), methods=METHODS,
                eval_limit=args.eval_limit)
    rows = [dict(p) for p in doc["points"]]
    for extra, kw in (("minmax+fallback2", {"float_fallback": 2}),
                      ("minmax+int16", {"activations": "int16"})):
        out = d / SWEEP_DIR / f"{extra}-per-channel-cal{args.calibration_size}"
        m = quantize(d, out_dir=out, calibration_size=args.calibration_size,
                     eval_limit=args.eval_limit, **kw)
        r = evaluate(out, limit=args.eval_limit)
        rows.append({"method": extra, "granularity": "per-channel", "dir": str(out.relative_to(d)),
                     "float32_top1": r["models"]["float32"]["top1"],
                     "int8_top1": r["models"]["int8"]["top1"],
                     "drop_points": r["drop_points"],
                     "int8_size_bytes": m["models"]["int8"]["size_bytes"],
                     "float_layers": m["precision"]["float_layers"]})
    print(f"{len(rows)} variants quantized and evaluated in {time.perf_counter() - t0:.0f} s")
    for r in rows:
        r["independent_top1"] = independent_top1(d / r["dir"] / "model_int8.tflite",
                                                 d / r["dir"] / "eval.npz")
    mean_corrupted: dict[str, Any] = {}
    if args.robustness:
        from edgeq.host.robustness import robustness

        rb = robustness(d, variants=[d / r["dir"] for r in rows], limit=args.robustness_limit)
        f32 = rb["models"][0]
        mean_corrupted["float32"] = f32["mean_corrupted_top1"]
        for r, m in zip(rows, rb["models"][2:]):
            r["mean_corrupted_top1"], r["mean_gap_points"] = (m["mean_corrupted_top1"],
                                                              m["mean_gap_points"])
    head = ("| method | weights | float32 top-1 % | int8 top-1 % | drop (points) | int8 KB "
            "| independent LiteRT top-1 % |" + (" mean corrupted int8 top-1 % | gap vs "
                                                "float32 (points) |" if args.robustness else ""))
    print()
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        line = (f"| {r['method']} | {r['granularity']} | {r['float32_top1'] * 100:.2f} | "
                f"{r['int8_top1'] * 100:.2f} | {r['drop_points']:.2f} | "
                f"{r['int8_size_bytes'] / 1024:.1f} | {r['independent_top1'] * 100:.2f} |")
        if args.robustness:
            line += f" {r['mean_corrupted_top1'] * 100:.2f} | {r['mean_gap_points']:.2f} |"
        print(line)
    if mean_corrupted:
        print(f"\nfloat32 mean corrupted top-1: {mean_corrupted['float32'] * 100:.2f} % "
              f"({args.robustness_limit} images x 5 corruptions x 3 severities)")
    bad = [r["method"] for r in rows if abs(r["independent_top1"] - r["int8_top1"]) > 1e-9]
    print(f"independent LiteRT evaluation agrees with edgeq's: {'yes' if not bad else bad}")
    conv = next(r for r in rows if r["method"] == "minmax" and r["granularity"] == "per-channel")
    aeq = next(r for r in rows if r["method"] == "aeq-minmax" and r["granularity"] == "per-channel")
    print("\nconverter Min-Max vs ai-edge-quantizer Min-Max (per-channel):")
    for line in converter_vs_aeq(d / conv["dir"] / "model_int8.tflite",
                                 d / aeq["dir"] / "model_int8.tflite"):
        print("  " + line)
    figure(rows, args.figure)
    print(f"\nfigure: {args.figure}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
