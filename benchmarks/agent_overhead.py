"""How much does the agent's measurement add? Prints figures, asserts nothing.

For each model (float32 and int8 of an artifacts dir), in the same run, alternating rounds:
  bare    a plain `set_tensor / invoke / get_tensor` loop on the same model file: its p50
          with each run clocked (perf_counter_ns around the three calls, nothing else), and
          its mean from one unclocked block of the same number of runs;
  agent   the p50 latency that `edgeq.device.bench.run_benchmark` reports (in this process);
  daemon  the p50 the real daemon reports (its worker process), reached over its Unix socket.
The ratios agent/bare and daemon/bare are the measurement overhead (1.00 = none).
It also prints the agent's own memory: the daemon's RSS/USS idle and after the benches, and
the worker's peak RSS as reported, next to this bare process's RSS.

    python benchmarks/agent_overhead.py [--artifacts DIR] [--rounds 5] [--threads 1]
Without --artifacts a small model is trained and quantized once with the host pipeline
(edgeq.host.train/quantize, ~15 s) into $TMPDIR/edgeq-overhead-artifacts.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from edgeq.device.bench import BenchSettings, run_benchmark
from edgeq.device.client import AgentClient
from edgeq.device.errors import AgentConnectionError
from edgeq.device.evaldata import load_eval_data
from edgeq.device.runtime import load_model
from edgeq.device.store import Store
from edgeq.host.artifacts import EVAL_FILE, MANIFEST_FILE


def ensure_artifacts(path: Path | None) -> Path:
    if path is not None:
        return path
    out = Path(tempfile.gettempdir()) / "edgeq-overhead-artifacts"
    if (out / MANIFEST_FILE).exists():
        return out
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeq.host.quantize import quantize
    from edgeq.host.train import train

    out.mkdir(parents=True, exist_ok=True)
    print(f"training a small model into {out} ...", flush=True)
    train(out, model_name="mnist-cnn", epochs=1, seed=0, train_limit=3000)
    quantize(out, calibration_size=100, seed=0, eval_limit=1000)
    return out


def bare_loop(model_path: Path, image: np.ndarray, *, threads: int, runs: int,
              blocks: int) -> tuple[float, float]:
    """(p50 ms of `runs` individually clocked bare invokes, mean ms/run over `blocks` blocks
    of `runs` unclocked invokes), on a freshly loaded model, after a warm-up."""
    m = load_model(model_path, threads=threads)
    m.set_batch(1)
    x = m.prepare_input(image)
    it = m.interpreter
    in_idx, out_idx = m._in_index, m._out_index
    clock = time.perf_counter_ns
    for _ in range(max(20, runs // 10)):  # warm-up
        it.set_tensor(in_idx, x)
        it.invoke()
        it.get_tensor(out_idx)
    each = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = clock()
        it.set_tensor(in_idx, x)
        it.invoke()
        it.get_tensor(out_idx)
        each[i] = clock() - t0
    block_means = []
    for _ in range(blocks):
        t0 = clock()
        for _ in range(runs):
            it.set_tensor(in_idx, x)
            it.invoke()
            it.get_tensor(out_idx)
        block_means.append((clock() - t0) / 1e6 / runs)
    return float(np.median(each)) / 1e6, (statistics.median(block_means) if block_means
                                           else float("nan"))


BARE_PROCESS = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
d = it.get_input_details()[0]
x = np.zeros(d["shape"], d["dtype"])
for _ in range(1000):
    it.set_tensor(d["index"], x); it.invoke(); it.get_tensor(it.get_output_details()[0]["index"])
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


def bare_process_peak_bytes(model_path: Path) -> int:
    """VmHWM of a fresh process that only loads the model and invokes it 1000 times."""
    out = subprocess.run([sys.executable, "-c", BARE_PROCESS, str(model_path)],
                         capture_output=True, check=True, timeout=120)
    return int(out.stdout.decode().strip().splitlines()[-1]) * 1024


def start_daemon(home: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "edgeq.device", "--home", str(home), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with AgentClient.connect_unix(home / "agent.sock", 5) as c:
                c.hello()
                return proc
        except (AgentConnectionError, OSError):
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the daemon did not start")


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run-s-min", type=float, default=1.0)
    args = ap.parse_args()

    art = ensure_artifacts(args.artifacts)
    models = {"float32": art / "model_float32.tflite", "int8": art / "model_int8.tflite"}
    images, _ = load_eval_data(art / EVAL_FILE)
    image = images[:1]
    settings = BenchSettings(threads=args.threads, warmup_runs_min=20, warmup_s_min=0.2,
                             runs_min=100, run_s_min=args.run_s_min, runs_max=100_000)

    home = Path(tempfile.mkdtemp(prefix="edgeq-overhead-home-"))
    store = Store(home)
    shas = {k: store.add_model(p) for k, p in models.items()}
    daemon = start_daemon(home)
    dproc = psutil.Process(daemon.pid)
    idle = dproc.memory_full_info()
    worker_peaks: dict[str, list[int]] = {k: [] for k in models}
    worker_peaks_b1: dict[str, list[int]] = {k: [] for k in models}
    rows = []
    try:
        with AgentClient.connect_unix(home / "agent.sock", 600) as client:
            client.hello()
            for kind, path in models.items():
                # as many bare runs as the agent will time in run_s_min
                probe, _ = bare_loop(path, image, threads=args.threads, runs=50, blocks=0)
                n_runs = max(100, int(args.run_s_min * 1000 / max(probe, 1e-4)))
                bare_p50, bare_mean, agent_p50, agent_mean, daemon_p50 = [], [], [], [], []
                for _ in range(args.rounds):
                    p50, mean = bare_loop(path, image, threads=args.threads, runs=n_runs,
                                          blocks=1)
                    bare_p50.append(p50)
                    bare_mean.append(mean)
                    doc = run_benchmark(path, settings=settings)
                    agent_p50.append(doc["timing"]["latency_ms_p50"])
                    agent_mean.append(doc["timing"]["latency_ms_mean"])
                    d = client.call("bench", model=shas[kind], threads=args.threads,
                                    warmup_runs_min=20, warmup_s_min=0.2, runs_min=100,
                                    run_s_min=args.run_s_min, runs_max=100_000)
                    daemon_p50.append(d["timing"]["latency_ms_p50"])
                    worker_peaks[kind].append(d["memory"]["peak_rss_bytes"])
                    worker_peaks_b1[kind].append(d["memory"]["peak_rss_bytes_batch1"])
                med = statistics.median
                rows.append((kind, med(bare_p50), med(agent_p50), med(daemon_p50),
                             med(bare_mean), med(agent_mean), n_runs))
        busy = dproc.memory_full_info()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)

    bare_peaks = {kind: bare_process_peak_bytes(path) for kind, path in models.items()}
    print(f"\nmachine {os.uname().machine}, {os.cpu_count()} CPUs, threads {args.threads}, "
          f"{args.rounds} alternating rounds, medians over rounds\n")
    print(f"{'model':8} {'bare p50':>9} {'agent p50':>10} {'daemon p50':>11} "
          f"{'agent/bare':>11} {'daemon/bare':>12}   {'bare mean':>9} {'agent mean':>10} "
          f"{'ratio':>6}")
    for kind, b50, a50, d50, bmean, amean, _n_runs in rows:
        print(f"{kind:8} {b50:9.4f} {a50:10.4f} {d50:11.4f} {a50 / b50:11.3f} "
              f"{d50 / b50:12.3f}   {bmean:9.4f} {amean:10.4f} {amean / bmean:6.3f}")
    print("(ms; bare p50: a minimal set_tensor/invoke/get_tensor loop, each run clocked; bare "
          "mean: the same loop unclocked, timed as one block; means include the scheduling "
          "noise of a shared machine, p50s do not)")
    print("\nagent memory")
    print(f"  daemon idle        RSS {mib(idle.rss)}  USS {mib(idle.uss)}")
    print(f"  daemon after bench RSS {mib(busy.rss)}  USS {mib(busy.uss)}")
    print("  worker peak RSS as the worker reports it (whole run incl. batch-32 throughput / "
          "after the batch-1 timing only) vs a bare LiteRT process (python + numpy + LiteRT + "
          "the model, 1000 batch-1 invokes):")
    for kind, peaks in worker_peaks.items():
        print(f"    {kind:8} worker {mib(max(peaks))} / {mib(max(worker_peaks_b1[kind]))}   "
              f"bare {mib(bare_peaks[kind])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
