"""`edgeq deploy`: put the models, the evaluation data and the agent on a device.

Parses options, opens the connection (common.open_device), calls edgeq.host.deploy.deploy
inside a `ui.task` transfer bar and renders what it did (render.deployed, or the
`edgeq.deploy/1` JSON with --json).
Imports: typer and edgeq.host.cli at import time; the library inside the command.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from edgeq.device.store import DEFAULT_HOME
from edgeq.host.cli import app, render, ui
from edgeq.host.cli.common import (
    AcceptNewHostKeyOption,
    ConnectTimeoutOption,
    DeviceDirOption,
    HostOption,
    IdentityFileOption,
    SSHConfigOption,
    open_device,
)
from edgeq.host.cli.ui import DEFAULT_ARTIFACTS_DIR, ArtifactsDirArgument, JsonOption

OfflineWheelsOption = Annotated[Optional[bool], typer.Option(
    "--offline-wheels/--index-wheels",
    help="Download the device's wheels on this host and push them (for boards without "
         "internet) / let the device install from the package index. Default: offline when "
         "the device cannot reach PyPI.")]
RuntimeOption = Annotated[str, typer.Option(
    "--runtime", help="TFLite runtime: auto (ai-edge-litert where a wheel exists, else "
                      "tflite-runtime), litert or tflite-runtime.")]
NoDaemonOption = Annotated[bool, typer.Option(
    "--no-daemon", help="Install everything but leave the agent daemon stopped.")]


@app.command("deploy")
def deploy_command(
    artifacts_dir: ArtifactsDirArgument = DEFAULT_ARTIFACTS_DIR,
    host: HostOption = ...,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None,
    device_dir: DeviceDirOption = DEFAULT_HOME,
    offline_wheels: OfflineWheelsOption = None,
    runtime: RuntimeOption = "auto",
    no_daemon: NoDaemonOption = False,
    connect_timeout_s: ConnectTimeoutOption = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Provision a device and push the agent, both models and the evaluation data.

    Files already on the device with the same sha256 are not sent again; every sent file is
    verified by sha256 on arrival and renamed into place, so an interrupted deploy leaves
    the previous deployment usable. deploy.sh then sets up the venv, the runtime and the daemon.
    With --json: the edgeq.deploy/1 summary.
    """
    from edgeq.device.errors import UsageError
    from edgeq.host.artifacts import load_artifacts
    from edgeq.host.deploy import RUNTIMES, deploy

    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}",
                         hint="use --runtime auto")
    load_artifacts(artifacts_dir)  # bad artifacts fail before any connection is made
    conn = open_device(host, accept_new_host_key, ssh_config, identity_file, connect_timeout_s)
    with conn, ui.task("connecting", transfer=True) as task:
        doc = deploy(conn, artifacts_dir, device_dir=device_dir, offline_wheels=offline_wheels,
                     runtime=runtime, start_daemon=not no_daemon, progress=task,
                     events=render.deploy_events(task))
    ui.print_json(doc) if as_json else render.deployed(doc)
