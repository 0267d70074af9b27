"""Run one measurement in its own worker process.

`run_in_worker("bench", model_path, ...)` starts `sys.executable -m edgeq.device bench ...
--json` (same interpreter, same import path), waits at most `timeout_s`, and returns the
parsed result. A fresh process per model keeps one model's memory out of another's numbers,
and a model that crashes (segfault) or hangs the interpreter takes only the worker down:
that becomes WorkerCrashedError / WorkerTimeoutError with the signal or exit status and the
tail of the worker's stderr. Errors the worker reports itself (--json error documents) are
raised again as their own EdgeqError subclass. `cancel()` (the daemon: "has the client
gone?") is checked while the worker runs; when it says so the worker is killed
(WorkerCancelledError). The worker imports the agent code this process started with
(PACKAGE_ROOT, fixed at import), even if a deploy has switched the agent link since.
The worker's flags come from the settings' one declaration (BenchSettings.to_argv).
Imports: standard library and edgeq.device (settings, errors, protocol); no numpy.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

from edgeq.device.errors import (
    EdgeqError,
    UsageError,
    WorkerCrashedError,
    WorkerTimeoutError,
    raise_from_wire,
)
from edgeq.device.protocol import DEFAULT_BENCH_TIMEOUT_S, MEASURE_OPS
from edgeq.device.settings import BenchSettings

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = DEFAULT_BENCH_TIMEOUT_S
#: how often a running worker's `cancel()` is asked
CANCEL_POLL_S = 0.2


class WorkerCancelledError(EdgeqError):
    """The worker was stopped because its client went away."""
STDERR_TAIL_CHARS = 2000
KINDS = MEASURE_OPS


def _package_root() -> Optional[Path]:
    """The directory to put on PYTHONPATH so `edgeq.device` imports as it does here.

    On a board the agent lives at $EDGEQ_HOME/agent/edgeq/device; that `agent` dir is the
    root. In an installed or editable tree nothing needs adding (returns None).
    """
    here = Path(__file__).resolve().parent  # .../edgeq/device (or the repo's device/)
    if here.name == "device" and here.parent.name == "edgeq":
        return here.parent.parent
    return None


#: the agent code this process runs (resolved once: a later switch of the agent link does not
#: change what this daemon's workers import)
PACKAGE_ROOT = _package_root()
#: the release id when running from $EDGEQ_HOME/agent-releases/<id> (else None)
AGENT_RELEASE = (PACKAGE_ROOT.name if PACKAGE_ROOT is not None
                 and PACKAGE_ROOT.parent.name == "agent-releases" else None)


def worker_env() -> dict[str, str]:
    """The environment of a worker: ours, with the agent's root on PYTHONPATH."""
    env = dict(os.environ)
    root = PACKAGE_ROOT
    if root is not None:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(root) not in parts:
            env["PYTHONPATH"] = os.pathsep.join([str(root), *parts])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def worker_argv(kind: str, model_path: Union[str, os.PathLike], *,
                data_path: Union[str, os.PathLike, None], settings: BenchSettings,
                sha256: Optional[str] = None) -> list[str]:
    """The command line of a worker (argparse flags of `python -m edgeq.device bench`)."""
    if kind not in KINDS:
        raise UsageError(f"unknown worker kind {kind!r}", hint=f"use one of {KINDS}")
    argv = [sys.executable, "-m", "edgeq.device", kind, os.fspath(model_path)]
    if data_path is not None:
        argv += ["--data", os.fspath(data_path)]
    argv += settings.to_argv(timing=kind == "bench")
    if sha256 is not None:
        argv += ["--sha256", sha256]
    argv.append("--json")
    return argv


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    lines = [ln for ln in text.splitlines() if "XNNPACK delegate" not in ln]
    text = "\n".join(lines).strip()
    return text[-STDERR_TAIL_CHARS:]


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _wait(proc: subprocess.Popen, timeout_s: float,
          cancel: Optional[Callable[[], bool]]) -> int:
    """proc's exit status; TimeoutExpired past `timeout_s`; WorkerCancelledError (the worker
    killed) as soon as `cancel()` says so."""
    if cancel is None:
        return proc.wait(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        try:
            return proc.wait(timeout=min(CANCEL_POLL_S, left))
        except subprocess.TimeoutExpired:
            pass
        if cancel():
            proc.kill()
            proc.wait()
            raise WorkerCancelledError(f"the worker (pid {proc.pid}) was stopped: its client "
                                       "disconnected", hint="")


def run_in_worker(
    kind: str,
    model_path: Union[str, os.PathLike],
    *,
    data_path: Union[str, os.PathLike, None] = None,
    settings: Optional[BenchSettings] = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    sha256: Optional[str] = None,
    on_start: Optional[Callable[[int], None]] = None,
    on_exit: Optional[Callable[[int], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
) -> dict[str, Any]:
    """Run `bench` or `evaluate` in a fresh process; its JSON result.

    `on_start(pid)` / `on_exit(pid)` let a caller (the daemon) know the worker's pid;
    `cancel()` returning True kills the worker (WorkerCancelledError).
    """
    s = settings or BenchSettings()
    argv = worker_argv(kind, model_path, data_path=data_path, settings=s, sha256=sha256)
    logger.info("worker: %s", " ".join(argv[1:]))
    # stdout/stderr go to temp files: no pipe can fill up and block the worker
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=worker_env(), close_fds=True)
        except OSError as exc:
            raise WorkerCrashedError(f"cannot start a worker process: {exc.strerror or exc}",
                                     hint=f"check that {sys.executable} runs") from None
        if on_start is not None:
            on_start(proc.pid)
        try:
            try:
                rc = _wait(proc, timeout_s, cancel)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                err.seek(0)
                tail = _tail(err.read())
                raise WorkerTimeoutError(
                    f"the {kind} worker (pid {proc.pid}) did not finish within "
                    f"{timeout_s:g} s and was killed"
                    + (f"; its stderr ends: {tail.splitlines()[-1]}" if tail else ""),
                    hint="raise timeout_s, lower runs_min/run_s_min/eval_limit, "
                         "or check whether the model hangs the interpreter",
                ) from None
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        finally:
            if on_exit is not None:
                on_exit(proc.pid)
        out.seek(0)
        stdout = out.read()
        err.seek(0)
        stderr = err.read()
    doc: Any = None
    if stdout.strip():
        try:
            doc = json.loads(stdout.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            doc = None
    if rc == 0 and isinstance(doc, dict) and "error" not in doc:
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        raise_from_wire(doc["error"])
    tail = _tail(stderr)
    last = tail.splitlines()[-1] if tail else "no output"
    if rc < 0:
        how = f"was killed by {_signal_name(-rc)}"
        hint = ("the model crashed the interpreter; check the .tflite file, or try "
                "--no-xnnpack or another runtime")
    else:
        how = f"exited with status {rc} without a result"
        hint = "run the same bench one-shot on the device to see the full error"
    raise WorkerCrashedError(f"the {kind} worker (pid {proc.pid}) {how}: {last}", hint=hint)
