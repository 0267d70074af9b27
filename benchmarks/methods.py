"""The calibration-method table for the hard zoo model (mnist-skip-dsconv), from real runs.

Trains the model once if DIR has no model.keras (edgeq.host.train, --train-limit images), runs
`edgeq sweep` as a library call over the methods x weight granularities plus three single
mixed-precision variants of the converter's Min-Max settings (--float-fallback 2 per-tensor,
16x8 per-tensor and per-channel; one calibration size; DIR/sweep.json, the report's input), and
prints per variant: int8 top-1, the drop vs float32 in points with its paired 95% interval
(edgeq.host.stats, the report's numbers), McNemar's p against float32, against the per-tensor
converter Min-Max and against the converter Min-Max of the same granularity, the int8 size,
and an independent top-1 (a plain ai_edge_litert Interpreter loop over eval.npz, no edgeq
runtime code) that must agree. With --robustness it also runs edgeq.host.robustness over every
variant and adds the mean top-1 over all corruptions and severities. It compares the
converter's Min-Max file with ai-edge-quantizer's Min-Max file tensor by tensor and saves the
report's drop figure (--figure, default docs/methods.png).

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

MODEL = "mnist-skip-dsconv"
METHODS = ("minmax", "aeq-minmax", "percentile:99.9", "mse")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("runs/methods"))
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--calibration-size", type=int, default=500)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--robustness", action="store_true")
    ap.add_argument("--robustness-limit", type=int, default=2000)
    ap.add_argument("--figure", type=Path, default=Path("docs/methods.png"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from edgeq.host import plots, stats
    from edgeq.host.quantize import quantize
    from edgeq.host.sweep import sweep
    from edgeq.host.train import train

    d: Path = args.dir
    n_cal = args.calibration_size
    if not (d / "model.keras").is_file():
        t0 = time.perf_counter()
        rec = train(d, model_name=args.model, seed=0, train_limit=args.train_limit)
        print(f"trained {args.model} on {rec['train_count']} images in "
              f"{time.perf_counter() - t0:.0f} s: float32 top-1 "
              f"{rec['float32_test_top1'] * 100:.2f} %", flush=True)
    if not (d / "manifest.json").is_file():  # DIR itself: the converter's Min-Max, per-channel
        quantize(d, calibration_size=n_cal, eval_limit=args.eval_limit)
    t0 = time.perf_counter()
    extras = [("minmax", "per-tensor", n_cal, 2, "int8"),
              ("minmax", "per-tensor", n_cal, 0, "int16"),
              ("minmax", "per-channel", n_cal, 0, "int16")]
    doc = sweep(d, calibration_sizes=(n_cal,), granularities=("per-tensor", "per-channel"),
                methods=METHODS, extras=extras, eval_limit=args.eval_limit)
    points = doc["points"]
    rows = stats.method_comparison(doc)
    print(f"{len(rows)} variants quantized and evaluated in {time.perf_counter() - t0:.0f} s")
    labels = np.asarray(doc["labels"], dtype=np.int64)
    pf = np.asarray(doc["float32_predictions"], dtype=np.int64)
    ref = next(p for p in points if p["method"] == "minmax" and p["granularity"] == "per-tensor"
               and not p["float_fallback"] and p.get("activations", "int8") == "int8")
    pref = np.asarray(ref["int8_predictions"], dtype=np.int64)
    for p, r in zip(points, rows):
        pq = np.asarray(p["int8_predictions"], dtype=np.int64)
        r["p_vs_float32"] = stats.mcnemar(pf, pq, labels).p_value
        r["p_vs_pt_minmax"] = None if p is ref else stats.mcnemar(pref, pq, labels).p_value
        r["size_kb"] = p["int8_size_bytes"] / 1024
        r["independent_top1"] = independent_top1(d / p["dir"] / "model_int8.tflite",
                                                 d / p["dir"] / "eval.npz")
        r["int8_top1"] = p["int8_top1"]
    if args.robustness:
        from edgeq.host.robustness import robustness

        rb = robustness(d, variants=[d / p["dir"] for p in points], limit=args.robustness_limit)
        for r, m in zip(rows, rb["models"][2:]):
            r["mean_corrupted_top1"], r["mean_gap_points"] = (m["mean_corrupted_top1"],
                                                              m["mean_gap_points"])
        print(f"float32 mean corrupted top-1: {rb['models'][0]['mean_corrupted_top1'] * 100:.2f}"
              f" % ({args.robustness_limit} images x {len(rb['corruptions'])} corruptions x "
              f"{len(rb['severities'])} severities)")

    def fmt_p(v: Any) -> str:
        return "-" if v is None else f"{v:.2g}"

    print(f"\n{args.model}: float32 top-1 {points[0]['float32_top1'] * 100:.2f} % on "
          f"{labels.size} test images, {n_cal} calibration images")
    head = ("| variant | int8 top-1 % | drop (points) [95% CI] | McNemar p vs float32 | p vs "
            "per-tensor Min-Max | p vs Min-Max (same weights) | int8 KB | independent LiteRT "
            "top-1 % |" + (" mean corrupted top-1 % | gap vs float32 (points) |"
                           if args.robustness else ""))
    print(head)
    print("|---|" + "---:|" * (head.count("|") - 2))
    for r in rows:
        line = (f"| {r['variant']} | {r['int8_top1_pct']:.2f} | {r['drop_pp']:.2f} "
                f"[{r['drop_ci_low_pp']:.2f}, {r['drop_ci_high_pp']:.2f}] | "
                f"{fmt_p(r['p_vs_float32'])} | {fmt_p(r['p_vs_pt_minmax'])} | "
                f"{fmt_p(r['mcnemar_p'])} | {r['size_kb']:.1f} | "
                f"{r['independent_top1'] * 100:.2f} |")
        if args.robustness:
            line += f" {r['mean_corrupted_top1'] * 100:.2f} | {r['mean_gap_points']:.2f} |"
        print(line)
    bad = [r["variant"] for r in rows if abs(r["independent_top1"] - r["int8_top1"]) > 1e-9]
    print(f"independent LiteRT evaluation agrees with edgeq's on every variant: "
          f"{'yes' if not bad else 'NO: ' + ', '.join(bad)}")
    for gran in ("per-tensor", "per-channel"):
        conv = next(p for p in points if p["method"] == "minmax" and p["granularity"] == gran
                    and not p["float_fallback"] and p.get("activations", "int8") == "int8")
        aeq = next(p for p in points if p["method"] == "aeq-minmax" and p["granularity"] == gran
                   and p.get("activations", "int8") == "int8")
        print(f"\nconverter Min-Max ({conv['int8_top1'] * 100:.2f} %) vs ai-edge-quantizer "
              f"Min-Max ({aeq['int8_top1'] * 100:.2f} %), {gran}:")
        for line in converter_vs_aeq(d / conv["dir"] / "model_int8.tflite",
                                     d / aeq["dir"] / "model_int8.tflite"):
            print("  " + line)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    args.figure.write_bytes(plots.method_drops(rows))
    print(f"\nfigure: {args.figure}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
