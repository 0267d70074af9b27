"""edgeq profile end to end: real deploy to `--host local`, the real daemon, real LiteRT.

The tiny real artifacts (tests/conftest.py) are deployed to a device directory in tmp; then
`edgeq profile` (the CLI, as a subprocess) through the daemon with XNNPACK, and through the
one-shot agent without it. The per-layer times must add up to the whole model within the
tolerance the output itself states, the document's numbers must be the ones its verdict
and its rows are made of, and the XNNPACK column must follow the setting.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

#: enough runs that the two identical graphs (last prefix, deployed file) agree on a busy CI box
RUNS = ["--runs", "400", "--rounds", "20"]


def _edgeq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-m", "edgeq.host", *args], capture_output=True,
                              text=True, env=env, timeout=900, cwd=cwd)


@pytest.fixture(scope="module")
def device(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Path, dict[str, str]]]:
    """tiny_artifacts deployed with `edgeq deploy --host local` (its daemon running)."""
    home = tmp_path_factory.mktemp("profile") / "edgeq"
    env = dict(os.environ, COLUMNS="160",
               EDGEQ_HISTORY_DB=str(home.parent / "history.sqlite3"))
    done = _edgeq("deploy", str(tiny_artifacts), "--host", "local", "--device-dir", str(home),
                  "--json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["daemon"].startswith("running")
    try:
        yield home, env
    finally:
        subprocess.run([sys.executable, "-m", "edgeq.device", "--home", str(home), "stop"],
                       capture_output=True, timeout=60)


def _check_arithmetic(doc: dict[str, Any]) -> None:
    """The verdicts are made of the numbers shown, and the rows of the sums."""
    for kind, t in doc["totals"].items():
        rows = [r[f"{kind}_ms"] for r in doc["layers"] if r[f"{kind}_index"] is not None]
        assert len(rows) == t["ops"]
        assert sum(rows) == pytest.approx(t["sum_layers_ms"], abs=1e-9)
        assert t["whole_net_ms"] == pytest.approx(t["whole_ms"] - t["overhead_ms"])
        assert t["deviation_ms"] == pytest.approx(t["sum_layers_ms"] - t["whole_net_ms"])
        assert t["tolerance_ms"] == pytest.approx(max(
            doc["settings"]["tolerance_rel"] * t["whole_net_ms"],
            doc["settings"]["tolerance_abs_ms"]))
        assert t["within_tolerance"] == (abs(t["deviation_ms"]) <= t["tolerance_ms"])
        iso = [r[f"{kind}_isolated_ms"] for r in doc["layers"] if r[f"{kind}_index"] is not None]
        assert t["sum_isolated_ms"] == pytest.approx(sum(iso))  # every op of the CNN alone
        assert t["runs_per_model"] >= 400
        # the XNNPACK flags of the layers add up to the whole file's delegated node count
        flags = [r[f"xnnpack_{kind}"] for r in doc["layers"] if r[f"{kind}_index"] is not None]
        assert sum(flags) == t["xnnpack_nodes"] == t["delegated_nodes"]
        assert t["xnnpack_consistent"] is True
    for r in doc["layers"]:
        if r["float32_ms"] is not None and r["int8_ms"] is not None \
                and r["float32_ms"] > 0 and r["int8_ms"] > 0:
            assert r["ratio"] == pytest.approx(r["int8_ms"] / r["float32_ms"])
        else:
            assert r["ratio"] is None


@pytest.fixture(scope="module")
def profiled(device: tuple[Path, dict[str, str]], tiny_artifacts: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """`edgeq profile --json --out DIR` through the daemon, XNNPACK on: (doc, DIR)."""
    home, env = device
    out = tmp_path_factory.mktemp("profile-out")
    res = _edgeq("profile", str(tiny_artifacts), "--host", "local", "--device-dir", str(home),
                 *RUNS, "--out", str(out), "--json", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout), out


def test_profile_local_daemon_xnnpack(profiled: tuple[dict[str, Any], Path]) -> None:
    doc, out = profiled
    assert doc["schema"] == "edgeq.profile/1" and doc["settings"]["path"] == "daemon"
    assert doc["settings"]["xnnpack"] is True and doc["method"]["name"] == "prefix-difference"
    assert json.loads((out / "profile.json").read_text()) == doc
    assert (out / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _check_arithmetic(doc)
    # the requirement, as the output states it: layers add up to the whole model
    assert doc["within_tolerance"] is True, [(k, t["deviation_ms"], t["tolerance_ms"])
                                             for k, t in doc["totals"].items()]
    assert any(r["xnnpack_int8"] for r in doc["layers"])
    # a known answer: the XNNPACK delegate takes SOFTMAX only in 32-bit float (its README's
    # operator list, tensorflow/lite/delegates/xnnpack); the int8 softmax stays on the
    # built-in kernel, in the model and alone, while the float32 one is delegated
    (softmax,) = [r for r in doc["layers"] if r["op"] == "SOFTMAX"]
    assert (softmax["xnnpack_float32"], softmax["xnnpack_isolated_float32"]) == (True, True)
    assert (softmax["xnnpack_int8"], softmax["xnnpack_isolated_int8"]) == (False, False)
    int8 = doc["totals"]["int8"]
    assert int8["delegated_nodes"] < int8["total_nodes"]


def test_profile_one_shot_without_xnnpack(device: tuple[Path, dict[str, str]],
                                          profiled: tuple[dict[str, Any], Path],
                                          tiny_artifacts: Path) -> None:
    home, env = device
    common = ["profile", str(tiny_artifacts), "--host", "local", "--device-dir", str(home),
              "--no-daemon", "--no-xnnpack", *RUNS]
    res = _edgeq(*common, "--json", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["settings"]["path"] == "one-shot" and doc["settings"]["xnnpack"] is False
    _check_arithmetic(doc)
    assert doc["within_tolerance"] is True, [(k, t["deviation_ms"], t["tolerance_ms"])
                                             for k, t in doc["totals"].items()]
    # XNNPACK off: no node taken, in any layer or alone; on, some were: the column differs
    for r in doc["layers"]:
        assert (r["xnnpack_float32"], r["xnnpack_int8"], r["xnnpack_isolated_float32"],
                r["xnnpack_isolated_int8"]) == (False, False, False, False)
    assert {t["delegated_nodes"] for t in doc["totals"].values()} == {0}
    on = profiled[0]
    assert [r["xnnpack_int8"] for r in on["layers"]] != [r["xnnpack_int8"] for r in doc["layers"]]
    assert on["totals"]["int8"]["delegated_nodes"] > 0
    # the human table says the same: one row per layer, the check line per model
    text = _edgeq(*common[:-4], "--runs", "20", "--rounds", "2", env=env)
    assert text.returncode == 0, text.stderr[-3000:]
    assert "XNNPACK off" in text.stdout and text.stdout.count(" n/n ") == len(doc["layers"])
    for kind in ("float32", "int8"):
        assert f"{kind}: whole " in text.stdout and "sum of layers" in text.stdout


@pytest.mark.sshd
@pytest.mark.timeout(1500)
def test_profile_over_real_sshd(sshd_device: Any, tiny_artifacts: Path, tmp_path: Path) -> None:
    """deploy over SSH, then `edgeq profile` through the daemon bridged over the SSH channel:
    the cut models travel by SFTP to the device's profiles/ directory (a second run sends
    none: they are named by content)."""
    from edgeq.device.store import Layout
    from edgeq.host.deploy import deploy
    from edgeq.host.link import open_connection

    device_dir = str(tmp_path / "device")
    env = dict(os.environ, COLUMNS="160", EDGEQ_HISTORY_DB=str(tmp_path / "h.sqlite3"))
    with open_connection(sshd_device.alias, ssh_config=sshd_device.ssh_config) as conn:
        deploy(conn, tiny_artifacts, device_dir=device_dir, start_daemon=True)
        try:
            common = ["profile", str(tiny_artifacts), "--host", sshd_device.alias,
                      "--ssh-config", str(sshd_device.ssh_config), "--device-dir", device_dir]
            res = _edgeq(*common, *RUNS, "--json", env=env)
            assert res.returncode == 0, res.stderr[-3000:]
            doc = json.loads(res.stdout)
            again = _edgeq(*common, "--runs", "2", "--rounds", "1", env=env)
            assert again.returncode == 0, again.stderr[-3000:]
        finally:
            conn.run(Layout(device_dir).agent_argv("stop"), timeout_s=60)
    assert doc["settings"]["path"] == "daemon"
    assert doc["host"].endswith(f":{sshd_device.port}") or sshd_device.alias in doc["host"]
    _check_arithmetic(doc)
    assert doc["within_tolerance"] is True, [(k, t["deviation_ms"], t["tolerance_ms"])
                                             for k, t in doc["totals"].items()]
    assert "pushed 0 new of" in again.stderr


def test_profile_refuses_a_directory_edgeq_did_not_deploy(tiny_artifacts: Path,
                                                          tmp_path: Path) -> None:
    """No agent there: one clear error before anything is written on the device."""
    target = tmp_path / "not-a-store"
    res = _edgeq("profile", str(tiny_artifacts), "--host", "local", "--device-dir",
                 str(target), "--runs", "2", "--rounds", "1", env=dict(os.environ))
    assert res.returncode != 0
    assert "not an edgeq device directory" in res.stderr and "edgeq deploy" in res.stderr
    assert not target.exists()
