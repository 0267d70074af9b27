"""What the measurement ran on: machine, CPU, versions, clocks, heat, and emulation.

Everything is read best-effort from /proc and /sys (and `vcgencmd` on a Raspberry Pi);
what the OS does not tell is null. Emulation is reported with the signals that fired, so
nobody mistakes emulated timings for a board's:
- `env:EDGEQ_EMULATED`: an explicit override set by whoever started the emulator
  (e.g. tests/emulated/board.sh sets EDGEQ_EMULATED=qemu-aarch64; "0"/"" means native);
- `exe:qemu`: QEMU user-mode fakes /proc/self/exe for the emulated process, but not the
  `exe` link of the process's other tasks/children: a process launched through binfmt_misc
  has the QEMU binary as its executable;
- `cpuinfo:mismatch`: uname says an ARM machine but /proc/cpuinfo describes an x86 CPU
  (QEMU user-mode passes the host's /proc/cpuinfo through unless it emulates it);
- `kernel:mismatch`: the kernel version string names another architecture than uname -m;
- `dmi:qemu` / `devicetree:qemu`: QEMU full-system emulation (virt board, QEMU firmware).
Imports: standard library, numpy, psutil (optional), edgeq.device.
"""
from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
from edgeq.device.runtime import RuntimeInfo

logger = logging.getLogger(__name__)

ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv6l", "armv8l", "arm")
X86_WORDS = ("x86_64", "amd64", "i686", "i386")


def _read(path: str, limit: int = 1 << 16) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def cpu_model(cpuinfo: Optional[str]) -> Optional[str]:
    """The CPU's name from /proc/cpuinfo (x86 "model name", ARM "Model"/"Hardware"/part)."""
    if not cpuinfo:
        return platform.processor() or None
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu model", "processor"):
        found = fields.get(key)
        if found and not found.isdigit():
            return found
    part = fields.get("cpu part")
    if part:
        return f"ARM implementer {fields.get('cpu implementer', '?')} part {part}"
    return None


def _cpu_governor() -> Optional[str]:
    text = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return text.strip() if text else None


def _cpu_temperature_c() -> Optional[float]:
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        kind = (_read(str(zone / "type")) or "").strip().lower()
        raw = _read(str(zone / "temp"))
        if raw is None:
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            continue
        if "cpu" in kind or "soc" in kind or kind.startswith("x86_pkg") or len(kind) == 0 \
                or zone.name == "thermal_zone0":
            return round(value / 1000.0, 1)
    return None


def _vcgencmd(*args: str) -> Optional[str]:
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace").strip() if out.returncode == 0 else None


def _throttled() -> Optional[dict[str, Any]]:
    """The Pi firmware's throttling flags (vcgencmd get_throttled), else sysfs, else None."""
    text = _vcgencmd("get_throttled")
    if text and "=" in text:
        try:
            bits = int(text.split("=", 1)[1], 16)
        except ValueError:
            bits = None
        if bits is not None:
            return {
                "source": "vcgencmd",
                "raw": hex(bits),
                "under_voltage": bool(bits & 0x1),
                "freq_capped": bool(bits & 0x2),
                "throttled_now": bool(bits & 0x4),
                "soft_temp_limit": bool(bits & 0x8),
                "throttled_since_boot": bool(bits & 0x40000),
            }
    # Raspberry Pi kernels also expose the flags in sysfs
    raw = _read("/sys/devices/platform/soc/soc:firmware/get_throttled")
    if raw:
        try:
            bits = int(raw.strip(), 16)
        except ValueError:
            return None
        return {"source": "sysfs", "raw": hex(bits), "under_voltage": bool(bits & 0x1),
                "freq_capped": bool(bits & 0x2), "throttled_now": bool(bits & 0x4),
                "soft_temp_limit": bool(bits & 0x8),
                "throttled_since_boot": bool(bits & 0x40000)}
    return None


