"""--host parsing and ~/.ssh/config resolution (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgeq.host.link import BadTargetError, LinkError, quote_argv
from edgeq.host.link.ssh import parse_target, resolve_target


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("pi.local", (None, "pi.local", None)),
        ("pi@pi.local", ("pi", "pi.local", None)),
        ("pi@10.0.0.7:2222", ("pi", "10.0.0.7", 2222)),
        ("[fe80::1]:2200", (None, "fe80::1", 2200)),
        ("admin@[::1]:22", ("admin", "::1", 22)),
        ("fe80::1", (None, "fe80::1", None)),
        ("my-board", (None, "my-board", None)),
    ],
)
def test_parse_target(spec: str, expected: tuple) -> None:
    assert parse_target(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "pi@", "@host", "pi@host:0", "pi@host:99999", "host:abc", "a b", "[::1", "[::1]x"]
)
def test_bad_targets_are_one_line_errors(spec: str) -> None:
    with pytest.raises(BadTargetError) as info:
        parse_target(spec)
    assert "\n" not in str(info.value) and info.value.hint


def test_ssh_config_alias_is_honoured(tmp_path: Path) -> None:
    key = tmp_path / "id_board"
    key.write_text("not used here")
    config = tmp_path / "config"
    config.write_text(
        "Host board\n"
        "  HostName 192.0.2.10\n"
        "  User pi\n"
        "  Port 2202\n"
        f"  IdentityFile {key}\n"
        f"  UserKnownHostsFile {tmp_path}/kh\n"
        "  ProxyJump jump@gateway\n"
        "Host *\n"
        "  User nobody-else\n"
    )
    target = resolve_target("board", config)
    assert (target.hostname, target.user, target.port) == ("192.0.2.10", "pi", 2202)
    assert target.identity_files == (str(key),)
    assert target.known_hosts_files == (f"{tmp_path}/kh",)
    assert target.proxy_jump == "jump@gateway"
    # explicit user and port on the command line win over the config
    explicit = resolve_target("root@board:22", config)
    assert (explicit.user, explicit.port, explicit.hostname) == ("root", 22, "192.0.2.10")
    other = resolve_target("elsewhere", config)
    assert (other.hostname, other.user, other.port) == ("elsewhere", "nobody-else", 22)


def test_missing_explicit_ssh_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="does not exist"):
        resolve_target("board", tmp_path / "nope")


def test_remote_words_are_quoted() -> None:
    line = quote_argv(["printf", "%s\n", "a b", "it's", "$(reboot)", ";rm -rf /"])
    assert line == "printf '%s\n' 'a b' 'it'\"'\"'s' '$(reboot)' ';rm -rf /'"
