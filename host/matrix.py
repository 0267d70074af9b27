"""The settings matrix of a fleet run: threads x XNNPACK x runtime, in a recorded random order.

`Matrix.parse(threads="1,2,4", xnnpack="on,off", runtime="litert,tflite-runtime")` expands the
comma lists of the CLI into cells; every value is checked by its one declaration
(edgeq.device.settings.BenchSettings), so a cell is a valid setting before anything runs.
`litert` is accepted for the runtime `ai-edge-litert` (the name `edgeq deploy --runtime` uses).
`order(seed, board)` is the order the cells run in on one board: shuffled by a
random.Random seeded from the fleet's seed and the board's name, so the same seed gives the
same order again, and boards do not all walk the cells in the same order (a drift in the
lab's temperature does not hit one setting everywhere). Within a cell float32 and int8 still
alternate ABBA (edgeq.host.bench_remote).
Imports: standard library and edgeq.device (errors, settings).
"""
from __future__ import annotations

import hashlib
import itertools
import random
import secrets
from dataclasses import dataclass
from typing import Any, Optional

from edgeq.device.errors import UsageError
from edgeq.device.settings import SETTINGS

__all__ = ["Cell", "Matrix", "new_seed", "RUNTIME_ALIASES"]

_BY_NAME = {s.name: s for s in SETTINGS}
#: the CLI's short runtime names -> the setting's names
RUNTIME_ALIASES = {"litert": "ai-edge-litert"}
_ON = {"on": True, "true": True, "yes": True, "1": True,
       "off": False, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class Cell:
    """One setting of the matrix (runtime None: the board's first installed runtime)."""

    threads: int
    xnnpack: bool
    runtime: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "xnnpack": self.xnnpack, "runtime": self.runtime}

    @property
    def label(self) -> str:
        """Short text for a table ("2t xnn" / "1t off tflite-runtime")."""
        text = f"{self.threads}t {'xnn' if self.xnnpack else 'no-xnn'}"
        return text + (f" {self.runtime}" if self.runtime else "")


def _words(text: str, flag: str) -> list[str]:
    words = [w.strip() for w in str(text).split(",")]
    if not words or any(not w for w in words):
        raise UsageError(f"{flag} {text!r} has an empty value",
                         hint=f"a comma list without blanks, e.g. {flag} 1,2,4")
    if len(set(words)) != len(words):
        raise UsageError(f"{flag} {text!r} repeats a value", hint="give each value once")
    return words


def _checked(name: str, value: Any, flag: str) -> Any:
    s = _BY_NAME[name]
    if not s.is_valid(value):
        raise UsageError(f"{flag} {value!r} is not {s.describe()}", hint=f"pass a valid {flag}")
    return value


@dataclass(frozen=True)
class Matrix:
    """The lists given; `cells` is their product, in the given order."""

    threads: tuple[int, ...] = (1,)
    xnnpack: tuple[bool, ...] = (True,)
    runtime: tuple[Optional[str], ...] = (None,)

    @classmethod
    def parse(cls, threads: str = "1", xnnpack: Optional[str] = None,
              runtime: Optional[str] = None, *, no_xnnpack: bool = False) -> "Matrix":
        """The matrix of the CLI's comma lists (`no_xnnpack`: the older `--no-xnnpack` flag,
        same as `--xnnpack off`); UsageError on a value the settings refuse."""
        if no_xnnpack and xnnpack is not None:
            raise UsageError("--no-xnnpack and --xnnpack were both given",
                             hint="use --xnnpack off (or on,off for both)")
        xnnpack = xnnpack if xnnpack is not None else "off" if no_xnnpack else "on"
        t = []
        for word in _words(threads, "--threads"):
            try:
                t.append(_checked("threads", int(word), "--threads"))
            except ValueError:
                raise UsageError(f"--threads {word!r} is not an integer",
                                 hint="e.g. --threads 1,2,4") from None
        x = []
        for word in _words(xnnpack, "--xnnpack"):
            if word.lower() not in _ON:
                raise UsageError(f"--xnnpack {word!r} is not on or off",
                                 hint="e.g. --xnnpack on,off")
            x.append(_ON[word.lower()])
        if len(set(x)) != len(x):
            raise UsageError(f"--xnnpack {xnnpack!r} repeats a value", hint="--xnnpack on,off")
        r: list[Optional[str]] = [None]
        if runtime:
            r = [_checked("runtime", RUNTIME_ALIASES.get(w, w), "--runtime")
                 for w in _words(runtime, "--runtime")]
        return cls(tuple(t), tuple(x), tuple(r))

    @property
    def cells(self) -> list[Cell]:
        return [Cell(t, x, r) for t, x, r in itertools.product(self.threads, self.xnnpack,
                                                                self.runtime)]

    def to_dict(self) -> dict[str, list[Any]]:
        return {"threads": list(self.threads), "xnnpack": list(self.xnnpack),
                "runtime": list(self.runtime)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Matrix":
        return cls(tuple(d["threads"]), tuple(d["xnnpack"]), tuple(d["runtime"]))

    def order(self, seed: int, board: str) -> list[Cell]:
        """Every cell once, shuffled by a Random seeded from `seed` and `board`."""
        digest = hashlib.sha256(f"{int(seed)}\0{board}".encode()).digest()
        cells = self.cells
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(cells)
        return cells


def new_seed() -> int:
    """A fresh seed for a run that was given none (recorded in the fleet document)."""
    return secrets.randbelow(2**31)
