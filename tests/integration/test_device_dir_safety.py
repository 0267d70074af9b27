"""`--device-dir` never clobbers what is not edgeq's, and an interrupted deploy keeps the
previous one: real deploys over `--host local` (and the real sshd), real files, real deploy.sh.

- a non-empty directory without the `.edgeq-store` marker, or one another user owns, is
  refused before anything is written; a new one is created 0700 and marked;
- a directory an earlier edgeq laid out (agent symlink, agent-releases, current.json) is
  adopted; a venv or a bin/python edgeq did not write is never replaced;
- a device dir with `&` and `#` in its name deploys, and its systemd unit verifies;
- a deploy.sh that fails leaves the agent link where it was.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from edgeq.device.errors import StoreError
from edgeq.device.store import Layout
from edgeq.host.deploy import DeployScriptError, deploy
from edgeq.host.link import open_connection
from edgeq.host.link.local import LocalConnection
from sshd_helpers import SSHDevice

REPO = Path(__file__).resolve().parents[2]
STORE_MARKER = ".edgeq-store"


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (what "untouched" is checked against)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _stop(conn: Any, d: Path) -> None:
    conn.run(Layout(str(d)).agent_argv("stop"), timeout_s=30)


def _user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "home-of-a-user"
    (d / "bin").mkdir(parents=True)
    (d / "bin" / "python").write_text("#!/bin/sh\necho the user's own python\n")
    (d / "notes.txt").write_text("precious\n")
    (d / "venv").mkdir()
    (d / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return d


def test_a_users_directory_is_refused_before_anything_is_written(
        tiny_artifacts: Path, tmp_path: Path) -> None:
    d = _user_dir(tmp_path)
    before = _tree(d)
    with LocalConnection() as conn:
        with pytest.raises(StoreError) as info:
            deploy(conn, tiny_artifacts, device_dir=str(d))
    assert "is not empty and is not edgeq's" in info.value.message
    assert "notes.txt" in info.value.message and "--device-dir" in info.value.hint
    assert _tree(d) == before and sorted(os.listdir(d)) == ["bin", "notes.txt", "venv"]


def test_a_directory_of_another_user_is_refused(tiny_artifacts: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, 65534, 65534)
    with LocalConnection() as conn:
        with pytest.raises(StoreError, match="belongs to user id 65534"):
            deploy(conn, tiny_artifacts, device_dir=str(d))
    assert os.listdir(d) == []


def test_over_ssh_a_users_directory_is_refused(sshd_device: SSHDevice, tiny_artifacts: Path,
                                                tmp_path: Path) -> None:
    d = _user_dir(tmp_path)
    before = _tree(d)
    with open_connection(sshd_device.alias, ssh_config=sshd_device.ssh_config) as conn:
        with pytest.raises(StoreError, match="not edgeq's"):
            deploy(conn, tiny_artifacts, device_dir=str(d), offline_wheels=False)
    assert _tree(d) == before


def test_new_dir_is_0700_and_marked_an_old_layout_is_adopted(tiny_artifacts: Path,
                                                             tmp_path: Path) -> None:
    d = tmp_path / "new" / "edgeq"
    with LocalConnection() as conn:
        try:
            deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
            assert stat.S_IMODE(d.stat().st_mode) == 0o700
            assert json.loads((d / STORE_MARKER).read_text()) == {"format": 1}
            # as an earlier edgeq left it: no marker, mode 0755
            (d / STORE_MARKER).unlink()
            d.chmod(0o755)
            doc = deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
            assert doc["sent_bytes"] == 0
            assert (d / STORE_MARKER).is_file() and stat.S_IMODE(d.stat().st_mode) == 0o700
            # a newer edgeq's store is refused, not rewritten
            (d / STORE_MARKER).write_text('{"format": 99}\n')
            with pytest.raises(StoreError, match="newer edgeq"):
                deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
        finally:
            _stop(conn, d)


def test_bin_python_and_a_venv_edgeq_did_not_write_are_never_replaced(
        tiny_artifacts: Path, tmp_path: Path) -> None:
    d = tmp_path / "edgeq"
    with LocalConnection() as conn:
        deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
        wrapper = (d / "bin" / "python").read_text()
        assert "# edgeq deploy.sh" in wrapper
        # someone else's bin/python in the store: deploy.sh refuses, the file stays
        (d / "bin" / "python").write_text("#!/bin/sh\nexec /usr/bin/python3 \"$@\"  # mine\n")
        with pytest.raises(DeployScriptError, match="bin/python was not written by edgeq"):
            deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
        assert "# mine" in (d / "bin" / "python").read_text()
        (d / "bin" / "python").write_text(wrapper)
        # a venv without edgeq's marker: deploy.sh (building a venv) refuses to touch it
        (d / "venv").mkdir()
        (d / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
        (d / "venv" / "mine.txt").write_text("keep\n")
        res = conn.run(["bash", str(d / "deploy.sh"), "--home", str(d), "--no-daemon"],
                       timeout_s=300)
        assert res.exit_status == 1
        assert b"venv was not created by edgeq" in res.stderr, res.stderr
        assert (d / "venv" / "mine.txt").read_text() == "keep\n"
        assert (d / "bin" / "python").read_text() == wrapper


def test_a_failed_deploy_script_leaves_the_agent_link(tiny_artifacts: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "edgeq"
    with LocalConnection() as conn:
        deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
        # pretend the device runs an older agent release
        current = os.readlink(d / "agent")
        shutil.copytree(d / current, d / "agent-releases" / "0000older0000000")
        os.remove(d / "agent")
        os.symlink("agent-releases/0000older0000000", d / "agent")
        # deploy.sh fails on the device (uname is broken there)
        fake = tmp_path / "fakebin"
        fake.mkdir()
        (fake / "uname").write_text("#!/bin/sh\necho 'uname: broken' >&2\nexit 1\n")
        (fake / "uname").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
        with pytest.raises(DeployScriptError):
            deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
        assert os.readlink(d / "agent") == "agent-releases/0000older0000000"
        monkeypatch.undo()
        deploy(conn, tiny_artifacts, device_dir=str(d), start_daemon=False)
        assert os.readlink(d / "agent") == current


def test_device_dir_with_ampersand_and_hash(tiny_artifacts: Path, tmp_path: Path) -> None:
    d = tmp_path / "a&b#c d"
    with LocalConnection() as conn:
        try:
            doc = deploy(conn, tiny_artifacts, device_dir=str(d))
            assert doc["daemon"].startswith("running"), doc["daemon"]
            st = conn.run(Layout(str(d)).agent_argv("status", "--json"), timeout_s=30)
            assert json.loads(st.stdout)["home"] == str(d)
        finally:
            _stop(conn, d)
    # the unit deploy.sh installs where systemd runs: this directory's paths, verbatim
    from edgeq.device.install import render_unit

    unit = tmp_path / "edgeq-agent-test.service"
    rendered = render_unit((REPO / "device" / "edgeq-agent.service").read_text(), str(d))
    unit.write_text(rendered)
    assert f'ExecStart="{d}/bin/python" -m edgeq.device --home "{d}" serve' in rendered
    assert f'ReadWritePaths="{d}"' in rendered and "%h" not in rendered.split("[Unit]")[1]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    problems = [ln for ln in res.stderr.splitlines() if unit.name in ln]
    assert res.returncode == 0 and not problems, res.stderr


def test_by_hand_deploy_sh_refuses_a_users_directory(tmp_path: Path) -> None:
    d = _user_dir(tmp_path)
    (d / "agent" / "edgeq").mkdir(parents=True)
    shutil.copytree(REPO / "device", d / "agent" / "edgeq" / "device")
    before = _tree(d)
    res = subprocess.run(["bash", str(REPO / "deploy.sh"), "--home", str(d), "--python",
                          sys.executable, "--no-daemon"], capture_output=True, timeout=120)
    assert res.returncode == 1
    assert b"error: the device directory" in res.stderr and b"not edgeq's" in res.stderr
    assert _tree(d) == before

