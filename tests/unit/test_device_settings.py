"""The bench settings are declared once (edgeq.device.settings) and everything follows.

Each test loops over the declaration, so a field added to BenchSettings is checked by every
test here without editing it: it must be an agent flag with the declared default, validated
by the protocol and by BenchSettings at the declared limits, and survive the trip
settings -> worker argv -> agent argparse -> settings.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from edgeq.device.__main__ import build_parser, settings_from_args
from edgeq.device.errors import ProtocolError, UsageError
from edgeq.device.protocol import OPS, Request, decode_request, encode_request
from edgeq.device.runtime import RUNTIMES
from edgeq.device.settings import (
    RUNTIME_NAMES,
    SETTING_NAMES,
    SETTINGS,
    BenchSettings,
    Setting,
    settings_argv,
)
from edgeq.device.worker import worker_argv

SHA = "ab" * 32


def _other_value(s: Setting) -> Any:
    """A valid value of `s` just above its default (so the cross-field rule still holds)."""
    if s.type is bool:
        return not s.default
    if s.choices is not None:
        return s.choices[-1]
    base = s.default if s.default is not None else (s.lo if s.lo is not None else 0)
    value = (base + 1) if s.type is int else (base + 0.25)
    assert s.is_valid(value) and value != s.default
    return value


def _out_of_range(s: Setting) -> list[Any]:
    """Values just outside `s`'s limits, of the right type otherwise."""
    bad: list[Any] = []
    step = 1 if s.type is int else 0.5
    if s.lo is not None:
        bad.append(s.type(s.lo - step))
    if s.hi is not None:
        bad.append(s.type(s.hi + step))
    if s.choices is not None:
        bad.append("no-such-" + s.name)
    return bad


def _wrong_type(s: Setting) -> list[Any]:
    if s.type is bool:
        return [1, "true"]
    if s.type is int:
        return [True, 1.5, "3"]
    if s.type is float:
        return [True, "1.0", float("nan")]
    return [3, True]


def _flags(subcommand: str) -> dict[str, Any]:
    """option string -> argparse action of one agent subcommand."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {opt: a for a in sub.choices[subcommand]._actions for opt in a.option_strings}


def test_the_declaration_is_complete() -> None:
    assert SETTING_NAMES == BenchSettings.field_names() == tuple(BenchSettings().to_dict())
    for s in SETTINGS:
        assert s.help and s.type in (int, float, bool, str), s
        assert s.is_valid(s.default), f"{s.name}: the default breaks its own limits"
        assert s.type is not bool or s.off_help, f"{s.name}: a bool needs --no- help"
    # the runtime names a setting can take are the runtimes the adapter knows, in order
    assert tuple(RUNTIMES) == RUNTIME_NAMES


@pytest.mark.parametrize("subcommand", ["bench", "evaluate"])
def test_every_setting_is_an_agent_flag(subcommand: str) -> None:
    flags = _flags(subcommand)
    args = build_parser().parse_args([subcommand, "m.tflite", "--data", "e.npz"])
    for s in SETTINGS:
        wanted = subcommand == "bench" or not s.timing
        assert (s.flag in flags) == wanted, (subcommand, s.flag)
        if wanted:
            assert getattr(args, s.name) == s.default
            assert s.help in (flags[s.flag].help or "")
            if s.type is bool:
                assert "--no-" + s.flag[2:] in flags
    assert settings_from_args(args) == BenchSettings()


def test_agent_flags_enforce_the_limits() -> None:
    parser = build_parser()
    for s in SETTINGS:
        for bad in _out_of_range(s):
            with pytest.raises(UsageError, match=s.flag):
                parser.parse_args(["bench", "m.tflite", s.flag, str(bad)])


@pytest.mark.parametrize("op", ["bench", "evaluate"])
def test_the_protocol_validates_every_setting(op: str) -> None:
    spec = OPS[op]
    for s in SETTINGS:
        if s.timing and op != "bench":
            assert s.name not in spec
            continue
        validator, required, default = spec[s.name]
        assert not required and default == s.default
        for good in (s.default, _other_value(s)):
            req = decode_request(encode_request(Request(1, op, {"model": "int8", s.name: good})))
            assert req.args[s.name] == good
        limits = [s.lo, s.hi] if s.type is not bool and s.choices is None else []
        for edge in limits:
            if edge is not None:
                args = {"model": "int8", s.name: s.type(edge)}
                if s.name in ("runs_min", "runs_max"):  # the cross-field rule holds
                    args.update(runs_min=s.type(edge), runs_max=s.type(edge))
                assert decode_request(encode_request(Request(1, op, args))).args[s.name] == edge
        for bad in _out_of_range(s) + _wrong_type(s):
            line = json.dumps({"id": 1, "op": op, "args": {"model": "int8", s.name: bad}})
            with pytest.raises(ProtocolError, match=f"argument '{s.name}' must be "
                                                    f"{s.describe()[:12]}"):
                decode_request(line.encode() + b"\n")
        if not s.nullable:
            with pytest.raises(ProtocolError, match=s.name):
                decode_request(encode_request(Request(1, op, {"model": "int8", s.name: None})))


def test_bench_settings_validate_with_the_same_limits() -> None:
    for s in SETTINGS:
        assert BenchSettings(**{s.name: _other_value(s)}).to_dict()[s.name] == _other_value(s)
        for bad in _out_of_range(s) + _wrong_type(s):
            with pytest.raises(UsageError, match=s.name) as info:
                BenchSettings(**{s.name: bad})
            assert s.flag in info.value.hint


def test_cross_field_rule_is_the_same_everywhere() -> None:
    with pytest.raises(UsageError, match="runs_max"):
        BenchSettings(runs_min=10, runs_max=5)
    with pytest.raises(ProtocolError, match="runs_max"):
        decode_request(encode_request(Request(1, "bench", {"model": SHA, "runs_min": 10,
                                                          "runs_max": 5})))


@pytest.mark.parametrize("kind", ["bench", "evaluate"])
def test_worker_argv_round_trips(kind: str) -> None:
    """settings -> worker argv -> the agent's parser -> the same settings."""
    changed = {s.name: _other_value(s) for s in SETTINGS if kind == "bench" or not s.timing}
    if "runs_max" in changed:  # keep the cross-field rule satisfied
        changed["runs_max"] = max(changed["runs_max"], changed.get("runs_min", 1))
    settings = BenchSettings(**changed)
    argv = worker_argv(kind, "/m.tflite", data_path="/e.npz", settings=settings, sha256=SHA)
    assert argv[1:4] == ["-m", "edgeq.device", kind]
    args = build_parser().parse_args(argv[3:])
    assert settings_from_args(args) == settings
    assert args.sha256 == SHA and args.json
    # and the defaults survive too
    default_args = build_parser().parse_args(
        worker_argv(kind, "/m.tflite", data_path="/e.npz", settings=BenchSettings())[3:])
    assert settings_from_args(default_args) == BenchSettings()


def test_settings_argv_of_some_settings() -> None:
    """What the host's one-shot path sends: only the settings it was given."""
    assert settings_argv({"threads": 2, "xnnpack": False, "eval_limit": None}) == [
        "--threads", "2", "--no-xnnpack"]
    with pytest.raises(UsageError, match="unknown bench setting"):
        settings_argv({"bogus": 1})
