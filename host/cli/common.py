"""Device options shared by CLI commands: the SSH options and `--device-dir` of `deploy`,
`bench-remote` and `run`, the bench settings `bench-remote` and `run` share, and the history
run lookup of `history show/compare` and `report`.

Each option is declared once here as an `Annotated` type, so every command that talks to a
device spells, documents and parses it the same way; `open_device` is the one place a command
opens its connection. (Presentation and the other shared options: edgeq.host.cli.ui.)
The board options (`--host` repeated, `--inventory`, `--limit`, `--forks`) and the matrix lists
(`--threads 1,2`, `--xnnpack on,off`, `--runtime`, `--seed`) are declared here too.
Imports: typer and edgeq.device.{settings,store} at import time; edgeq.host.link,
edgeq.host.fleet and edgeq.device.errors inside functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from edgeq.device.settings import SETTINGS
from edgeq.device.store import DEFAULT_HOME

if TYPE_CHECKING:
    from edgeq.host.history import History
    from edgeq.host.link import Connection

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}

HOST_HELP = ("Device: local (this machine, no SSH), pi.local, user@host, user@host:port or an "
             "alias from ~/.ssh/config.")

HostOption = Annotated[str, typer.Option("--host", help=HOST_HELP)]
AcceptNewHostKeyOption = Annotated[bool, typer.Option(
    "--accept-new-host-key", help="Trust and record an unknown host key (never a changed one).")]
SSHConfigOption = Annotated[Optional[Path], typer.Option(
    "--ssh-config", help="SSH config file (default ~/.ssh/config).")]
IdentityFileOption = Annotated[Optional[Path], typer.Option(
    "--identity-file", "-i", help="Private key file to log in with.")]
ConnectTimeoutOption = Annotated[float, typer.Option(
    "--connect-timeout", help="Seconds to wait for the SSH connection.")]
DeviceDirOption = Annotated[str, typer.Option(
    "--device-dir", help=f"The edgeq directory on the device (agent, venv, model store); "
                         f"default {DEFAULT_HOME}.", show_default=False)]

# bench settings as `bench-remote` and `run` take them: help and limits come from their one
# declaration (edgeq.device.settings), which also checks the values; unset = the agent's default


def _setting_option(name: str, note: str = "") -> Any:
    """A typer.Option for the declared bench setting `name` (its flag, help and limits)."""
    s = SETTINGS_BY_NAME[name]
    limits = {"min": s.lo, "max": s.hi} if s.type in (int, float) else {}
    return typer.Option(s.flag, help=s.help[:1].upper() + s.help[1:] + note + ".", **limits)


ThreadsOption = Annotated[int, _setting_option(
    "threads", " (on the device, and on the host for run)")]
EvalLimitOption = Annotated[Optional[int], _setting_option("eval_limit")]
RunsMinOption = Annotated[Optional[int], _setting_option("runs_min", " per round")]
RunSMinOption = Annotated[Optional[float], _setting_option("run_s_min", " per round")]
MlperfMinSOption = Annotated[Optional[float], _setting_option("mlperf_min_s", " per round")]
# several boards (edgeq.host.inventory, edgeq.host.fleet) and the settings matrix
# (edgeq.host.matrix): a comma list in --threads/--xnnpack/--runtime makes a matrix
HostsOption = Annotated[Optional[list[str]], typer.Option(
    "--host", help=HOST_HELP + " Repeat it for several boards.", show_default=False)]
InventoryOption = Annotated[Optional[Path], typer.Option(
    "--inventory", help="Ansible inventory (INI or YAML) of the boards: groups, ansible_host, "
                        "ansible_user, ansible_port, ansible_ssh_private_key_file, "
                        "edgeq_device_dir (needs pip install 'edgeq[lab]').")]
LimitOption = Annotated[Optional[str], typer.Option(
    "--limit", help="Only these boards: an Ansible host pattern (group, host, a:b, a:!b).")]
ForksOption = Annotated[int, typer.Option("--forks", min=1, help="Boards worked on at once.")]
ThreadsListOption = Annotated[str, typer.Option(
    "--threads", help=SETTINGS_BY_NAME["threads"].help[:1].upper()
    + SETTINGS_BY_NAME["threads"].help[1:] + " (on the device, and on the host for run); "
    f"{SETTINGS_BY_NAME['threads'].describe()}, or a comma list (1,2,4) for a matrix.")]
XnnpackListOption = Annotated[Optional[str], typer.Option(
    "--xnnpack", help="XNNPACK delegate: on, off, or on,off for a matrix (default on).",
    show_default=False)]
RuntimeListOption = Annotated[Optional[str], typer.Option(
    "--runtime", help="Force a TFLite runtime on the device: litert, tflite-runtime, or a "
                      "comma list for a matrix (default: the first installed).")]
OrderSeedOption = Annotated[Optional[int], typer.Option(
    "--seed", help="Seed of the matrix's random order per board (default: a fresh one, "
                   "recorded in the fleet run).", show_default=False)]
RoundsOption = Annotated[int, typer.Option(
    "--rounds", help="Alternated rounds (ABBA...): float32 and int8 each run once per "
                            "round; latencies are pooled over rounds.")]


def open_device(host: str, accept_new_host_key: bool, ssh_config: Optional[Path],
                identity_file: Optional[Path], connect_timeout_s: float = 10.0) -> Connection:
    """The connection for `--host` (`local` = this machine); use it as a context manager."""
    from edgeq.host.link import open_connection

    return open_connection(host, accept_new_host_key=accept_new_host_key, ssh_config=ssh_config,
                           identity_file=identity_file, connect_timeout_s=connect_timeout_s)


def connect_options(accept_new_host_key: bool, ssh_config: Optional[Path],
                    identity_file: Optional[Path], connect_timeout_s: float) -> dict[str, Any]:
    """The link options every board of a command shares (edgeq.host.link.open_connection)."""
    return {"accept_new_host_key": accept_new_host_key, "ssh_config": ssh_config,
            "identity_file": identity_file, "connect_timeout_s": connect_timeout_s}


def fleet_failed(doc: dict[str, Any], show_errors: bool = False) -> None:
    """FleetFailedError (the device-error exit code) when some board of `doc` failed;
    `show_errors` first prints each failed board's one-line error (the tables print them,
    --json output does not)."""
    from edgeq.host.cli import render
    from edgeq.host.fleet import FleetFailedError

    if show_errors:
        render.board_errors(doc["boards"])
    failed = [b["board"] for b in doc["boards"] if not b["ok"]]
    if failed:
        raise FleetFailedError(
            f"{len(failed)} of {len(doc['boards'])} boards failed: {', '.join(failed)}",
            hint="each board's own error is shown above; --limit "
                 f"{':'.join(failed)} runs only those again")


def history_run(history: History, run: str, empty_hint: str) -> dict[str, Any]:
    """The stored compare document for `run` (a run id, or `latest`) from `history`."""
    from edgeq.device.errors import UsageError

    if run == "latest":
        doc = history.latest()
        if doc is None:
            raise UsageError(f"no runs yet in {history.path}", hint=empty_hint)
        return doc
    try:
        run_id = int(run)
    except ValueError:
        raise UsageError(f"run must be a number or 'latest', not {run!r}",
                         hint="`edgeq history` lists the runs") from None
    return history.get(run_id)
