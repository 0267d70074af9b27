"""How long `edgeq deploy` takes and how many bytes it sends: a first and a repeated deploy.

    python benchmarks/deploy_time.py ARTIFACTS_DIR [--host local|H] [--ssh-config F]
                                     [--device-dir D] [--offline-wheels] [--repeat N]

Deploys ARTIFACTS_DIR into a fresh device directory (default: a temp dir for --host local,
~/.edgeq-bench-deploy on an SSH host, removed first), then deploys the same artifacts again
N times. Prints wall time, bytes sent (total / models / wheels) and bytes skipped as
unchanged for each run; the repeated deploys must send 0 model bytes.
Imports: edgeq.host (link, deploy), edgeq.device.store; standard library.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from edgeq.device.store import Layout
from edgeq.host.deploy import deploy
from edgeq.host.link import open_connection, resolve_device_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", type=Path, help="artifacts dir (edgeq train + quantize)")
    ap.add_argument("--host", default="local", help="local, or an SSH target / alias")
    ap.add_argument("--ssh-config", type=Path, default=None, help="ssh config file")
    ap.add_argument("--device-dir", default=None, help="device directory (removed first)")
    ap.add_argument("--offline-wheels", action="store_true",
                    help="push wheels downloaded on this host")
    ap.add_argument("--repeat", type=int, default=3, help="repeated deploys (default 3)")
    args = ap.parse_args()

    tmp = None
    if args.device_dir is None:
        if args.host == "local":
            tmp = tempfile.TemporaryDirectory(prefix="edgeq-deploy-bench-")
            args.device_dir = f"{tmp.name}/edgeq"
        else:
            args.device_dir = "~/.edgeq-bench-deploy"
    with open_connection(args.host, ssh_config=args.ssh_config) as conn:
        d = resolve_device_dir(conn, args.device_dir)
        conn.run(Layout(d).agent_argv("stop"))
        conn.run(["rm", "-rf", "--", d])
        rows = []
        for i in range(1 + args.repeat):
            t = time.perf_counter()
            doc = deploy(conn, args.artifacts, device_dir=d,
                         offline_wheels=True if args.offline_wheels else None)
            rows.append((time.perf_counter() - t, doc))
        conn.run(Layout(d).agent_argv("stop"))
        if tmp is None:
            conn.run(["rm", "-rf", "--", d])
    print(f"device {rows[0][1]['device']} ({rows[0][1]['arch']}, Python {rows[0][1]['python']}, "
          f"{rows[0][1]['runtime']}, venv {rows[0][1]['venv']})")
    print(f"{'run':>8} {'wall_s':>8} {'sent_bytes':>12} {'models_bytes':>13} "
          f"{'wheels_bytes':>13} {'skipped_bytes':>14}")
    for i, (secs, doc) in enumerate(rows):
        print(f"{'first' if i == 0 else f'again {i}':>8} {secs:8.2f} {doc['sent_bytes']:12d} "
              f"{doc['models_bytes_sent']:13d} {doc['wheels_bytes_sent']:13d} "
              f"{doc['skipped_bytes']:14d}")
    again = [s for s, _ in rows[1:]]
    if again:
        print(f"repeated deploy: median {statistics.median(again):.2f} s, model bytes sent "
              f"{sum(doc['models_bytes_sent'] for _, doc in rows[1:])}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
