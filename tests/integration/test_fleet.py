"""A lab of boards from an Ansible inventory, end to end through the CLI: real files, real
daemons, a real sshd on loopback.

The two boards are two device directories on this machine (`ansible_connection=local`, each
its own store and daemon); the third entry is 127.0.0.1 on a closed port. They are deployed
to and measured in parallel; the unreachable one fails alone with its own one-line error and
the exit code says not every board succeeded. A 2x2 matrix (threads x XNNPACK) runs in each
board's seeded random order and is stored as one fleet run in the history. A board whose SSH
host key changed is refused while the others deploy, and nothing is written to it. A runtime
a board lacks fails that cell only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgeq.device.store import Layout
from edgeq.host.history import History
from edgeq.host.link.local import LocalConnection
from edgeq.host.matrix import Matrix
from sshd_helpers import SSHDevice, free_port

pytest.importorskip("ansible", reason="--inventory needs ansible-core (the lab extra, in dev)")

FAST = ["--runs-min", "5", "--run-s-min", "0", "--eval-limit", "100", "--rounds", "2"]


def _edgeq(*args: str, history: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "EDGEQ_HISTORY_DB": str(history)}
    return subprocess.run([sys.executable, "-m", "edgeq.host", *args], check=False,
                          capture_output=True, text=True, env=env, timeout=timeout)


def _inventory(path: Path, boards: dict[str, Path], extra: str = "") -> Path:
    lines = ["[pi4]"] + [f"{name} ansible_connection=local edgeq_device_dir={d}"
                         for name, d in boards.items()]
    path.write_text("\n".join(lines) + "\n\n" + extra)
    return path


@pytest.fixture(scope="module")
def lab(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[dict[str, Any]]:
    """Two local boards and an unreachable one, deployed once through `edgeq deploy
    --inventory` (the deploy result is checked by the first test)."""
    base = tmp_path_factory.mktemp("lab")
    boards = {"pi4-a": base / "board-a", "pi4-b": base / "board-b"}
    closed = free_port()  # nothing listens there: connection refused at once
    inv = _inventory(base / "lab.ini", boards,
                     f"[pi3]\npi3-gone ansible_host=127.0.0.1 ansible_port={closed} "
                     "ansible_user=pi\n\n[lab:children]\npi4\npi3\n")
    history = base / "history.sqlite3"
    deployed = _edgeq("deploy", str(tiny_artifacts), "--inventory", str(inv), "--forks", "3",
                      "--connect-timeout", "3", "--json", history=history)
    try:
        yield {"inv": inv, "boards": boards, "history": history, "deployed": deployed}
    finally:
        with LocalConnection() as conn:
            for d in boards.values():
                conn.run(Layout(str(d)).agent_argv("stop"), timeout_s=30)


def test_parallel_deploy_with_a_failing_member(lab: dict[str, Any]) -> None:
    res = lab["deployed"]
    assert res.returncode == 1, res.stderr  # not every board succeeded
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgeq.fleet_deploy/1" and doc["ok"] is False
    by = {b["board"]: b for b in doc["boards"]}
    assert set(by) == {"pi4-a", "pi4-b", "pi3-gone"}
    for name in ("pi4-a", "pi4-b"):
        assert by[name]["ok"] and by[name]["error"] is None
        assert by[name]["deploy"]["device_dir"] == str(lab["boards"][name])
        assert (lab["boards"][name] / "deployments" / "current.json").is_file()
    gone = by["pi3-gone"]
    assert gone["ok"] is False and gone["deploy"] is None
    assert gone["error"]["code"] == "UnreachableHostError"
    assert "connection refused" in gone["error"]["message"] and gone["error"]["hint"]
    # the failure is one line of its own on stderr, then the summary
    assert "pi3-gone: cannot connect to pi@127.0.0.1" in res.stderr
    assert "error: 1 of 3 boards failed: pi3-gone" in res.stderr
    assert "Traceback" not in res.stderr


def test_matrix_run_is_one_fleet_run_in_the_history(lab: dict[str, Any],
                                                    tiny_artifacts: Path) -> None:
    res = _edgeq("bench-remote", str(tiny_artifacts), "--inventory", str(lab["inv"]),
                 "--threads", "1,2", "--xnnpack", "on,off", "--seed", "11",
                 "--connect-timeout", "3", *FAST, "--json", history=lab["history"])
    assert res.returncode == 1, res.stderr  # pi3-gone
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgeq.fleet/1" and doc["seed"] == 11 and doc["ok"] is False
    assert doc["matrix"] == {"threads": [1, 2], "xnnpack": [True, False], "runtime": [None]}
    matrix = Matrix.from_dict(doc["matrix"])
    by = {b["board"]: b for b in doc["boards"]}
    for name in ("pi4-a", "pi4-b"):
        board = by[name]
        assert board["ok"], board["error"]
        # the recorded order is the seeded one, and the runs happened in it
        assert board["order"] == [c.to_dict() for c in matrix.order(11, name)]
        assert [r["cell"] for r in board["runs"]] == board["order"]
        for run in board["runs"]:
            cmp = run["compare"]
            assert run["error"] is None and run["run_id"] == cmp["run_id"]
            assert cmp["settings"]["threads"] == run["cell"]["threads"]
            assert cmp["settings"]["xnnpack"] == run["cell"]["xnnpack"]
            assert cmp["settings"]["order"] == "ABBA"  # float32/int8 still interleaved
            assert cmp["settings"]["device_dir"] == str(lab["boards"][name])
            assert cmp["models"]["int8"]["accuracy"] is not None
    assert by["pi3-gone"]["error"]["code"] == "UnreachableHostError"
    assert by["pi3-gone"]["runs"] == []
    # one fleet run in the history, its 8 runs there too, read back whole
    history = History(lab["history"])
    assert doc["fleet_id"] is not None
    assert [f["fleet_id"] for f in history.list_fleets()] == [doc["fleet_id"]]
    back = history.get_fleet(doc["fleet_id"])
    assert back == doc
    run_ids = {r["run_id"] for b in doc["boards"] for r in b["runs"]}
    assert len(run_ids) == 8 and run_ids <= {r["run_id"] for r in history.list(None)}
    shown = _edgeq("history", "fleet", str(doc["fleet_id"]), history=lab["history"])
    assert shown.returncode == 0, shown.stderr
    assert "2 thr no-xnnpack" in shown.stdout and "pi3-gone" in shown.stdout
    listed = _edgeq("history", "fleets", "--json", history=lab["history"])
    row = json.loads(listed.stdout)[0]
    assert (row["boards"], row["boards_ok"], row["runs"]) == (3, 2, 8)


def test_limit_and_a_missing_runtime_fail_only_their_cell(lab: dict[str, Any],
                                                          tiny_artifacts: Path) -> None:
    res = _edgeq("bench-remote", str(tiny_artifacts), "--inventory", str(lab["inv"]),
                 "--limit", "pi4-b", "--runtime", "litert,tflite-runtime", *FAST, "--json",
                 "--no-history", history=lab["history"])
    doc = json.loads(res.stdout)
    assert [b["board"] for b in doc["boards"]] == ["pi4-b"]  # --limit
    runs = {r["cell"]["runtime"]: r for r in doc["boards"][0]["runs"]}
    assert runs["ai-edge-litert"]["error"] is None
    assert runs["ai-edge-litert"]["compare"]["device"]["runtime"]["name"] == "ai-edge-litert"
    try:
        import tflite_runtime  # noqa: F401
    except ImportError:
        missing = runs["tflite-runtime"]
        assert missing["compare"] is None and "tflite-runtime" in missing["error"]["message"]
        assert res.returncode == 1 and doc["boards"][0]["ok"] is False
    else:
        assert res.returncode == 0


def test_one_board_and_one_cell_is_todays_compare(lab: dict[str, Any],
                                                  tiny_artifacts: Path) -> None:
    res = _edgeq("bench-remote", str(tiny_artifacts), "--inventory", str(lab["inv"]),
                 "--limit", "pi4-a", *FAST, "--json", "--no-history", history=lab["history"])
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgeq.compare/1" and "runtime" not in doc["settings"]
    assert doc["settings"]["device_dir"] == str(lab["boards"]["pi4-a"])


def test_a_changed_host_key_is_refused_without_touching_the_others(
        sshd_device: SSHDevice, tiny_artifacts: Path, tmp_path: Path) -> None:
    # the sshd's real key under one alias; a different key recorded for it under another
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    key_type, key_b64 = Path(f"{other}.pub").read_text().split()[:2]
    changed = tmp_path / "known_hosts_changed"
    changed.write_text(f"[127.0.0.1]:{sshd_device.port} {key_type} {key_b64}\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshd_device.ssh_config.read_text() + (
        "\nHost edgeq-changed\n  HostName 127.0.0.1\n"
        f"  Port {sshd_device.port}\n  User {sshd_device.user}\n"
        f"  IdentityFile {sshd_device.identity}\n  UserKnownHostsFile {changed}\n"))
    boards = {"local-a": tmp_path / "a", "local-b": tmp_path / "b"}
    victim = tmp_path / "victim"
    inv = _inventory(tmp_path / "lab.ini", boards,
                     f"[moved]\nswapped ansible_host=edgeq-changed edgeq_device_dir={victim}\n")
    before = changed.read_text()
    try:
        res = _edgeq("deploy", str(tiny_artifacts), "--inventory", str(inv), "--ssh-config",
                     str(cfg), "--accept-new-host-key", "--json",
                     history=tmp_path / "h.sqlite3")
    finally:
        with LocalConnection() as conn:
            for d in boards.values():
                conn.run(Layout(str(d)).agent_argv("stop"), timeout_s=30)
    assert res.returncode == 1, res.stderr
    by = {b["board"]: b for b in json.loads(res.stdout)["boards"]}
    assert by["local-a"]["ok"] and by["local-b"]["ok"]
    assert by["swapped"]["error"]["code"] == "HostKeyMismatchError"
    assert "changed" in by["swapped"]["error"]["message"].lower() \
        or "mismatch" in by["swapped"]["error"]["message"].lower()
    # refused before anything was sent: no device dir, the recorded key not replaced
    assert not victim.exists() and changed.read_text() == before


def test_forks_bound_the_boards_at_once_and_each_failure_stays_its_own() -> None:
    """run_boards with real connections (`local`): never more than --forks jobs at once, an
    EdgeqError and an unexpected exception each end only their own board."""
    import threading
    import time

    from edgeq.device.errors import EdgeqError
    from edgeq.host.fleet import run_boards
    from edgeq.host.inventory import Target

    lock = threading.Lock()
    running, peak = [0], [0]

    def job(conn: Any, target: Target, emit: Any) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            assert conn.run(["true"], timeout_s=30).ok  # the board's own connection works
            time.sleep(0.3)
            if target.name == "b":
                raise EdgeqError("b is broken", hint="fix b")
            if target.name == "c":
                raise KeyError("surprise")
            return target.name.upper()
        finally:
            with lock:
                running[0] -= 1

    targets = [Target(n, "local", device_dir=f"/tmp/{n}") for n in "abcde"]
    seen: list[tuple[str, str]] = []
    results = run_boards(targets, job, forks=2,
                         events=lambda board, name, d: seen.append((board, name)))
    assert peak[0] == 2
    assert [r.target.name for r in results] == list("abcde")
    assert [r.value for r in results] == ["A", None, None, "D", "E"]
    assert results[1].error == {"code": "EdgeqError", "message": "b is broken", "hint": "fix b"}
    assert results[2].error["code"] == "KeyError" and "surprise" in results[2].error["message"]
    assert all(r.ok for r in results if r.target.name in "ade")
    assert {b for b, n in seen if n == "board_done"} == set("abcde")
