"""What the emulated-board tests share: the boards' and the fleet's descriptions (filled by
tests/emulated/conftest.py) and the real edgeq CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

EDGEQ = [sys.executable, "-m", "edgeq.host"]
#: the device directory every board of the fleet inventory uses (edgeq_device_dir)
FLEET_DEVICE_DIR = "~/.edgeq-fleet"


@dataclass(frozen=True)
class Board:
    """How to reach one running emulated board (what its state/board.env says)."""

    name: str
    ssh_config: Path
    alias: str
    address: str
    user: str
    identity: Path
    known_hosts: Path
    cpu: str

    def ssh(self, command: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Run a shell command on the board with the system ssh client."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", self.alias, command],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


@dataclass(frozen=True)
class FleetInventory:
    """An Ansible inventory of both boards and an unreachable one, and its ssh_config."""

    path: Path
    ssh_config: Path
    boards: dict[str, Board]
    ghost: str  # the unreachable entry's user@host:port

    @property
    def names(self) -> list[str]:
        return sorted(self.boards)


@dataclass(frozen=True)
class FleetDeploy:
    """The first `edgeq deploy --inventory` of the session (both boards and the ghost)."""

    returncode: int
    doc: dict
    stderr: str

    def board(self, name: str) -> dict:
        found = [b for b in self.doc["boards"] if b["board"] == name]
        assert len(found) == 1, f"{name} is not once in the fleet deploy: {self.doc}"
        return found[0]




def run_edgeq(args: list[str], timeout_s: float, *, check: bool = True,
              env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run `edgeq ARGS`; with `check`, fail the test with its output when it fails."""
    t0 = time.monotonic()
    proc = subprocess.run([*EDGEQ, *args], capture_output=True, text=True, timeout=timeout_s,
                          check=False, env=env)
    print(f"edgeq {' '.join(args[:1])}: exit {proc.returncode} in "
          f"{time.monotonic() - t0:.1f} s")
    if check and proc.returncode != 0:
        pytest.fail(f"edgeq {' '.join(args)} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def json_doc(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    """The one JSON document a --json command printed on stdout."""
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        pytest.fail(f"not one JSON document on stdout ({exc}):\n{proc.stdout[-2000:]}")
    assert isinstance(doc, dict)
    return doc
