"""A lab of two emulated boards: the real `edgeq deploy/bench-remote --inventory` and `profile`.

Both boards (tests/emulated/conftest.py: "pi3" on QEMU's cortex-a53, "pi4" on cortex-a72, each
its own network namespace, root filesystem and host key) are in one Ansible inventory with a
third, unreachable entry ("ghost", a closed loopback port). Checked here:
- the inventory deploy reaches both boards at once and the ghost fails alone, with a one-line
  error, and the exit code says not every board succeeded; a repeated deploy to the two boards
  is "unchanged" on both (one command each); a changed host key on one board refuses that
  board alone, before anything is sent to it;
- a settings matrix (--threads 1,2) on both boards: each board ran every cell, in the order
  the seed and its name give (recorded in the edgeq.fleet/1 document and in the history), and
  the CPU each board's agent recorded is that board's own (the two differ);
- `edgeq profile` on one board: per-layer times whose sum is the recorded sum, with the
  tolerance verdict the document states.
Timings on an emulator mean nothing for a real Pi: only tiny measurement settings are used.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from emulated_helpers import FLEET_DEVICE_DIR, FleetDeploy, FleetInventory, json_doc, run_edgeq

pytestmark = [pytest.mark.emulated, pytest.mark.timeout(2400)]

#: tiny measurement settings: the emulated boards are 50-400x slower than native
BENCH_TINY = ["--rounds", "1", "--runs-min", "5", "--run-s-min", "0.05", "--eval-limit", "20"]
PROFILE_TINY = ["--runs", "10", "--rounds", "2"]
TIMEOUT_S = 1200.0


def _cpu_model_of(board: Any) -> str:
    """The CPU name the board's /proc/cpuinfo gives (what the agent's cpu_model reads)."""
    out = board.ssh("cat /proc/cpuinfo")
    assert out.returncode == 0, out.stderr
    m = re.search(r"^model name\s*:\s*(.+)$", out.stdout, re.MULTILINE)
    assert m, out.stdout[:500]
    return m.group(1).strip()


def test_inventory_deploy_reaches_both_boards_and_the_ghost_fails_alone(
        fleet_deployed: FleetDeploy, fleet_inventory: FleetInventory) -> None:
    doc = fleet_deployed.doc
    assert doc["schema"] == "edgeq.fleet_deploy/1"
    assert sorted(b["board"] for b in doc["boards"]) == ["ghost", "pi3", "pi4"]
    assert doc["ok"] is False
    # not every board succeeded: the CLI's error exit code, after every board's result
    assert fleet_deployed.returncode == 1, fleet_deployed.stderr[-2000:]
    assert "ghost" in fleet_deployed.stderr
    ghost = fleet_deployed.board("ghost")
    assert ghost["ok"] is False and ghost["deploy"] is None
    err = ghost["error"]
    assert "127.0.0.1" in err["message"] and err["hint"] and err["code"]
    assert "\n" not in err["message"] and "\n" not in err["hint"]
    for name in fleet_inventory.names:
        entry = fleet_deployed.board(name)
        assert entry["ok"] is True and entry["error"] is None, entry
        dep = entry["deploy"]
        assert dep["schema"] == "edgeq.deploy/1" and dep["arch"] == "aarch64"
        assert dep["runtime_name"] == "ai-edge-litert" and dep["daemon"].startswith("running")
        assert dep["models_bytes_sent"] > 0 and dep["unchanged"] is False
    took = {b["board"]: b["elapsed_s"] for b in doc["boards"]}
    print(f"fleet deploy: {doc['elapsed_s']:.1f} s wall; per board {took}")


def test_repeated_inventory_deploy_is_unchanged_on_both(
        fleet_deployed: FleetDeploy, fleet_inventory: FleetInventory,
        tiny_artifacts: Path) -> None:
    proc = run_edgeq(["deploy", str(tiny_artifacts), "--inventory", str(fleet_inventory.path),
                      "--limit", "boards", "--ssh-config", str(fleet_inventory.ssh_config),
                      "--offline-wheels", "--runtime", "litert", "--json"], timeout_s=TIMEOUT_S)
    doc = json_doc(proc)
    assert doc["ok"] is True and sorted(b["board"] for b in doc["boards"]) == ["pi3", "pi4"]
    for entry in doc["boards"]:
        dep = entry["deploy"]
        assert dep["unchanged"] is True, dep["changed"]
        assert dep["sent_bytes"] == 0 and dep["daemon"].startswith("running")
    print("repeated fleet deploy: " + ", ".join(
        f"{b['board']} {b['deploy']['seconds']:.2f} s" for b in doc["boards"])
        + f"; {doc['elapsed_s']:.2f} s wall")


def test_a_changed_host_key_on_one_board_is_refused_and_the_other_deploys(
        fleet_deployed: FleetDeploy, fleet_inventory: FleetInventory, tiny_artifacts: Path,
        tmp_path: Path) -> None:
    """pi3 presents a host key other than the one known_hosts holds for it (here: known_hosts
    holds another key): pi3 alone is refused, before anything is sent; pi4 deploys."""
    pi3 = fleet_inventory.boards["pi3"]
    before = pi3.ssh(f"sha256sum {FLEET_DEVICE_DIR}/deployments/current.json")
    assert before.returncode == 0, before.stderr
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    wrong = tmp_path / "known_hosts_pi3"
    key = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    wrong.write_text(f"{pi3.alias},{pi3.address} {key}\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(fleet_inventory.ssh_config.read_text().replace(str(pi3.known_hosts),
                                                                  str(wrong)))
    proc = run_edgeq(["deploy", str(tiny_artifacts), "--inventory", str(fleet_inventory.path),
                      "--limit", "boards", "--ssh-config", str(cfg), "--offline-wheels",
                      "--runtime", "litert", "--json"], timeout_s=TIMEOUT_S, check=False)
    doc = json_doc(proc)
    assert proc.returncode == 1 and doc["ok"] is False, proc.stderr[-2000:]
    by_name = {b["board"]: b for b in doc["boards"]}
    assert by_name["pi3"]["ok"] is False and by_name["pi3"]["deploy"] is None
    assert by_name["pi3"]["error"]["code"] == "HostKeyMismatchError", by_name["pi3"]["error"]
    assert by_name["pi4"]["ok"] is True and by_name["pi4"]["deploy"]["unchanged"] is True
    after = pi3.ssh(f"sha256sum {FLEET_DEVICE_DIR}/deployments/current.json")
    assert after.stdout == before.stdout  # nothing was done on pi3


def _seed_with_distinct_orders(names: list[str]) -> int:
    """A seed whose random order differs between the boards (shows it is per board)."""
    from edgeq.host.matrix import Matrix

    matrix = Matrix.parse(threads="1,2")
    for seed in range(1, 100):
        orders = {tuple(c.to_dict()["threads"] for c in matrix.order(seed, n)) for n in names}
        if len(orders) > 1:
            return seed
    raise AssertionError("no seed in 1..99 orders the two boards differently")


def test_matrix_on_both_boards_in_seeded_order(
        fleet_deployed: FleetDeploy, fleet_inventory: FleetInventory, tiny_artifacts: Path,
        tmp_path: Path) -> None:
    from edgeq.host.matrix import Matrix

    seed = _seed_with_distinct_orders(fleet_inventory.names)
    env = {**os.environ, "EDGEQ_HISTORY_DB": str(tmp_path / "history.sqlite3")}
    proc = run_edgeq(["bench-remote", str(tiny_artifacts), "--inventory",
                      str(fleet_inventory.path), "--limit", "boards", "--ssh-config",
                      str(fleet_inventory.ssh_config), "--threads", "1,2", "--seed", str(seed),
                      *BENCH_TINY, "--json"], timeout_s=TIMEOUT_S, env=env)
    doc = json_doc(proc)
    assert doc["schema"] == "edgeq.fleet/1" and doc["ok"] is True, doc
    assert doc["seed"] == seed and doc["matrix"]["threads"] == [1, 2]
    matrix = Matrix.from_dict(doc["matrix"])
    cpu_models = {}
    for entry in doc["boards"]:
        name = entry["board"]
        assert entry["ok"] is True and entry["error"] is None, entry
        want = [c.to_dict() for c in matrix.order(seed, name)]
        assert entry["order"] == want, f"{name} ran {entry['order']}, the seed gives {want}"
        # the runs are stored in the order they ran
        assert [r["cell"] for r in entry["runs"]] == entry["order"]
        ids = [r["run_id"] for r in entry["runs"]]
        assert all(isinstance(i, int) for i in ids) and ids == sorted(ids), ids
        for run in entry["runs"]:
            compare = run["compare"]
            assert compare["schema"] == "edgeq.compare/1"
            for kind in ("float32", "int8"):
                result = compare["models"][kind]["result"]
                assert result["settings"]["threads"] == run["cell"]["threads"]
                env_doc = result["environment"]
                assert env_doc["machine"] == "aarch64" and env_doc["emulated"] is True
                cpu_models.setdefault(name, set()).add(env_doc["cpu_model"])
    orders = {e["board"]: e["order"] for e in doc["boards"]}
    assert orders["pi3"] != orders["pi4"]  # the seed was chosen so
    # each board's agent recorded its own CPU: QEMU's cortex-a53 and cortex-a72 differ
    for name in fleet_inventory.names:
        assert cpu_models[name] == {_cpu_model_of(fleet_inventory.boards[name])}, cpu_models
    assert cpu_models["pi3"] != cpu_models["pi4"], cpu_models
    print(f"matrix (seed {seed}): orders {orders}; CPUs {cpu_models}")

    # one fleet run in the history, listed and shown as the run printed it
    listed = json.loads(run_edgeq(["history", "fleets", "--json"], timeout_s=120,
                                  env=env).stdout)
    assert [(f["fleet_id"], f["boards"], f["runs"]) for f in listed] == \
        [(doc["fleet_id"], 2, 4)], listed
    shown = json_doc(run_edgeq(["history", "fleet", str(doc["fleet_id"]), "--json"],
                               timeout_s=120, env=env))
    assert {b["board"]: b["order"] for b in shown["boards"]} == orders


def test_profile_on_one_board(fleet_deployed: FleetDeploy, fleet_inventory: FleetInventory,
                              tiny_artifacts: Path) -> None:
    board = fleet_inventory.boards["pi3"]
    assert fleet_deployed.board("pi3")["ok"]
    doc = json_doc(run_edgeq(["profile", str(tiny_artifacts), "--host", board.alias,
                              "--ssh-config", str(fleet_inventory.ssh_config), "--device-dir",
                              FLEET_DEVICE_DIR, *PROFILE_TINY, "--json"], timeout_s=TIMEOUT_S))
    assert doc["schema"] == "edgeq.profile/1"
    assert doc["environment"]["machine"] == "aarch64" and doc["environment"]["emulated"]
    assert doc["environment"]["cpu_model"] == _cpu_model_of(board)
    layers = doc["layers"]
    assert len(layers) >= 3 and all(r["op"] for r in layers)
    for kind in ("float32", "int8"):
        total = doc["totals"][kind]
        measured = [r[f"{kind}_ms"] for r in layers if r.get(f"{kind}_ms") is not None]
        assert measured and sum(measured) == pytest.approx(total["sum_layers_ms"], abs=1e-6)
        # the verdict is the stated rule applied to the recorded figures
        assert total["within_tolerance"] == (abs(total["deviation_ms"])
                                             <= total["tolerance_ms"])
    assert doc["within_tolerance"] == all(doc["totals"][k]["within_tolerance"]
                                          for k in ("float32", "int8"))
    print("profile on pi3: " + json.dumps({k: {f: round(v, 4) for f, v in t.items()
                                                if isinstance(v, float)}
                                            for k, t in doc["totals"].items()}))
