"""CLI: `edgeq profile ART --host H`: per-layer latency of float32 and int8 on the device.

Parses options, calls edgeq.host.profile.profile inside a `ui.task` (progress on stderr, so
`--json` stays machine-readable) and renders its table here (edgeq.host.profile builds the
cells); with --out DIR it writes profile.json and profile.png (profile_figure) there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from edgeq.device.store import DEFAULT_HOME
from edgeq.host.cli import app, ui
from edgeq.host.cli.common import (
    AcceptNewHostKeyOption,
    ConnectTimeoutOption,
    DeviceDirOption,
    HostOption,
    IdentityFileOption,
    SSHConfigOption,
    ThreadsOption,
    open_device,
)
from edgeq.host.cli.ui import JsonOption

OutOption = Annotated[Optional[Path], typer.Option(
    "--out", help="Also write profile.json and the figure profile.png into this directory.")]
RunsOption = Annotated[int, typer.Option(
    "--runs", min=1, help="Timed runs per cut model, spread over the rounds.")]
TimeoutOption = Annotated[float, typer.Option(
    "--timeout", min=1.0, max=86400.0,
    help="Seconds the device may spend timing (the worker is stopped past it).")]
ProfileRoundsOption = Annotated[int, typer.Option(
    "--rounds", min=1, max=1000, help="Interleaved rounds (every cut model once per round, "
                                      "in a seeded shuffled order).")]


@app.command("profile")
def profile_command(
    artifacts_dir: Annotated[Path, typer.Argument(help="Artifacts with the two models.")],
    host: HostOption = ...,
    threads: ThreadsOption = 1,
    no_xnnpack: Annotated[bool, typer.Option("--no-xnnpack", help="Without XNNPACK.")] = False,
    runs: RunsOption = 200,
    rounds: ProfileRoundsOption = 10,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the round order.")] = 0,
    device_dir: DeviceDirOption = DEFAULT_HOME,
    no_daemon: Annotated[bool, typer.Option("--no-daemon", help="One-shot agent.")] = False,
    timeout_s: TimeoutOption = 900.0,
    out: OutOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    ssh_config: SSHConfigOption = None,
    identity_file: IdentityFileOption = None,
    connect_timeout_s: ConnectTimeoutOption = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Per-layer latency of the float32 and int8 models on the device (prefix sub-models cut
    from each .tflite, timed interleaved, differenced), the int8/float32 ratio per layer and
    the layers XNNPACK took; checks that the layers add up to the whole model."""
    from edgeq.host.profile import profile, profile_figure

    with open_device(host, accept_new_host_key, ssh_config, identity_file,
                     connect_timeout_s) as conn, ui.task("profiling") as task:
        doc = profile(conn, artifacts_dir, device_dir=device_dir, threads=threads,
                      xnnpack=not no_xnnpack, runs_min=runs, rounds=rounds, seed=seed,
                      use_daemon=not no_daemon, timeout_s=timeout_s, events=_events(task))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.json").write_text(json.dumps(doc, indent=1) + "\n")
        profile_figure(doc, out / "profile.png")
    ui.print_json(doc) if as_json else render_profile(doc)


def _events(task: ui.Task) -> Any:
    def on_event(name: str, d: dict) -> None:
        if name == "cut":
            task.note(f"cut {d['models']} models ({d['ops']} ops)")
        elif name == "pushed":
            task.note(f"pushed {d['sent']} new of {d['total']} to {d['directory']}")
        elif name == "path":
            task.describe(f"timing through the {d['path']}"
                          + (f" ({d['daemon_error']})" if d.get("daemon_error") else ""))
    return on_event


def render_profile(doc: dict[str, Any]) -> None:
    """The per-layer table, then one check line per model."""
    from edgeq.host.profile import check_lines, table_rows
    from rich.table import Table

    s = doc["settings"]
    table = Table(title=ui.escape(
        f"{doc['model_name']} on {doc['host']}: per-layer p50 ms (threads {s['threads']}, "
        f"XNNPACK {'on' if s['xnnpack'] else 'off'}, {s['rounds']} rounds, {s['path']})"))
    for name in ("#", "op", "tensor", "f32 ms", "i8 ms", "i8/f32", "XNNPACK", "alone f32",
                 "alone i8"):
        table.add_column(name, justify="left" if name in ("op", "tensor") else "right")
    for row in table_rows(doc):
        table.add_row(*map(ui.escape, row))
    ui.console.print(table)
    for line in check_lines(doc):
        ui.console.print(ui.escape(line), highlight=False, soft_wrap=True)
