"""How long `edgeq deploy` takes: first and repeated deploys per board, and 1 vs 2 boards at once.

    python benchmarks/deploy_time.py ARTIFACTS_DIR [--inventory FILE [--limit P] | --host H ...]
                                     [--ssh-config F] [--device-dir D] [--offline-wheels]
                                     [--repeat N]

Boards: the hosts of an Ansible inventory (edgeq.host.inventory), `--host` values, or by
default two boards on this machine (`--host local` into two temp device directories). Each
board's device directory (its `edgeq_device_dir`, else --device-dir, default
~/.edgeq-bench-deploy; a temp dir for local boards) is REMOVED first, so every first deploy
builds everything (venv, runtime, daemon).

Part 1, per board alone: a first deploy, then N repeated deploys of the same artifacts
(which take the one-command "unchanged" path: edgeq.host.deploy's check). Prints wall time,
bytes sent and whether the deploy was unchanged.
Part 2, the fleet (edgeq.host.fleet.deploy_fleet, one thread and connection per board): the
wall time of a first and of a repeated deploy to the first board alone, then to the first two
boards at once, and their ratio (2 boards / 1 board; 2.0 would mean no parallelism).
Imports: edgeq.host (deploy, fleet, inventory, link), edgeq.device.store; standard library.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from edgeq.device.store import Layout
from edgeq.host.deploy import deploy
from edgeq.host.fleet import deploy_fleet
from edgeq.host.inventory import Target, from_hosts, load_inventory, select
from edgeq.host.link import open_connection, resolve_device_dir

DEFAULT_DEVICE_DIR = "~/.edgeq-bench-deploy"


def _connect(target: Target, ssh_config: Optional[Path]) -> Any:
    opts: dict[str, Any] = {"ssh_config": ssh_config}
    if target.key_file is not None:
        opts["identity_file"] = target.key_file
    return open_connection(target.spec, **opts)


def _wipe(target: Target, ssh_config: Optional[Path]) -> None:
    """Stop the board's daemon and remove its device directory (a first deploy follows)."""
    with _connect(target, ssh_config) as conn:
        d = resolve_device_dir(conn, target.device_dir or DEFAULT_DEVICE_DIR)
        conn.run(Layout(d).agent_argv("stop"), timeout_s=60)
        conn.run(["rm", "-rf", "--", d], timeout_s=120)


def _deploy_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"offline_wheels": True if args.offline_wheels else None}


def per_board(target: Target, args: argparse.Namespace) -> list[tuple[float, dict[str, Any]]]:
    """(wall s, deploy doc) of a first deploy and `args.repeat` repeated ones to one board."""
    _wipe(target, args.ssh_config)
    rows = []
    for _ in range(1 + args.repeat):
        t = time.perf_counter()
        with _connect(target, args.ssh_config) as conn:  # a new connection, as the CLI does
            doc = deploy(conn, args.artifacts, device_dir=target.device_dir or DEFAULT_DEVICE_DIR,
                         **_deploy_options(args))
        rows.append((time.perf_counter() - t, doc))
    return rows


def fleet_wall_s(targets: list[Target], args: argparse.Namespace, *, fresh: bool) -> float:
    """Wall time of one deploy_fleet to `targets` (after wiping them when `fresh`)."""
    if fresh:
        for t in targets:
            _wipe(t, args.ssh_config)
    t0 = time.perf_counter()
    doc = deploy_fleet(targets, args.artifacts, forks=len(targets),
                       device_dir=DEFAULT_DEVICE_DIR,
                       connect_options={"ssh_config": args.ssh_config},
                       deploy_options=_deploy_options(args))
    wall_s = time.perf_counter() - t0
    failed = [b for b in doc["boards"] if not b["ok"]]
    if failed:
        raise SystemExit(f"deploy failed on {failed[0]['board']}: {failed[0]['error']}")
    return wall_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", type=Path, help="artifacts dir (edgeq train + quantize)")
    ap.add_argument("--inventory", type=Path, default=None, help="an Ansible inventory file")
    ap.add_argument("--limit", default=None, help="an Ansible host pattern (with --inventory)")
    ap.add_argument("--host", action="append", default=[], help="a board (repeatable)")
    ap.add_argument("--ssh-config", type=Path, default=None, help="ssh config file")
    ap.add_argument("--device-dir", default=None,
                    help=f"device directory when the inventory names none (REMOVED first; "
                         f"default {DEFAULT_DEVICE_DIR}, a temp dir for local boards)")
    ap.add_argument("--offline-wheels", action="store_true",
                    help="push wheels downloaded on this host")
    ap.add_argument("--repeat", type=int, default=3, help="repeated deploys per board")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="edgeq-deploy-bench-")
    if args.inventory is not None:
        targets = select(load_inventory(args.inventory), args.limit)
    elif args.host:
        targets = from_hosts(args.host)
    else:
        targets = [Target(name=f"local{i}", host="local") for i in (1, 2)]
    targets = [replace(t, device_dir=t.device_dir or args.device_dir
                       or (f"{tmp.name}/{t.name}" if t.spec == "local" else None))
               for t in targets]

    print(f"{'board':>10} {'run':>8} {'wall_s':>8} {'sent_bytes':>12} {'unchanged':>9}  device")
    for target in targets:
        rows = per_board(target, args)
        for i, (secs, doc) in enumerate(rows):
            print(f"{target.name:>10} {'first' if i == 0 else f'again {i}':>8} {secs:8.2f} "
                  f"{doc['sent_bytes']:12d} {str(doc['unchanged']):>9}  {doc['arch']}, "
                  f"{doc['runtime']}, venv {doc['venv']}")
        again = [s for s, _ in rows[1:]]
        if again:
            print(f"{target.name:>10} repeated deploy: median {statistics.median(again):.3f} s "
                  f"(first {rows[0][0]:.2f} s)")

    if len(targets) >= 2:
        pair = targets[:2]
        print(f"\nfleet deploy (edgeq.host.fleet.deploy_fleet), boards {pair[0].name} and "
              f"{pair[1].name}")
        first_1 = fleet_wall_s(pair[:1], args, fresh=True)
        again_1 = fleet_wall_s(pair[:1], args, fresh=False)
        first_2 = fleet_wall_s(pair, args, fresh=True)
        again_2 = fleet_wall_s(pair, args, fresh=False)
        print(f"{'deploy':>9} {'1 board_s':>10} {'2 boards_s':>11} {'ratio':>6}")
        for name, one, two in (("first", first_1, first_2), ("repeated", again_1, again_2)):
            print(f"{name:>9} {one:10.2f} {two:11.2f} {two / one:6.2f}")
    for target in targets:
        _wipe(target, args.ssh_config)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
