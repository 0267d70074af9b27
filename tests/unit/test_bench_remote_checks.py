"""bench-remote's checks that need no device: the round order, settings refused up front, and
an unreadable deployment record (read through edgeq.device.store.parse_deployment)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgeq.device.errors import UsageError
from edgeq.device.store import Layout
from edgeq.host.bench_remote import NotDeployedError, bench_remote, round_order
from edgeq.host.link.local import LocalConnection


def test_abba_order() -> None:
    assert [round_order(r) for r in range(4)] == [
        ("float32", "int8"), ("int8", "float32"), ("float32", "int8"), ("int8", "float32")]


def test_settings_checked_before_anything_runs(tmp_path: Path) -> None:
    """bench-remote validates its settings with the device's one declaration, up front."""
    with LocalConnection() as conn:
        with pytest.raises(UsageError, match="threads must be an integer in \\[1, 256\\]"):
            bench_remote(conn, device_dir=str(tmp_path / "none"), threads=0)
        with pytest.raises(UsageError, match="runs_max .* is below runs_min"):
            bench_remote(conn, device_dir=str(tmp_path / "none"), runs_min=10, runs_max=5)
        with pytest.raises(UsageError, match="eval_limit"):
            bench_remote(conn, device_dir=str(tmp_path / "none"), eval_limit=0)


def test_unreadable_deployment_record(tmp_path: Path) -> None:
    """current.json is read through edgeq.device.store.parse_deployment, not by hand."""
    device = tmp_path / "device"
    record = Path(Layout(str(device)).current)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"model_name": "m", "float32": "a" * 64, "int8": "../x"}))
    with LocalConnection() as conn:
        with pytest.raises(NotDeployedError, match="int8 is not a 64-hex sha256") as info:
            bench_remote(conn, device_dir=str(device), rounds=1)
        assert "edgeq deploy" in info.value.hint
