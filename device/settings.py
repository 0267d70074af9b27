"""Benchmark settings: what a measurement is asked to do, declared once, validated, no numpy.

`BenchSettings` is the one declaration: each field carries its type (the annotation; Optional
means null is allowed), its default, its limits and its help text (`setting(...)`). Everything
else is derived from it:
- `BenchSettings(...)` validation (UsageError), here;
- the daemon protocol's validation of bench/evaluate args (edgeq.device.protocol, ProtocolError);
- the agent's argparse flags (edgeq.device.__main__) and a worker's argv (`to_argv`, used by
  edgeq.device.worker and by the host's one-shot path);
- what the host passes (edgeq.host.bench_remote).
Fields marked `timing` only concern `bench` (timed runs); `evaluate` takes the others.
Kept apart from edgeq.device.bench so the daemon and the host can build and check settings
without importing numpy or a runtime.
Imports: standard library and edgeq.device.errors only.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Union

from edgeq.device.errors import UsageError

__all__ = ["BenchSettings", "Setting", "setting", "SETTINGS", "SETTING_NAMES", "RUNTIME_NAMES",
           "settings_argv", "inconsistency"]

#: the TFLite runtimes a setting may name, in order of preference (edgeq.device.runtime)
RUNTIME_NAMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")

_META_KEY = "edgeq.setting"


def setting(default: Any, help: str, *, lo: Optional[float] = None,
            hi: Optional[float] = None, choices: Optional[tuple[str, ...]] = None,
            timing: bool = False, off_help: str = "") -> Any:
    """A BenchSettings field: its default, help text and limits (`lo`..`hi` inclusive, or
    `choices`); `timing`: bench only; `off_help`: the help of a bool's --no-FLAG."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "timing": timing,
            "off_help": off_help}
    return dataclasses.field(default=default, metadata={_META_KEY: meta})


@dataclass(frozen=True)
class Setting:
    """One declared field of BenchSettings, as the protocol, argparse and argv see it."""

    name: str
    type: type  # int, float, bool or str
    nullable: bool
    default: Any
    help: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: Optional[tuple[str, ...]] = None
    timing: bool = False
    off_help: str = ""

    @property
    def flag(self) -> str:
        """The command-line flag ("--warmup-s-min")."""
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """What a valid value is, for error messages ("an integer in [1, 256]")."""
        if self.type is bool:
            what = "true or false"
        elif self.choices is not None:
            what = f"one of {', '.join(self.choices)}"
        else:
            noun = "an integer" if self.type is int else "a number" if self.type is float \
                else "a string"
            lo, hi = self._shown(self.lo), self._shown(self.hi)
            if lo and hi:
                what = f"{noun} in [{lo}, {hi}]"
            elif lo:
                what = f"{noun} >= {lo}"
            elif hi:
                what = f"{noun} <= {hi}"
            else:
                what = noun
        return what + (" or null" if self.nullable else "")

    def _shown(self, limit: Optional[float]) -> str:
        if limit is None:
            return ""
        return str(int(limit)) if self.type is int else f"{limit:g}"

    def is_valid(self, value: Any) -> bool:
        """Whether `value` has this field's type (JSON-wise: 2 is a valid float, True is no
        int) and lies within its limits."""
        if value is None:
            return self.nullable
        if self.type is bool:
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.type is int:
            ok = isinstance(value, int)
        elif self.type is float:
            ok = isinstance(value, (int, float)) and math.isfinite(value)
        else:
            ok = isinstance(value, str)
        if not ok:
            return False
        if self.choices is not None and value not in self.choices:
            return False
        if self.lo is not None and value < self.lo:
            return False
        return self.hi is None or value <= self.hi

    def normalize(self, value: Any) -> Any:
        """A valid value in its canonical form (floats as float)."""
        return float(value) if self.type is float and value is not None else value

    def parse_text(self, text: str) -> Any:
        """A command-line word as this field's value; ValueError with a short reason."""
        if self.type is int:
            try:
                value: Any = int(text)
            except ValueError:
                raise ValueError(f"{text!r} is not an integer") from None
        elif self.type is float:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
        else:
            value = text
        if not self.is_valid(value):
            raise ValueError(f"{text} is not {self.describe()}")
        return self.normalize(value)

    def to_argv(self, value: Any) -> list[str]:
        """The argv words that set this field to `value` (none for null)."""
        if value is None:
            return []
        if self.type is bool:
            return [self.flag] if value else ["--no-" + self.flag[2:]]
        if self.type is float:
            return [self.flag, repr(float(value))]
        return [self.flag, str(value)]


