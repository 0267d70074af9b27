"""File helpers shared by the runtime adapter and the store (no numpy, no runtime).

Imports: standard library only.
"""
from __future__ import annotations

import hashlib
import os
from typing import Union

_HASH_CHUNK_BYTES = 1 << 20


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
