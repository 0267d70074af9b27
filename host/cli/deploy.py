"""`edgeq deploy`: put the models, the evaluation data and the agent on a device.

Parses options, opens the connection (common.open_device), calls edgeq.host.deploy.deploy
inside a `ui.task` transfer bar and renders what it did (render.deployed, or the
`edgeq.deploy/1` JSON with --json). Several boards: edgeq.host.fleet.deploy_fleet inside the
live board table (ui.boards_view), then render.fleet_deployed or `edgeq.fleet_deploy/1`.
Imports: typer and edgeq.host.cli at import time; the library inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from edgeq.device.store import DEFAULT_HOME
from edgeq.host.cli import app, render, ui
from edgeq.host.cli.common import (
    AcceptNewHostKeyOption,
    ConnectTimeoutOption,
    DeviceDirOption,
    ForksOption,
    HostsOption,
    IdentityFileOption,
    InventoryOption,
    LimitOption,
    SSHConfigOption,
    connect_options,
    fleet_failed,
    open_device,
)
from edgeq.host.cli.ui import DEFAULT_ARTIFACTS_DIR, ArtifactsDirArgument, JsonOption
from edgeq.host.fleet import DEFAULT_FORKS

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
    host: HostsOption = None, inventory: InventoryOption = None, limit: LimitOption = None,
    forks: ForksOption = DEFAULT_FORKS,
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
    With --json: the edgeq.deploy/1 summary. Several boards (--host repeated, --inventory):
    deployed at once (--forks), each with its own result or error (edgeq.fleet_deploy/1).
    """
    from edgeq.device.errors import UsageError
    from edgeq.host.artifacts import load_artifacts
    from edgeq.host.deploy import RUNTIMES
    from edgeq.host.inventory import board_targets

    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}",
                         hint="use --runtime auto")
    load_artifacts(artifacts_dir)  # bad artifacts fail before any connection is made
    targets = board_targets(host, inventory, limit, device_dir)
    link = connect_options(accept_new_host_key, ssh_config, identity_file, connect_timeout_s)
    options = {"offline_wheels": offline_wheels, "runtime": runtime,
               "start_daemon": not no_daemon}
    (_deploy_fleet if len(targets) > 1 else _deploy_one)(
        targets, artifacts_dir, device_dir, link, options, as_json, forks)


def _deploy_one(targets: list[Any], artifacts_dir: Path, device_dir: str, link: dict[str, Any],
                options: dict[str, Any], as_json: bool, forks: int) -> None:
    """One board: the transfer bar and the edgeq.deploy/1 summary, as deploy always did."""
    from edgeq.host.deploy import deploy

    target = targets[0]
    conn = open_device(target.spec, link["accept_new_host_key"], link["ssh_config"],
                       target.key_file or link["identity_file"], link["connect_timeout_s"])
    with conn, ui.task("connecting", transfer=True) as task:
        doc = deploy(conn, artifacts_dir, device_dir=target.device_dir or device_dir,
                     progress=task, events=render.deploy_events(task), **options)
    ui.print_json(doc) if as_json else render.deployed(doc)


def _deploy_fleet(targets: list[Any], artifacts_dir: Path, device_dir: str,
                  link: dict[str, Any], options: dict[str, Any], as_json: bool,
                  forks: int) -> None:
    """Many boards at once: the live board table, then one row per board (or the
    edgeq.fleet_deploy/1 JSON); the device-error exit code when a board failed."""
    from edgeq.host.fleet import deploy_fleet

    with ui.boards_view([(t.name, t.spec) for t in targets]) as view:
        doc = deploy_fleet(targets, artifacts_dir, forks=forks, device_dir=device_dir,
                           connect_options=link, deploy_options=options,
                           events=render.fleet_events(view))
    ui.print_json(doc) if as_json else render.fleet_deployed(doc)
    fleet_failed(doc, show_errors=as_json)
