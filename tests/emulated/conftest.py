"""Fixtures for the emulated aarch64 board (tests/emulated/board.sh).

`board` describes the running board (its ssh config file and Host alias). When the board is
not up the tests skip with the command that brings it up, unless EDGEQ_BOARD_READY=1 says
that whoever ran the tests started it (tests/run.sh, .ci/run): then a board that does not
answer is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

BOARD_SH = Path(__file__).resolve().parent / "board.sh"
WORK_DIR = Path(os.environ.get("EDGEQ_BOARD_WORK", "/var/tmp/edgeq-board"))
ALIAS = "edgeq-board"


@dataclass(frozen=True)
class Board:
    """How to reach the running emulated board."""

    ssh_config: Path
    alias: str

    def ssh(self, command: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """Run a shell command on the board with the system ssh client."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", self.alias, command],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )


def _not_up(reason: str) -> None:
    if os.environ.get("EDGEQ_BOARD_READY") == "1":
        pytest.fail(f"EDGEQ_BOARD_READY=1 but the emulated board is not usable: {reason}")
    pytest.skip(
        f"the emulated aarch64 board is not up ({reason}); "
        f"start it with: sudo bash {BOARD_SH.relative_to(BOARD_SH.parents[2])} up"
    )


@pytest.fixture(scope="session")
def board() -> Board:
    """The running emulated board; skips (or fails under EDGEQ_BOARD_READY=1) when it is down."""
    ssh_config = WORK_DIR / "state" / "ssh_config"
    if shutil.which("ssh") is None:
        _not_up("no ssh client on this machine")
    if not ssh_config.is_file():
        _not_up(f"{ssh_config} does not exist")
    b = Board(ssh_config=ssh_config, alias=ALIAS)
    try:
        probe = b.ssh("uname -m", timeout_s=60)
    except subprocess.TimeoutExpired:
        _not_up("ssh to the board timed out")
    if probe.returncode != 0 or probe.stdout.strip() != "aarch64":
        _not_up(
            f"ssh {ALIAS} uname -m answered {probe.returncode}: "
            f"{(probe.stdout + probe.stderr).strip()[:200]}"
        )
    return b
