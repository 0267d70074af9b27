"""edgeq.host: the laptop side of edgeq (CLI, data, train, quantize, inspect,
SSH transport, deploy, bench-remote orchestration, history, report).

May import edgeq.device and edgeq.models, never the reverse. TensorFlow is
imported lazily inside the functions that need it, so `edgeq --help` stays fast.
"""
from __future__ import annotations

from edgeq.device import __version__

__all__ = ["__version__"]
