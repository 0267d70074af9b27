"""host/artifacts.py: the files a manifest names are plain names in the directory (issue 11
item 8), so a crafted manifest cannot make deploy read and upload a file from elsewhere; and
the preprocessing / class-name accessors, with the defaults older manifests mean."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgeq.host.artifacts import (
    DEFAULT_PREPROCESSING,
    ArtifactsError,
    load_artifacts,
    plain_file_name,
)

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not really\n"


def _dir_with_manifest(tmp_path: Path, int8_file: str, eval_file: str = "eval.npz") -> Path:
    """DIR with a real float32 file and a manifest naming `int8_file` for the int8 model; a
    'secret' sits where ../../.ssh/id_ed25519 points from DIR, with its true sha256."""
    d = tmp_path / "home" / "user" / "art"
    d.mkdir(parents=True)
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_bytes(SECRET)
    (d / "model_float32.tflite").write_bytes(b"float model bytes")
    (d / "eval.npz").write_bytes(b"npz")
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    manifest = {
        "schema": "edgeq.manifest/1", "model_name": "crafted",
        "models": {"float32": {"file": "model_float32.tflite",
                               "sha256": sha(b"float model bytes")},
                   "int8": {"file": int8_file, "sha256": sha(SECRET)}},
        "eval_data": {"file": eval_file, "sha256": sha(b"npz")},
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


@pytest.mark.parametrize("name", ["../../.ssh/id_ed25519", "/etc/passwd", "sub/model.tflite",
                                  "..", ".", "", "a\\b.tflite"])
def test_plain_file_name_refuses_paths(name: str) -> None:
    with pytest.raises(ArtifactsError, match="not a plain file name") as exc:
        plain_file_name(name, "the int8 model")
    assert exc.value.hint and "\n" not in exc.value.message
    assert plain_file_name("model_int8.tflite", "x") == "model_int8.tflite"


def test_load_artifacts_refuses_a_manifest_naming_a_file_outside(tmp_path: Path) -> None:
    d = _dir_with_manifest(tmp_path, "../../.ssh/id_ed25519")
    assert (d / "../../.ssh/id_ed25519").resolve().read_bytes() == SECRET  # it would resolve
    with pytest.raises(ArtifactsError, match=r"names the int8 model '\.\./\.\./\.ssh/id_ed25519'"
                                             r": not a plain file name"):
        load_artifacts(d)
    d2 = tmp_path / "other"
    d2.mkdir()
    (d2 / "manifest.json").write_text((d / "manifest.json").read_text().replace(
        '"../../.ssh/id_ed25519"', '"model_int8.tflite"').replace(
        '"eval.npz"', '"/etc/passwd"'))
    (d2 / "model_float32.tflite").write_bytes(b"float model bytes")
    (d2 / "model_int8.tflite").write_bytes(SECRET)
    with pytest.raises(ArtifactsError, match="evaluation data '/etc/passwd'"):
        load_artifacts(d2)


def test_deploy_local_refuses_it_and_sends_nothing(tmp_path: Path) -> None:
    d = _dir_with_manifest(tmp_path, "../../.ssh/id_ed25519")
    device = tmp_path / "device"
    env = dict(os.environ, EDGEQ_HISTORY_DB=str(tmp_path / "h.sqlite3"))
    res = subprocess.run([sys.executable, "-m", "edgeq.host", "deploy", str(d), "--host",
                          "local", "--device-dir", str(device)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode != 0
    assert "not a plain file name" in res.stderr and "Traceback" not in res.stderr
    assert not device.exists()  # nothing sent, not even the agent
    found = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == SECRET]
    assert found == [tmp_path / "home" / ".ssh" / "id_ed25519"]  # no copy anywhere


def test_accessors_and_their_defaults(tmp_path: Path) -> None:
    d = _dir_with_manifest(tmp_path, "model_int8.tflite")
    (d / "model_int8.tflite").write_bytes(SECRET)
    m = json.loads((d / "manifest.json").read_text())
    m["models"]["float32"]["output"] = {"shape": [1, 4]}
    (d / "manifest.json").write_text(json.dumps(m))
    art = load_artifacts(d)  # a manifest from before issue 10
    assert art.preprocessing == DEFAULT_PREPROCESSING and art.num_classes == 4
    assert art.class_names == ["0", "1", "2", "3"]
    m.update(num_classes=3, class_names=["cat", "dog", "eel"],
             preprocessing={**DEFAULT_PREPROCESSING, "scale": 0.5, "identity": False})
    (d / "manifest.json").write_text(json.dumps(m))
    art = load_artifacts(d)
    assert art.num_classes == 3 and art.class_names == ["cat", "dog", "eel"]
    assert art.preprocessing["scale"] == 0.5
