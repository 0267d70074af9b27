"""`edgeq deploy`: put the models, the evaluation data and the agent on a device.

Parses options, opens the connection (edgeq.host.connect), calls edgeq.host.deploy.deploy
with rich progress bars and prints what it did (or the `edgeq.deploy/1` JSON with --json).
Imports: typer, rich and edgeq.host.cli at import time; everything else inside the command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from edgeq.host.cli import app, console, err_console
from edgeq.host.cli.common import (
    AcceptNewHostKeyOption,
    ConnectTimeoutOption,
    HostOption,
    IdentityFileOption,
    SSHConfigOption,
    open_device,
)

DEFAULT_ARTIFACTS = Path("runs/mnist")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


@app.command("deploy")
def deploy_command(
    artifacts_dir: Path = typer.Argument(
        DEFAULT_ARTIFACTS, help="Artifacts directory from edgeq train + quantize (manifest.json, "
                                "both .tflite files, eval.npz)."),
    host: HostOption = ...,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None,
    device_dir: str = typer.Option("~/.edgeq", "--device-dir",
                                   help="Directory on the device for the agent, venv and store."),
    offline_wheels: Optional[bool] = typer.Option(
        None, "--offline-wheels/--index-wheels",
        help="Download the device's wheels on this host and push them (for boards without "
             "internet) / let the device install from the package index. Default: offline "
             "when the device cannot reach PyPI."),
    runtime: str = typer.Option("auto", "--runtime",
                                help="TFLite runtime: auto (ai-edge-litert where a wheel exists, "
                                     "else tflite-runtime), litert or tflite-runtime."),
    no_daemon: bool = typer.Option(False, "--no-daemon",
                                   help="Install everything but leave the agent daemon stopped."),
    connect_timeout_s: ConnectTimeoutOption = 10.0,
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the edgeq.deploy/1 summary as JSON on stdout."),
) -> None:
    """Provision a device and push the agent, both models and the evaluation data.

    Files already on the device with the same sha256 are not sent again; every sent file is
    verified by sha256 on arrival and renamed into place, so an interrupted deploy leaves
    the previous deployment usable. deploy.sh then sets up the venv, the runtime and the daemon.
    """
    from edgeq.device.errors import UsageError
    from edgeq.host.artifacts import load_artifacts
    from edgeq.host.deploy import RUNTIMES, deploy

    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}",
                         hint="use --runtime auto")
    load_artifacts(artifacts_dir)  # bad artifacts fail before any connection is made

    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                        console=err_console, transient=True)
    task = progress.add_task("connecting", total=None)
    file_task: dict[str, Any] = {}

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total or None)

    def on_event(name: str, details: dict) -> None:
        if name == "probe":
            progress.update(task, description=f"probed {details.get('machine')}, Python "
                                              f"{details.get('python')}")
        elif name == "wheels":
            progress.console.print(f"wheels: {details['count']} for {details['runtime']} from "
                                   f"{details['cache']}", highlight=False)
        elif name == "send":
            file_task["name"] = Path(details["file"]).name
            progress.update(task, description=f"sending {file_task['name'][:40]}")
        elif name == "script":
            progress.update(task, description="deploy.sh: venv, runtime, daemon",
                            total=None, completed=0)

    conn = open_device(host, accept_new_host_key, ssh_config, identity_file, connect_timeout_s)
    with conn, progress:
        doc = deploy(conn, artifacts_dir, device_dir=device_dir, offline_wheels=offline_wheels,
                     runtime=runtime, start_daemon=not no_daemon, progress=on_progress,
                     events=on_event)
    if as_json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        sys.stdout.flush()
        return
    _render(doc)


def _render(doc: dict[str, Any]) -> None:
    from rich.table import Table

    console.print(f"[bold]deployed[/] to {doc['device']} ({doc['device_dir']}) in "
                  f"{doc['seconds']:.1f} s", highlight=False)
    console.print(f"device    {doc['arch']}, Python {doc['python']}, glibc {doc['glibc']}",
                  highlight=False)
    console.print(f"runtime   {doc['runtime']} (venv {doc['venv']})", highlight=False)
    console.print(f"daemon    {doc['daemon']}", highlight=False)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("what")
    table.add_column("files", justify="right")
    table.add_column("sent", justify="right")
    table.add_column("unchanged (skipped)", justify="right")
    for cat, label in (("model", "models"), ("data", "eval data"), ("agent", "agent code"),
                       ("script", "deploy.sh"), ("wheel", "wheels")):
        files = [f for f in doc["files"] if f["category"] == cat]
        if not files:
            continue
        sent = sum(f["size_bytes"] for f in files if f["sent"])
        skipped = sum(f["size_bytes"] for f in files if not f["sent"])
        table.add_row(label, str(len(files)), _human(sent), _human(skipped))
    table.add_row("[bold]total", str(len(doc["files"])), _human(doc["sent_bytes"]),
                  _human(doc["skipped_bytes"]))
    console.print(table)
    dep = doc.get("deployment") or {}
    console.print(f"current   {dep.get('model_name')}: float32 {str(dep.get('float32'))[:12]}, "
                  f"int8 {str(dep.get('int8'))[:12]}", highlight=False)
