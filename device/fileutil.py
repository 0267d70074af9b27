"""File helpers shared by every room: sha256 of files and bytes, the UTC timestamp.

Imports: standard library only.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Union

_HASH_CHUNK_BYTES = 1 << 20
#: the one timestamp format of edgeq's records: ISO 8601, UTC, whole seconds
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    """Now, in UTC_FORMAT (e.g. "2026-12-02T04:25:25Z")."""
    return time.strftime(UTC_FORMAT, time.gmtime())


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Union[str, "os.PathLike[str]"]) -> str:
    """The hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_HASH_CHUNK_BYTES)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()
