"""A normal (non-editable) install holds everything under the one `edgeq` namespace."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_wheel_maps_the_rooms_under_edgeq(tmp_path: Path) -> None:
    # built from a copy: pip builds in-tree, and a stale build/ of the checkout would leak
    # deleted modules into the wheel (and concurrent runs would share it)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "deploy.sh"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for room in ("host", "device", "models"):
        shutil.copytree(REPO_ROOT / room, src / room, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path), str(src)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("edgeq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names if not name.startswith("edgeq-")}
    assert tops == {"edgeq"}, f"something landed bare in site-packages: {tops}"
    for required in (
        "edgeq/host/cli/__init__.py", "edgeq/host/__main__.py", "edgeq/device/__main__.py",
        "edgeq/device/edgeq-agent.service", "edgeq/models/mnist_cnn.py", "edgeq/host/deploy.sh",
        "edgeq/models/mnist/data/t10k-images-idx3-ubyte.gz",
        "edgeq/models/mnist/data/SHA256SUMS.uncompressed",
        "edgeq/host/link/__init__.py", "edgeq/host/link/base.py", "edgeq/host/link/ssh.py",
        "edgeq/host/link/local.py", "edgeq/device/install.py",
    ):
        assert required in names, f"{required} missing from the wheel"
    assert "edgeq/__init__.py" not in names  # edgeq is a namespace package
    for gone in ("ssh.py", "local.py", "transport.py", "connect.py"):  # moved into link/
        assert f"edgeq/host/{gone}" not in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "edgeq = edgeq.host.cli:main" in text
    assert "edgeq-agent = edgeq.device.__main__:main" in text
