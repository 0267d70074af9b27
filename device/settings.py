"""Benchmark settings: what a measurement is asked to do, validated, without numpy.

Kept apart from edgeq.device.bench so the daemon and the host can build and check settings
without importing numpy or a runtime (the daemon stays small; workers do the measuring).
Imports: standard library and edgeq.device.errors only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from edgeq.device.errors import UsageError

__all__ = ["BenchSettings"]


@dataclass(frozen=True)
class BenchSettings:
    """How to measure; every field is recorded in the result's `settings`."""

    threads: int = 1
    xnnpack: bool = True
    batch_size: int = 32
    warmup_runs_min: int = 10
    warmup_s_min: float = 0.5
    runs_min: int = 50
    run_s_min: float = 2.0
    runs_max: int = 5000
    eval_limit: Optional[int] = None
    runtime: Optional[str] = None  # None: the first available (ai-edge-litert first)

    def __post_init__(self) -> None:
        def bad(name: str, what: str) -> UsageError:
            flag = "--" + name.replace("_", "-")
            return UsageError(f"{name} must be {what}, not {getattr(self, name)!r}",
                              hint=f"pass a valid {flag}")

        for name in ("threads", "batch_size", "runs_min", "runs_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "an integer >= 1")
        v = self.warmup_runs_min
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad("warmup_runs_min", "an integer >= 0")
        for name in ("warmup_s_min", "run_s_min"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0:
                raise bad(name, "a number of seconds >= 0")
        if not isinstance(self.xnnpack, bool):
            raise bad("xnnpack", "true or false")
        if self.runs_max < self.runs_min:
            raise UsageError(f"runs_max ({self.runs_max}) is below runs_min ({self.runs_min})",
                             hint="raise --runs-max or lower --runs-min")
        e = self.eval_limit
        if e is not None and (isinstance(e, bool) or not isinstance(e, int) or e < 1):
            raise bad("eval_limit", "an integer >= 1 or null")
        if self.runtime is not None and not isinstance(self.runtime, str):
            raise bad("runtime", "a runtime name or null")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchSettings":
        """Settings from a dict of field values (unknown keys are an error)."""
        unknown = set(d) - set(cls.field_names())
        if unknown:
            raise UsageError(f"unknown bench setting(s): {', '.join(sorted(unknown))}",
                             hint=f"known: {', '.join(cls.field_names())}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
