"""The pure parts of deploy: platform tags, requirements, parsing deploy.sh's last line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgeq.device.errors import UsageError
from edgeq.host.deploy import (
    DEPLOY_SCRIPT,
    WheelDownloadError,
    _agent_release_id,
    _parse_script,
    agent_files,
    platform_tags,
    runtime_requirements,
)


def test_platform_tags_bookworm_aarch64() -> None:
    tags = platform_tags("aarch64", "2.36")
    # every manylinux_2_NN from the device's glibc down to 2_17 (ai-edge-litert is 2_27 only)
    assert [t for t in tags if t.startswith("manylinux_2_")] == [
        f"manylinux_2_{n}_aarch64" for n in range(36, 16, -1)]
    assert "manylinux2014_aarch64" in tags
    assert platform_tags("arm64", "2.31")[0] == "manylinux_2_31_aarch64"


def test_platform_tags_refuse_non_glibc() -> None:
    with pytest.raises(WheelDownloadError) as info:
        platform_tags("aarch64", "")
    assert "--offline-wheels" in info.value.hint


def test_runtime_requirements() -> None:
    assert runtime_requirements("litert", "3.11.2") == ["ai-edge-litert", "numpy", "psutil"]
    assert "numpy<2" in runtime_requirements("tflite-runtime", "3.11.2")
    with pytest.raises(UsageError):
        runtime_requirements("onnx", "3.11")


def test_parse_script_takes_the_last_marker_line() -> None:
    out = (b"noise\nEDGEQ_DEPLOY {\"arch\": \"x\"}\n"
           b"EDGEQ_DEPLOY {\"arch\": \"aarch64\", \"runtime\": \"ai-edge-litert\", "
           b"\"daemon\": \"running (pid 3)\"}\n")
    doc = _parse_script(out)
    assert doc is not None and doc["arch"] == "aarch64" and doc["daemon"] == "running (pid 3)"
    assert _parse_script(b"pip noise only\n") is None
    assert _parse_script(b"EDGEQ_DEPLOY {not json\n") is None


def test_agent_release_id_follows_the_content(tmp_path: Path) -> None:
    files = agent_files()
    assert {name for _, name in files} >= {"__main__.py", "daemon.py", "store.py",
                                            "edgeq-agent.service"}
    rid = _agent_release_id(files)
    changed = tmp_path / "store.py"
    changed.write_text("# changed\n")
    other = [(changed if n == "store.py" else p, n) for p, n in files]
    assert _agent_release_id(other) != rid and _agent_release_id(files) == rid


def test_deploy_sh_help_and_bad_option() -> None:
    res = subprocess.run(["bash", str(DEPLOY_SCRIPT), "--help"], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0 and "--wheels DIR" in res.stdout and "EDGEQ_DEPLOY" in res.stdout
    bad = subprocess.run(["bash", str(DEPLOY_SCRIPT), "--runtime", "onnx"], capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 1 and "unknown runtime" in bad.stderr
    res = subprocess.run(["bash", "-n", str(DEPLOY_SCRIPT)], check=False)
    assert res.returncode == 0
