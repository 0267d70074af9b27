"""End to end on the emulated aarch64 board: the real `edgeq deploy` and `edgeq bench-remote`.

The board (tests/emulated/board.sh up) is an arm64 Debian bookworm chroot under QEMU with its
own sshd in a network namespace; the tests reach it through its ssh config file and Host alias
like a Pi on the LAN. For each TFLite runtime the design names (ai-edge-litert, and the
tflite-runtime fallback with numpy < 2) the session's small trained model is deployed with the
offline wheel push, deployed again (no model bytes may travel the second time), and benchmarked
with `edgeq bench-remote --json`. The ai-edge-litert case reuses the two-board inventory deploy
of conftest.py (`fleet_deployed`: this board's first deploy, into the fleet's device
directory) instead of building a second venv with the same runtime on the same board.
The checks: the results came from aarch64, are flagged as
emulated, and each model's predictions on the board equal the host's for the same .tflite file
on >= 99.9 % of the evaluation images. Nothing here is about speed: emulated timings mean
nothing for a real Pi.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emulated_helpers import FLEET_DEVICE_DIR, json_doc, run_edgeq

pytestmark = [pytest.mark.emulated, pytest.mark.timeout(2400)]

KINDS = ("float32", "int8")
#: device predictions must equal the host's on at least this fraction of the images
MIN_AGREEMENT = 0.999
#: small timing settings: the emulated board is 50-400x slower than native
BENCH_FAST = ["--rounds", "1", "--runs-min", "10", "--run-s-min", "0.2"]
#: images evaluated on the board (of tiny_artifacts' 2000): emulated float32 costs 80-175 ms
#: an image (tflite-runtime without XNNPACK; ai-edge-litert's XNNPACK under QEMU), most of
#: this test's time. 400 keeps CI well under 30 min with the two-board tests; at 400 the
#: >= 99.9 % agreement rule allows no mismatch (the same kernels give the same predictions:
#: 0 of 100 differed on the board in this session's check)
EVAL_LIMIT = 400
DEPLOY_TIMEOUT_S = 1200.0
BENCH_TIMEOUT_S = 900.0


def _host_predictions(artifacts: Path, kind: str, xnnpack: bool) -> np.ndarray:
    """What the host's LiteRT predicts for the same .tflite file and evaluation set."""
    from edgeq.device.evaldata import load_eval_data
    from edgeq.device.runtime import load_model

    images, _labels = load_eval_data(artifacts / "eval.npz")
    images = images[:EVAL_LIMIT]
    model = load_model(
        artifacts / f"model_{kind}.tflite", runtime="ai-edge-litert", xnnpack=xnnpack
    )
    return model.predict(images, batch_size=32)


def _deploy(board: Any, artifacts: Path, device_dir: str, runtime: str) -> dict[str, Any]:
    return json_doc(
        run_edgeq(
            [
                "deploy",
                str(artifacts),
                "--host",
                board.alias,
                "--ssh-config",
                str(board.ssh_config),
                "--device-dir",
                device_dir,
                "--runtime",
                runtime,
                "--offline-wheels",
                "--json",
            ],
            timeout_s=DEPLOY_TIMEOUT_S,
        )
    )


def _model_bytes_sent(deploy_doc: dict[str, Any]) -> int:
    """Bytes of .tflite files the deploy sent (see host/deploy.py's JSON)."""
    return int(deploy_doc["models_bytes_sent"])


@pytest.fixture(scope="module")
def artifacts(tiny_artifacts: Path) -> Path:
    manifest = json.loads((tiny_artifacts / "manifest.json").read_text())
    assert set(KINDS) <= set(manifest["models"])
    return tiny_artifacts


@pytest.mark.parametrize(
    ("runtime_option", "runtime"),
    [
        ("litert", "ai-edge-litert"),
        ("tflite-runtime", "tflite-runtime"),
    ],
)
def test_deploy_and_bench_remote_on_emulated_board(
    board: Any, artifacts: Path, runtime_option: str, runtime: str,
    request: pytest.FixtureRequest
) -> None:
    if runtime_option == "litert":
        # the fleet's inventory deploy (--runtime litert --offline-wheels) was the first
        first = request.getfixturevalue("fleet_deployed").board("pi4")["deploy"]
        assert first is not None, "the inventory deploy failed on this board"
        device_dir = FLEET_DEVICE_DIR
    else:
        # A device directory per runtime: each gets its own venv, as on two different Pis.
        device_dir = f"~/.edgeq-e2e-{runtime_option}"
        cleared = board.ssh(f"rm -rf {device_dir}")
        assert cleared.returncode == 0, cleared.stderr
        first = _deploy(board, artifacts, device_dir, runtime_option)
    assert first["arch"] == "aarch64", first
    assert first["runtime_name"] == runtime, first
    assert _model_bytes_sent(first) > 0, f"the first deploy sent no model: {first}"
    second = _deploy(board, artifacts, device_dir, runtime_option)
    assert _model_bytes_sent(second) == 0, f"the second deploy sent model bytes again: {second}"

    doc = json_doc(
        run_edgeq(
            [
                "bench-remote",
                str(artifacts),
                "--host",
                board.alias,
                "--ssh-config",
                str(board.ssh_config),
                "--device-dir",
                device_dir,
                "--json",
                "--no-history",
                "--eval-limit",
                str(EVAL_LIMIT),
                *BENCH_FAST,
            ],
            timeout_s=BENCH_TIMEOUT_S,
        )
    )

    assert doc["schema"] == "edgeq.compare/1"
    device = doc["device"]
    assert device["machine"] == "aarch64", device
    assert device["emulated"] is True, device
    assert device["emulator"] == "qemu-aarch64", device
    assert device["python_version"].startswith("3.11."), device

    manifest = json.loads((artifacts / "manifest.json").read_text())
    eval_count = min(EVAL_LIMIT, manifest["eval_data"]["count"])
    print(
        f"bench-remote on the board: {doc['settings'].get('duration_s')} s, path "
        f"{doc['settings'].get('path')}, runtime {doc['models']['int8']['runtime']}"
    )
    for kind in KINDS:
        entry = doc["models"][kind]
        result = entry["result"]
        assert entry["sha256"] == manifest["models"][kind]["sha256"]
        assert result["environment"]["machine"] == "aarch64"
        assert result["environment"]["emulated"] is True
        assert result["runtime"]["name"] == runtime, result["runtime"]
        if runtime == "tflite-runtime":
            assert result["environment"]["numpy_version"].startswith("1."), result["environment"]

        device_preds = np.asarray(result["accuracy"]["predictions"], dtype=np.int64)
        assert device_preds.shape == (eval_count,)
        # The host runs the same file with the same kind of kernels: XNNPACK when the board's
        # runtime applied it, TFLite's builtin kernels when it did not (tflite-runtime 2.14's
        # aarch64 wheel applies no default delegate).
        host_preds = _host_predictions(
            artifacts, kind, xnnpack=bool(result["runtime"]["xnnpack_applied"])
        )
        mismatches = int(np.count_nonzero(host_preds != device_preds))
        assert mismatches <= (1.0 - MIN_AGREEMENT) * eval_count + 1e-9, (
            f"{kind} on {runtime}: the board disagrees with the host on {mismatches} of "
            f"{eval_count} images"
        )
        labels = np.load(artifacts / "eval.npz")["labels"][:EVAL_LIMIT]
        top1 = float(np.mean(device_preds == labels))
        assert result["accuracy"]["top1"] == pytest.approx(top1)
