"""The CLI stays thin and documented: every command has help, and `--help` never pays for TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import click
import typer.main
from edgeq.host import cli


def _all_commands() -> dict[str, click.Command]:
    cli._register_commands()
    group = typer.main.get_command(cli.app)
    assert isinstance(group, click.Group)
    found: dict[str, click.Command] = {}

    def walk(prefix: str, command: click.Command) -> None:
        found[prefix] = command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(f"{prefix} {name}".strip(), sub)

    walk("", group)
    return found


def test_the_main_commands_exist() -> None:
    names = set(_all_commands())
    for expected in (
        "train",
        "quantize",
        "evaluate",
        "inspect",
        "deploy",
        "bench-remote",
        "history",
        "run",
        "report",
        "sweep",
    ):
        assert expected in names, f"edgeq {expected} is missing"


def test_every_command_and_option_has_help() -> None:
    for name, command in _all_commands().items():
        if not name:
            continue
        assert (command.help or "").strip(), f"edgeq {name} has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert (param.help or "").strip(), f"edgeq {name} {param.opts[0]} has no help text"


def test_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from edgeq.host.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'paramiko', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in out.stdout, out.stdout[-500:]


def test_bench_options_come_from_the_settings_declaration() -> None:
    """bench-remote and run take --threads, --eval-limit, --runs-min, --run-s-min with the help
    text and limits of edgeq.device.settings, so the CLI refuses what the device would.
    --threads is a comma list (a matrix): its help states the declared range and every value
    is checked against the declaration (edgeq.host.matrix)."""
    from edgeq.device.settings import SETTINGS

    declared = {s.flag: s for s in SETTINGS}
    commands = _all_commands()
    for name in ("bench-remote", "run"):
        params = {opt: p for p in commands[name].params for opt in p.opts}
        for flag in ("--threads", "--eval-limit", "--runs-min", "--run-s-min"):
            s, p = declared[flag], params[flag]
            assert s.help.lower() in (p.help or "").lower(), (name, flag)
            ptype = p.type
            if flag == "--threads":
                assert s.describe() in (p.help or ""), (name, p.help)
                continue
            assert getattr(ptype, "min", None) == s.lo and getattr(ptype, "max", None) == s.hi
    too_many = int(declared["--threads"].hi) + 1
    for threads in (str(too_many), f"1,{too_many}"):
        result = subprocess.run(
            [sys.executable, "-m", "edgeq.host", "bench-remote", "--host", "local", "--threads",
             threads], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and str(too_many) in result.stderr
        assert "integer in [1, 256]" in result.stderr
