"""The pure parts of deploy (platform tags, requirements, parsing deploy.sh's last line), and
device/install.py, the device side of deploy, on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgeq.device.errors import UsageError
from edgeq.device.fileutil import sha256_bytes
from edgeq.device.store import Layout, Store
from edgeq.host.deploy import (
    DEPLOY_SCRIPT,
    WheelDownloadError,
    _agent_release_id,
    _parse_script,
    agent_files,
    platform_tags,
    runtime_requirements,
)
from edgeq.host.link import resolve_device_dir
from edgeq.host.link.local import LocalConnection


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


# ------------------------------------------------------------------ device/install.py


def _install_cli(home: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """`python3 -m edgeq.device.install` the way deploy runs it: PYTHONPATH at a bare copy of
    device/ (no edgeq.host, no numpy needed) and a plain interpreter."""
    release = home.parent / "release"
    pkg = release / "edgeq" / "device"
    if not pkg.is_dir():
        pkg.mkdir(parents=True)
        for path, name in agent_files():
            (pkg / name).write_bytes(path.read_bytes())
    env = {"PYTHONPATH": str(release), "PATH": os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-s", "-m", "edgeq.device.install",
                           "--home", str(home), *args], input=stdin, capture_output=True,
                          env=env, check=False)


def _upload(directory: Path, final_name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{final_name}.abcd1234.part"
    tmp.write_bytes(data)
    return tmp


def test_install_puts_uploads_in_through_the_store(tmp_path: Path) -> None:
    home = tmp_path / "edgeq"
    lay = Layout(str(home))
    model, data, script = b"TFL3 model bytes", b"npz bytes", b"#!/bin/bash\n"
    assert _install_cli(home, "claim").returncode == 0  # what deploy's bootstrap does first
    (home / "models").mkdir(parents=True)
    (home / "models" / ".old.tflite.dead.part").write_bytes(b"left by a cut deploy")
    wanted = [lay.model(sha256_bytes(model)), lay.data(sha256_bytes(data)), lay.deploy_script]
    res = _install_cli(home, "prepare", *wanted)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {p: None for p in wanted}
    assert not (home / "models" / ".old.tflite.dead.part").exists()
    assert all((home / sub).is_dir() for sub in ("models", "data", "deployments", "logs", "bin"))

    ups = [_upload(home / "models", f"{sha256_bytes(model)}.tflite", model),
           _upload(home / "data", f"{sha256_bytes(data)}.npz", data),
           _upload(home, "deploy.sh", script)]
    triples = [w for up, final, blob in zip(ups, wanted, (model, data, script))
               for w in (str(up), final, sha256_bytes(blob))]
    res = _install_cli(home, "install", *triples)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"bad": []}
    store = Store(home)
    assert store.model(sha256_bytes(model))[1].read_bytes() == model  # re-hashed by the store
    assert store.data(sha256_bytes(data))[1].read_bytes() == data
    assert Path(lay.deploy_script).read_bytes() == script
    assert not list(home.rglob("*.part")) and not list(home.rglob(".*.tmp"))
    res = _install_cli(home, "prepare", *wanted)
    assert json.loads(res.stdout) == {p: sha256_bytes(b) for p, b in
                                      zip(wanted, (model, data, script))}


def test_install_refuses_a_damaged_upload_and_repairs_a_damaged_store_file(tmp_path: Path
                                                                           ) -> None:
    home = tmp_path / "edgeq"
    lay = Layout(str(home))
    model = b"the real model"
    sha = sha256_bytes(model)
    _install_cli(home, "prepare")
    Path(lay.model(sha)).write_bytes(b"bit rot")  # a stored file that no longer matches
    bad_up = _upload(home / "models", f"{sha}.tflite", b"cut short")
    res = _install_cli(home, "install", str(bad_up), lay.model(sha), sha)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["bad"][0]["path"] == lay.model(sha)
    assert not bad_up.exists() and Path(lay.model(sha)).read_bytes() == b"bit rot"
    good_up = _upload(home / "models", f"{sha}.tflite", model)
    res = _install_cli(home, "install", str(good_up), lay.model(sha), sha)
    assert json.loads(res.stdout) == {"bad": []}
    assert Path(lay.model(sha)).read_bytes() == model
    outside = _install_cli(home, "install", str(good_up), str(tmp_path / "x"), sha)
    assert outside.returncode == 1 and b"error: " in outside.stderr and b"hint: " in outside.stderr


def test_deployment_is_written_only_when_everything_it_names_verifies(tmp_path: Path) -> None:
    home = tmp_path / "edgeq"
    store = Store(home)
    src = tmp_path / "m.tflite"
    src.write_bytes(b"float model")
    sha_f = store.add_model(src)
    src.write_bytes(b"int8 model")
    sha_i = store.add_model(src)
    doc = {"model_name": "m", "float32": sha_f, "int8": sha_i, "eval_data": "0" * 64}
    blob = json.dumps(doc).encode()
    res = _install_cli(home, "deployment", sha256_bytes(blob), stdin=blob)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"bad": [store.data_path("0" * 64).as_posix()]}
    assert store.current_deployment() is None  # nothing is named that is not there
    doc["eval_data"] = None
    blob = json.dumps(doc).encode()
    damaged = _install_cli(home, "deployment", sha256_bytes(b"other"), stdin=blob)
    assert json.loads(damaged.stdout) == {"bad": [store.layout.current]}
    res = _install_cli(home, "deployment", sha256_bytes(blob), stdin=blob)
    assert json.loads(res.stdout) == {"bad": []}
    assert store.current_deployment() == doc


def test_link_switches_the_agent_and_keeps_one_previous_release(tmp_path: Path) -> None:
    home = tmp_path / "edgeq"
    lay = Layout(str(home))
    Path(lay.release(".r9.part")).mkdir(parents=True)  # staging left by a cut deploy
    for rid, previous in (("r1", None), ("r2", "r1"), ("r3", "r2")):
        Path(lay.release(rid)).mkdir(parents=True)  # deploy pushes a release, then links it
        res = _install_cli(home, "link", rid)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout) == {"previous": previous}
        assert os.readlink(lay.agent) == f"agent-releases/{rid}"
    assert sorted(os.listdir(lay.releases_dir)) == ["r2", "r3"]
    missing = _install_cli(home, "link", "nope")
    assert missing.returncode == 1 and b"is not on the device" in missing.stderr
    assert os.readlink(lay.agent) == "agent-releases/r3"


def test_platform_tags_cover_every_glibc_up_to_the_device() -> None:
    tags = platform_tags("aarch64", "2.36")
    assert tags[0] == "manylinux_2_36_aarch64"
    assert "manylinux_2_27_aarch64" in tags and "manylinux_2_17_aarch64" in tags
    assert "manylinux2014_aarch64" in tags
    assert not any("x86_64" in t for t in tags)


def test_agent_argv_is_argv_words() -> None:
    argv = Layout("/home/pi/my dir").agent_argv("bench", "a b.tflite")
    assert argv[:2] == ["env", "PYTHONPATH=/home/pi/my dir/agent"]
    assert "/home/pi/my dir/bin/python" in argv and argv[-1] == "a b.tflite"
    with LocalConnection() as conn:
        assert resolve_device_dir(conn, "~/.edgeq") == str(Path.home() / ".edgeq")
        assert resolve_device_dir(conn, "/x/y/") == "/x/y"
