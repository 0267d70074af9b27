"""How long the README's main command takes, stage by stage, on this machine.

Calls edgeq.host.run.run (what `edgeq run --host local` calls) twice, with a fresh output
directory, device directory and history database in a temp dir: the first run trains,
quantizes, evaluates, deploys and benchmarks; the second finds the artifacts complete and the
deployment unchanged, so it shows what a re-run costs (in this process TensorFlow is already
imported by then; a fresh `edgeq run` also pays its import, a few seconds). Prints each
stage's seconds as the library measured them and the wall time of each call.

    python benchmarks/end_to_end.py                      # small: 5000 images, 1 epoch
    python benchmarks/end_to_end.py --full               # the command's defaults
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeq.host.cli.ui import native_logs_captured
from edgeq.host.history import History
from edgeq.host.run import STAGES, RunResult, run


def run_once(out: Path, device_dir: Path, history: History, args: argparse.Namespace
             ) -> tuple[float, RunResult]:
    limits = {} if args.full else {"train_limit": args.train_limit, "epochs": args.epochs,
                                   "eval_limit": args.eval_limit}
    t0 = time.perf_counter()
    with native_logs_captured():  # the converter's and LiteRT's C++ log lines
        result = run(out, host="local", device_dir=str(device_dir), history=history, **limits)
    return time.perf_counter() - t0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="use edgeq run's defaults (all training images, default epochs)")
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-limit", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgeq-e2e-") as tmp:
        tmpdir = Path(tmp)
        out, device_dir = tmpdir / "runs" / "mnist", tmpdir / "device"
        history = History(tmpdir / "history.sqlite3")
        what = ("defaults" if args.full else f"{args.train_limit} training images, "
                f"{args.epochs} epoch(s), {args.eval_limit} eval images")
        print(f"edgeq run --host local ({what})")
        print(f"{'invocation':<12}" + "".join(f"{s:>10}" for s in STAGES)
              + f"{'wall':>10}   (seconds)")
        try:
            results = [(label, *run_once(out, device_dir, history, args))
                       for label in ("first", "second")]
        finally:  # run's deploy started a daemon for the temp device dir: stop it
            subprocess.run([sys.executable, "-m", "edgeq.device", "--home", str(device_dir),
                            "stop"], capture_output=True, env=dict(os.environ))
        for label, wall_s, result in results:
            cells = "".join(f"{result.seconds.get(s, float('nan')):>10.1f}" for s in STAGES)
            print(f"{label:<12}{cells}{wall_s:>10.1f}")
        doc = results[-1][2].compare
        f32, i8 = doc["models"]["float32"], doc["models"]["int8"]
        print(f"last run: {doc['device'].get('machine')} via {doc['settings'].get('path')}, "
              f"p50 float32 {f32['latency_ms_p50']:.3f} ms / int8 {i8['latency_ms_p50']:.3f} ms, "
              f"top-1 {f32['accuracy'] * 100:.2f} % / {i8['accuracy'] * 100:.2f} %, "
              f"agreement {doc['agreement'] * 100:.2f} %")


if __name__ == "__main__":
    main()
