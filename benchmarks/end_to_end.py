"""How long the README's main command takes, stage by stage, on this machine.

Runs `edgeq run --host local` twice as a user would (a subprocess, fresh output directory,
device directory and history database in a temp dir): the first run trains, quantizes,
evaluates, deploys and benchmarks; the second finds the artifacts complete and the
deployment unchanged, so it shows what a re-run costs. Prints each stage's seconds (as
reported by the command) and the wall time of each invocation.

    python benchmarks/end_to_end.py                      # small: 5000 images, 1 epoch
    python benchmarks/end_to_end.py --full               # the command's defaults
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, float], dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"edgeq run failed with exit status {proc.returncode}")
    match = re.search(r"stage times: (.*)", proc.stderr)
    stages: dict[str, float] = {}
    if match:
        for part in match.group(1).split(","):
            name, value, _unit = part.strip().split(" ")
            stages[name] = float(value)
    return wall_s, stages, json.loads(proc.stdout)


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
        env = dict(os.environ, EDGEQ_HISTORY_DB=str(tmpdir / "history.sqlite3"),
                   COLUMNS="200", TF_CPP_MIN_LOG_LEVEL="2")
        argv = [sys.executable, "-m", "edgeq.host", "run", "--host", "local",
                "--out", str(tmpdir / "runs" / "mnist"), "--device-dir", str(tmpdir / "device"),
                "--json"]
        if not args.full:
            argv += ["--train-limit", str(args.train_limit), "--epochs", str(args.epochs),
                     "--eval-limit", str(args.eval_limit)]
        what = ("defaults" if args.full else f"{args.train_limit} training images, "
                f"{args.epochs} epoch(s), {args.eval_limit} eval images")
        print(f"edgeq run --host local ({what})")
        print(f"{'invocation':<12}{'train':>9}{'quantize':>10}{'evaluate':>10}{'deploy':>9}"
              f"{'bench':>9}{'wall':>9}   (seconds)")
        try:
            results = [(label, *run_once(argv, env)) for label in ("first", "second")]
        finally:  # edgeq deploy started a daemon for the temp device dir: stop it
            subprocess.run([sys.executable, "-m", "edgeq.device", "--home",
                            str(tmpdir / "device"), "stop"], capture_output=True, env=env)
        for label, wall_s, stages, doc in results:
            cells = "".join(f"{stages.get(k, float('nan')):>{w}.1f}" for k, w in (
                ("train", 9), ("quantize", 10), ("evaluate", 10), ("deploy", 9), ("bench", 9)))
            print(f"{label:<12}{cells}{wall_s:>9.1f}")
        f32, i8 = doc["models"]["float32"], doc["models"]["int8"]
        print(f"last run: {doc['device'].get('machine')} via {doc['settings'].get('path')}, "
              f"p50 float32 {f32['latency_ms_p50']:.3f} ms / int8 {i8['latency_ms_p50']:.3f} ms, "
              f"top-1 {f32['accuracy'] * 100:.2f} % / {i8['accuracy'] * 100:.2f} %, "
              f"agreement {doc['agreement'] * 100:.2f} %")


if __name__ == "__main__":
    main()