def _unwrap(annotation: Any) -> tuple[type, bool]:
    """(type, nullable) of an annotation like `int` or `Optional[int]`."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


@dataclass(frozen=True)
class BenchSettings:
    """How to measure; every field is recorded in the result's `settings`."""

    threads: int = setting(1, "interpreter threads", lo=1, hi=256)
    xnnpack: bool = setting(
        True, "use the XNNPACK delegate",
        off_help="run without default delegates (op resolver BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
    batch_size: int = setting(32, "batch for throughput and evaluation", lo=1, hi=4096)
    warmup_runs_min: int = setting(10, "minimum warm-up runs", lo=0, hi=100_000, timing=True)
    warmup_s_min: float = setting(0.5, "minimum warm-up seconds", lo=0.0, hi=600.0, timing=True)
    runs_min: int = setting(50, "minimum timed runs", lo=1, hi=1_000_000, timing=True)
    run_s_min: float = setting(2.0, "minimum timed seconds", lo=0.0, hi=3600.0, timing=True)
    runs_max: int = setting(5000, "at most this many timed runs", lo=1, hi=1_000_000,
                            timing=True)
    mlperf_min_s: Optional[float] = setting(
        None, "MLPerf single-stream mode: batch-1 queries back to back for at least this many "
        "seconds (MLPerf: 600) and 100 queries, reporting MLPerf's early-stopping p90 "
        "(edgeq.device.mlperf)", lo=0.0, hi=86400.0, timing=True)
    eval_limit: Optional[int] = setting(None, "evaluate on the first N images only", lo=1)
    runtime: Optional[str] = setting(
        None, "force a TFLite runtime (default: the first installed)", choices=RUNTIME_NAMES)

    def __post_init__(self) -> None:
        for s in SETTINGS:
            value = getattr(self, s.name)
            if not s.is_valid(value):
                raise UsageError(f"{s.name} must be {s.describe()}, not {value!r}",
                                 hint=f"pass a valid {s.flag}")
        problem = inconsistency(asdict(self))
        if problem is not None:
            raise UsageError(*problem)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return SETTING_NAMES

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, strict: bool = True) -> "BenchSettings":
        """Settings from a mapping of field values; unknown keys are an error when `strict`,
        else ignored (e.g. a request's args or an argparse namespace)."""
        unknown = set(d) - set(SETTING_NAMES)
        if unknown and strict:
            raise UsageError(f"unknown bench setting(s): {', '.join(sorted(unknown))}",
                             hint=f"known: {', '.join(SETTING_NAMES)}")
        return cls(**{k: v for k, v in d.items() if k in SETTING_NAMES})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_argv(self, *, timing: bool = True) -> list[str]:
        """The agent flags for these settings (the `timing` ones only when `timing`)."""
        return settings_argv({s.name: getattr(self, s.name) for s in SETTINGS
                              if timing or not s.timing})


def _declared() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(BenchSettings)
    out = []
    for f in dataclasses.fields(BenchSettings):
        typ, nullable = _unwrap(hints[f.name])
        out.append(Setting(name=f.name, type=typ, nullable=nullable, default=f.default,
                           **f.metadata[_META_KEY]))
    return tuple(out)


#: the declared fields, in declaration order
SETTINGS: tuple[Setting, ...] = _declared()
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in SETTINGS)
_BY_NAME = {s.name: s for s in SETTINGS}


def inconsistency(values: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """(message, hint) when fields that are valid alone contradict each other, else None.
    Fields missing from `values` are not checked."""
    lo, hi = values.get("runs_min"), values.get("runs_max")
    if lo is not None and hi is not None and hi < lo:
        return (f"runs_max ({hi}) is below runs_min ({lo})", "raise runs_max or lower runs_min")
    return None


def settings_argv(values: Mapping[str, Any]) -> list[str]:
    """Agent flags for some settings (by name; null values are left out)."""
    argv: list[str] = []
    for name, value in values.items():
        s = _BY_NAME.get(name)
        if s is None:
            raise UsageError(f"unknown bench setting {name!r}",
                             hint=f"known: {', '.join(SETTING_NAMES)}")
        argv += s.to_argv(value)
    return argv
