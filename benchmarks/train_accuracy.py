"""Where the default model's accuracy lands and how long the pipeline takes, on this machine.

Runs the real pipeline at full size: train mnist-cnn on all 60,000 training images (default
epochs), quantize (500 seeded calibration images, per-channel), evaluate both .tflite files with
LiteRT on all 10,000 test images, and prints the figures the issue's "done means" asks about:
float32 and int8 top-1, the drop in points, agreement, sizes and their ratio, full-integer
check, and the wall time of each stage.

    python benchmarks/train_accuracy.py [--out DIR] [--epochs N] [--seed S] [--per-tensor]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="artifacts dir (default: a temp dir)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: the model's)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for training and calibration")
    parser.add_argument("--calibration-size", type=int, default=500, help="calibration images")
    parser.add_argument(
        "--per-tensor", action="store_true", help="per-tensor weights instead of per-channel"
    )
    args = parser.parse_args()

    from edgeq.host.evaluate import evaluate
    from edgeq.host.quantize import quantize
    from edgeq.host.tflite_file import full_integer_problems, read_tflite
    from edgeq.host.train import train

    out = args.out or Path(tempfile.mkdtemp(prefix="edgeq-bench-"))
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
        f"python={platform.python_version()}"
    )
    print(f"artifacts: {out}")

    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(f"  train batch {done}/{total}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    record = train(out, epochs=args.epochs, seed=args.seed, progress=progress)
    t1 = time.perf_counter()
    manifest = quantize(
        out, calibration_size=args.calibration_size, seed=args.seed, per_channel=not args.per_tensor
    )
    t2 = time.perf_counter()
    result = evaluate(out)
    t3 = time.perf_counter()

    f32, i8 = result["models"]["float32"], result["models"]["int8"]
    problems = full_integer_problems(read_tflite(out / "model_int8.tflite"))
    print(
        f"model: {record['model_name']} ({record['params']} parameters), "
        f"epochs={record['epochs']}, "
        f"seed={record['seed']}, train images={record['train_count']}"
    )
    print(
        f"train time: {record['train_time_s']:.1f} s "
        f"({record['train_time_s'] / record['epochs']:.1f} s/epoch); "
        f"train stage wall {t1 - t0:.1f} s"
    )
    print(
        f"float32 top-1 (Keras, {record['test_count']} test images): "
        f"{100 * record['float32_test_top1']:.2f} %"
    )
    print(
        f"quantize wall: {t2 - t1:.1f} s (calibration {manifest['calibration']['size']} images, "
        f"{'per-channel' if manifest['calibration']['per_channel'] else 'per-tensor'})"
    )
    print(
        f"evaluate wall: {t3 - t2:.1f} s on {f32['count']} images with {result['runtime']['name']} "
        f"{result['runtime']['version']}"
    )
    print(f"float32 top-1 (LiteRT): {100 * f32['top1']:.2f} %   size {f32['size_bytes']} bytes")
    print(f"int8    top-1 (LiteRT): {100 * i8['top1']:.2f} %   size {i8['size_bytes']} bytes")
    print(
        f"drop: {result['drop_points']:.2f} points (goal <= 0.2); "
        f"agreement {100 * result['agreement']:.2f} %"
    )
    print(f"int8 / float32 size: {100 * result['size_ratio']:.1f} % (goal <= 30 %)")
    print(
        f"int8 full-integer: {'yes' if not problems else 'NO: ' + '; '.join(problems)}; "
        f"int8 input {i8['input']['dtype']} output {i8['output']['dtype']}"
    )
    ok = (
        record["float32_test_top1"] >= 0.99
        and result["drop_points"] <= 0.2
        and result["size_ratio"] <= 0.30
        and not problems
    )
    print("all goals met" if ok else "GOALS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
