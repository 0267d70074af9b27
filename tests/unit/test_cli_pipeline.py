"""The pipeline commands through the real CLI entry point: output, exit codes, one-line errors
with hints, help texts, and EDGEQ_DATA_DIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from edgeq.host.cli import main

COMMANDS = ("train", "quantize", "evaluate", "inspect", "models")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    # rich wraps long messages at the (non-terminal) console width; join the wrapped lines
    err = err.replace(" \n", " ")
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0 and "Usage" in out and "--" in out


def test_models(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["models", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["name"] == "mnist-cnn" and rows[0]["default_epochs"] >= 1
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "mnist-cnn" in out


def test_evaluate_table_and_json(tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["evaluate", str(tiny_artifacts), "--limit", "200"], capsys)
    assert code == 0
    for word in ("size (KB)", "top-1", "agreement", "points", "float32", "int8"):
        assert word in out, word
    code, out, _ = run(
        ["evaluate", str(tiny_artifacts), "--limit", "200", "--json", "--threads", "2"], capsys
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["models"]["int8"]["count"] == 200 and doc["threads"] == 2


def test_inspect_table_and_json(tiny_artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(tiny_artifacts / "model_int8.tflite")
    code, out, _ = run(["inspect", model], capsys)
    assert code == 0 and "full-integer int8: yes" in out and "CONV_2D" in out
    code, out, _ = run(["inspect", model, "--json"], capsys)
    assert code == 0 and json.loads(out)["full_integer"] is True


def test_quantize_per_tensor_cli(
    tiny_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        [
            "quantize",
            str(tiny_artifacts),
            "--out",
            str(tmp_path),
            "--per-tensor",
            "--calibration-size",
            "20",
            "--eval-limit",
            "10",
        ],
        capsys,
    )
    assert code == 0, err
    assert "per-tensor" in out and "% of float32" in out
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["calibration"]["per_channel"] is False and manifest["calibration"]["size"] == 20
    assert (tmp_path / "model_int8.tflite").is_file() and (tmp_path / "eval.npz").is_file()


def _one_line_error(err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith("error: "), err
    assert any(ln.startswith("hint: ") for ln in lines), err
    assert "Traceback" not in err


def test_errors_are_one_line_with_hints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["inspect", str(tmp_path / "none.tflite")], capsys)
    assert code == 1
    _one_line_error(err)
    code, _, err = run(["quantize", str(tmp_path / "empty")], capsys)
    assert code == 1 and "does not exist" in err
    _one_line_error(err)
    code, _, err = run(["train", "--out", str(tmp_path / "o"), "--model", "resnet-9000"], capsys)
    assert code == 1 and "unknown model" in err and "mnist-cnn" in err
    code, _, err = run(["evaluate", str(tmp_path)], capsys)
    assert code == 1
    _one_line_error(err)


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(["train", "--out", str(tmp_path), "--epochs", "0"], capsys)
    assert code == 2
    code, _, _ = run(["quantize"], capsys)
    assert code == 2


def test_data_dir_env_is_honoured(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        EDGEQ_DATA_DIR=str(tmp_path / "no-mnist-here"),
        TF_CPP_MIN_LOG_LEVEL="3",
        COLUMNS="400",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeq.host",
            "train",
            "--out",
            str(tmp_path / "o"),
            "--epochs",
            "1",
            "--train-limit",
            "10",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "no-mnist-here" in proc.stderr and "does not exist" in proc.stderr
    _one_line_error(proc.stderr)


def test_train_cli_is_seeded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`edgeq train` writes the record it prints; the same seed trains the same model again."""
    from edgeq.host.train import train

    argv = [
        "train",
        "--out",
        str(tmp_path / "a"),
        "--epochs",
        "1",
        "--train-limit",
        "300",
        "--json",
    ]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    printed = json.loads(out)
    assert printed == json.loads((tmp_path / "a" / "train.json").read_text())
    assert (tmp_path / "a" / "model.keras").is_file() and printed["train_count"] == 300
    again = train(tmp_path / "b", epochs=1, train_limit=300, seed=0)
    assert again["history"]["loss"] == printed["history"]["loss"]
    assert again["float32_test_correct"] == printed["float32_test_correct"]
