"""Fixtures for the two emulated aarch64 boards (tests/emulated/board.sh).

Two boards run at once (tests/run.sh brings both up and takes both down): "pi4", the default
board (QEMU cortex-a72, /var/tmp/edgeq-board, alias edgeq-board) and "pi3" (cortex-a53, the
environment in tests/emulated/pi3.env). Each is its own network namespace, root filesystem
(unpacked from the one cached tarball), throwaway host key and client key; board.sh writes
each board's ssh_config, known_hosts and board.env into its work dir's state/.

`board` is the pi4 (the single-board end-to-end test); `boards` is both, by inventory name;
`fleet_inventory` is an Ansible INI inventory of both plus an unreachable third entry
("ghost": a closed port on loopback), with one ssh_config file whose per-board sections name
each board's own known_hosts (StrictHostKeyChecking yes: host keys stay checked).
When a board is not up the tests skip with the command that brings it up, unless
EDGEQ_BOARD_READY=1 says that whoever ran the tests started them (tests/run.sh, .ci/run):
then a board that does not answer is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from emulated_helpers import (
    FLEET_DEVICE_DIR,
    Board,
    FleetDeploy,
    FleetInventory,
    run_edgeq,
)

HERE = Path(__file__).resolve().parent
BOARD_SH = HERE / "board.sh"
PI3_ENV = HERE / "pi3.env"


def _env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a board.sh environment file (comments and blanks skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


#: inventory name -> the board's work dir (board.sh's EDGEQ_BOARD_WORK)
WORK_DIRS = {
    "pi4": Path(os.environ.get("EDGEQ_BOARD_WORK", "/var/tmp/edgeq-board")),
    "pi3": Path(_env_file(PI3_ENV)["EDGEQ_BOARD_WORK"]),
}


def _not_up(name: str, reason: str) -> None:
    if os.environ.get("EDGEQ_BOARD_READY") == "1":
        pytest.fail(f"EDGEQ_BOARD_READY=1 but the emulated board {name} is not usable: {reason}")
    up = f"sudo bash {BOARD_SH.relative_to(BOARD_SH.parents[2])} up"
    if name == "pi3":
        up = f"sudo env $(grep -v '^#' {PI3_ENV.relative_to(PI3_ENV.parents[2])}) bash " \
             f"{BOARD_SH.relative_to(BOARD_SH.parents[2])} up"
    pytest.skip(f"the emulated aarch64 board {name} is not up ({reason}); start it with: {up}")


def _board(name: str) -> Board:
    state = WORK_DIRS[name] / "state"
    if shutil.which("ssh") is None:
        _not_up(name, "no ssh client on this machine")
    if not (state / "board.env").is_file():
        _not_up(name, f"{state / 'board.env'} does not exist")
    env = _env_file(state / "board.env")
    b = Board(name=name, ssh_config=Path(env["EDGEQ_BOARD_SSH_CONFIG"]),
              alias=env["EDGEQ_BOARD_HOST"], address=env["EDGEQ_BOARD_ADDRESS"],
              user=env["EDGEQ_BOARD_USER"],
              identity=Path(env.get("EDGEQ_BOARD_IDENTITY", state / "id_ed25519")),
              known_hosts=Path(env.get("EDGEQ_BOARD_KNOWN_HOSTS", state / "known_hosts")),
              cpu=env.get("EDGEQ_BOARD_CPU", "?"))
    try:
        probe = b.ssh("uname -m", timeout_s=60)
    except subprocess.TimeoutExpired:
        _not_up(name, "ssh to the board timed out")
    if probe.returncode != 0 or probe.stdout.strip() != "aarch64":
        _not_up(name, f"ssh {b.alias} uname -m answered {probe.returncode}: "
                      f"{(probe.stdout + probe.stderr).strip()[:200]}")
    return b


@pytest.fixture(scope="session")
def board() -> Board:
    """The pi4 board; skips (or fails under EDGEQ_BOARD_READY=1) when it is down."""
    return _board("pi4")


@pytest.fixture(scope="session")
def boards() -> dict[str, Board]:
    """Both boards by inventory name ("pi3", "pi4")."""
    return {name: _board(name) for name in ("pi3", "pi4")}


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def fleet_inventory(boards: dict[str, Board], tmp_path_factory: pytest.TempPathFactory
                    ) -> FleetInventory:
    """inventory.ini (groups `boards` and `lost`) + ssh_config for `--ssh-config`."""
    base = tmp_path_factory.mktemp("fleet-inventory")
    sections = []
    lines = ["[boards]"]
    for name, b in sorted(boards.items()):
        lines.append(f"{name} ansible_host={b.address} ansible_user={b.user} ansible_port=22 "
                     f"ansible_ssh_private_key_file={b.identity}")
        # the board's own known_hosts (board.sh: "ALIAS,ADDRESS KEY"), checked strictly
        sections.append(f"Host {b.address} {b.alias}\n  HostName {b.address}\n  Port 22\n"
                        f"  User {b.user}\n  IdentityFile {b.identity}\n  IdentitiesOnly yes\n"
                        f"  UserKnownHostsFile {b.known_hosts}\n  StrictHostKeyChecking yes\n"
                        f"  ConnectTimeout 20\n")
    port = _closed_port()
    some_key = next(iter(boards.values())).identity
    lines += ["", "[lost]",
              f"ghost ansible_host=127.0.0.1 ansible_user=pi ansible_port={port} "
              f"ansible_ssh_private_key_file={some_key}",
              "", "[all:vars]", f"edgeq_device_dir={FLEET_DEVICE_DIR}", ""]
    inventory = base / "inventory.ini"
    inventory.write_text("\n".join(lines))
    ssh_config = base / "ssh_config"
    ssh_config.write_text("\n".join(sections))
    ssh_config.chmod(0o600)
    return FleetInventory(path=inventory, ssh_config=ssh_config, boards=boards,
                          ghost=f"pi@127.0.0.1:{port}")


@pytest.fixture(scope="session")
def fleet_deployed(fleet_inventory: FleetInventory, tiny_artifacts: Path) -> FleetDeploy:
    """tiny_artifacts deployed to the whole inventory at once (offline wheels, ai-edge-litert):
    every board's first deploy into FLEET_DEVICE_DIR; the ghost fails. Shared by the fleet
    tests and the single-board end-to-end test (one venv build per board, not two)."""
    import json

    for b in fleet_inventory.boards.values():  # a rerun on boards that stayed up: no
        # deployment, no agent, no daemon (a venv from before is kept: it is not what is tested)
        b.ssh(f"d={FLEET_DEVICE_DIR}; test -x $d/bin/python && PYTHONPATH=$d/agent "
              f"$d/bin/python -m edgeq.device --home $d stop; cd $d 2>/dev/null && "
              f"rm -rf agent agent-releases deployments models data")
    proc = run_edgeq(["deploy", str(tiny_artifacts), "--inventory", str(fleet_inventory.path),
                      "--ssh-config", str(fleet_inventory.ssh_config), "--offline-wheels",
                      "--runtime", "litert", "--json"], timeout_s=1800, check=False)
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"edgeq deploy --inventory printed no JSON document (exit "
                    f"{proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return FleetDeploy(returncode=proc.returncode, doc=doc, stderr=proc.stderr)