def _exe_is_qemu() -> Optional[str]:
    """The QEMU binary behind this process, seen through a path QEMU does not fake."""
    pid = os.getpid()
    candidates = []
    try:
        candidates = [f"/proc/{pid}/task/{tid}/exe" for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        pass
    candidates.append(f"/proc/{os.getppid()}/exe")
    for link in candidates:
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if "qemu" in os.path.basename(target).lower():
            return target
    return None


def detect_emulation(machine: str, cpuinfo: Optional[str],
                     kernel_version: Optional[str]) -> tuple[bool, Optional[str], list[str]]:
    """(emulated, emulator name or None, signals that fired)."""
    signals: list[str] = []
    emulator: Optional[str] = None
    override = os.environ.get("EDGEQ_EMULATED")
    if override is not None:
        value = override.strip()
        if value and value.lower() not in ("0", "no", "false", "native"):
            signals.append("env:EDGEQ_EMULATED")
            emulator = value if value.lower() not in ("1", "yes", "true") else "qemu"
        else:
            # an explicit "native" still gets the probes below, but only as information
            signals.append("env:EDGEQ_EMULATED=native")
    is_arm = machine.lower() in ARM_MACHINES
    qemu_exe = _exe_is_qemu()
    if qemu_exe:
        signals.append("exe:qemu")
        emulator = emulator or f"qemu-{machine}"
    if is_arm and cpuinfo:
        low = cpuinfo.lower()
        if "genuineintel" in low or "authenticamd" in low or re.search(r"^flags\s*:.*\bsse2\b",
                                                                        low, re.M):
            signals.append("cpuinfo:mismatch")
            emulator = emulator or f"qemu-{machine}"
    if is_arm and kernel_version:
        low = kernel_version.lower()
        if any(w in low for w in X86_WORDS):
            signals.append("kernel:mismatch")
            emulator = emulator or f"qemu-{machine}"
    dmi = " ".join(filter(None, (_read("/sys/class/dmi/id/sys_vendor"),
                                 _read("/sys/class/dmi/id/product_name")))).lower()
    if "qemu" in dmi:
        signals.append("dmi:qemu")
        emulator = emulator or "qemu-system"
    dt = (_read("/proc/device-tree/compatible") or "").lower()
    if "dummy-virt" in dt or "qemu" in dt:
        signals.append("devicetree:qemu")
        emulator = emulator or "qemu-system"
    emulated = emulator is not None
    if override is not None and "env:EDGEQ_EMULATED=native" in signals:
        emulated, emulator = False, None
    return emulated, emulator, signals


def collect_environment(runtime: Optional[RuntimeInfo] = None) -> dict[str, Any]:
    """The ENVIRONMENT section of docs/SCHEMA.md (plus `emulation_signals`)."""
    uname = platform.uname()
    cpuinfo = _read("/proc/cpuinfo", 1 << 20)
    kernel_version = _read("/proc/version")
    emulated, emulator, signals = detect_emulation(uname.machine, cpuinfo, kernel_version)
    try:
        cpu_count_physical: Optional[int] = None
        import psutil

        cpu_count_physical = psutil.cpu_count(logical=False)
        mem_total: Optional[int] = int(psutil.virtual_memory().total)
    except Exception:  # psutil is optional here
        mem_total = None
    try:
        affinity: Optional[int] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    model_text = _read("/proc/device-tree/model")
    return {
        "hostname": socket.gethostname(),
        "machine": uname.machine,
        "system": uname.system,
        "kernel": uname.release,
        "kernel_version": (kernel_version or "").strip() or None,
        "board_model": model_text.strip("\x00\n ") if model_text else None,
        "cpu_model": cpu_model(cpuinfo),
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": cpu_count_physical,
        "cpu_count_usable": affinity,
        "memory_total_bytes": mem_total,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy_version": np.__version__,
        "runtime": runtime.to_dict() if runtime is not None else None,
        "cpu_governor": _cpu_governor(),
        "cpu_temperature_c": _cpu_temperature_c(),
        "throttled": _throttled(),
        "emulated": emulated,
        "emulator": emulator,
        "emulation_signals": signals,
        "executable": sys.executable,
    }
