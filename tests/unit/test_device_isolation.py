"""edgeq.device runs without TensorFlow, Keras, edgeq.host, typer or paramiko.

A fresh interpreter installs a meta-path finder that makes those imports fail, imports every
device module, checks none of them slipped in, and runs a real one-shot bench through
`edgeq.device.__main__` (in-process, so the blocker applies) on a real .tflite file.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DEVICE_DIR = Path(__file__).resolve().parents[2] / "device"
BLOCKED = ("tensorflow", "keras", "edgeq.host", "typer", "paramiko", "rich", "matplotlib",
           "platformdirs", "tf_keras", "jax", "torch")

SCRIPT = r"""
import importlib, importlib.abc, io, json, sys, contextlib
BLOCKED = {blocked!r}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked for the device: {{name}}")
        return None

sys.meta_path.insert(0, Blocker())
modules = {modules!r}
for m in modules:
    importlib.import_module(m)
from edgeq.device.__main__ import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["bench", {model!r}, "--data", {data!r}, "--eval-limit", "20",
                 "--runs-min", "5", "--run-s-min", "0", "--warmup-s-min", "0", "--json"])
leaked = sorted(k for k in sys.modules if any(k == b or k.startswith(b + ".") for b in BLOCKED))
print(json.dumps({{"code": code, "leaked": leaked, "doc": json.loads(out.getvalue()),
                  "n_modules": len(modules)}}))
"""


def test_device_imports_nothing_heavy(dev_models: dict[str, Path]) -> None:
    modules = sorted(
        "edgeq.device" if p.stem == "__init__" else f"edgeq.device.{p.stem}"
        for p in DEVICE_DIR.glob("*.py")
    )
    assert "edgeq.device.daemon" in modules and "edgeq.device.bench" in modules
    code = SCRIPT.format(blocked=BLOCKED, modules=modules, model=str(dev_models["int8"]),
                         data=str(dev_models["eval"]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert res["code"] == 0 and res["leaked"] == []
    assert res["n_modules"] == len(modules) >= 10
    doc = res["doc"]
    assert doc["schema"] == "edgeq.bench/1" and doc["runtime"]["name"] == "ai-edge-litert"
    assert doc["accuracy"]["count"] == 20
