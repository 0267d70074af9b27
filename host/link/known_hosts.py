"""known_hosts as OpenSSH reads it: markers, hashed names, patterns, several keys a host.

paramiko's HostKeys keeps one key per type per host and raises InvalidHostKey on a
`@revoked` or `@cert-authority` line, so one such line anywhere broke every connection.
This reader follows sshd(8)'s SSH_KNOWN_HOSTS FILE FORMAT instead:
- `[@marker] patterns keytype base64 [comment]`; unreadable lines are skipped (as OpenSSH
  does), never fatal;
- patterns: comma-separated names with `*` and `?`, `!negated`, `[host]:port`, or one hashed
  name `|1|salt|hmac-sha1` (ssh-keygen -H);
- `@revoked`: that key is refused for the hosts it names, whatever else says;
- `@cert-authority`: a CA for host certificates. edgeq (paramiko) verifies plain host keys
  only, so such a line never vouches for a key; when it is the only entry for a host, the
  error says so;
- several keys of one type for a host are all accepted; a key of a known type that is none
  of them is a changed key.
`add_line()` writes what edgeq adds, hashed when the file already holds hashed names.
Imports: standard library only.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

logger = logging.getLogger(__name__)

MARKER_REVOKED = "@revoked"
MARKER_CA = "@cert-authority"
_HASH_MAGIC = "|1|"


def host_key_name(hostname: str, port: int) -> str:
    """The name a host has in known_hosts: `host` on port 22, else `[host]:port`."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def base_key_type(algorithm: str) -> str:
    """The key type of a host key algorithm (rsa-sha2-512 -> ssh-rsa, certs -> the key)."""
    name = algorithm.replace("-cert-v01@openssh.com", "")
    return "ssh-rsa" if name.startswith("rsa-sha2-") else name


@dataclass(frozen=True)
class Entry:
    """One known_hosts line."""

    path: str
    line_no: int
    marker: Optional[str]
    patterns: str
    key_type: str
    key_b64: str

    def blob(self) -> bytes:
        return base64.b64decode(self.key_b64)

    def matches(self, name: str) -> bool:
        """Whether this line names host `name` (as returned by host_key_name)."""
        if self.patterns.startswith(_HASH_MAGIC):
            return _hashed_matches(self.patterns, name)
        positive = False
        for pattern in self.patterns.split(","):
            negated = pattern.startswith("!")
            pattern = pattern[1:] if negated else pattern
            if pattern and _wildcard_match(name.lower(), pattern.lower()):
                if negated:
                    return False
                positive = True
        return positive


def _wildcard_match(name: str, pattern: str) -> bool:
    """OpenSSH's match_pattern: `*` and `?` are the only wildcards (`[` is literal)."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


def _hashed_matches(field: str, name: str) -> bool:
    parts = field.split("|")  # ['', '1', salt, hash]
    if len(parts) != 4:
        return False
    try:
        salt, want = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    got = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def hash_name(name: str, salt: Optional[bytes] = None) -> str:
    """`|1|salt|hmac` for `name`, as `ssh-keygen -H` writes it."""
    salt = salt if salt is not None else os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"{_HASH_MAGIC}{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def parse_lines(text: str, path: str = "known_hosts") -> list[Entry]:
    """Every usable line of a known_hosts file; bad lines are skipped with a debug log."""
    entries = []
    for no, raw in enumerate(text.splitlines(), 1):
        words = raw.strip().split()
        if not words or words[0].startswith("#"):
            continue
        marker = None
        if words[0].startswith("@"):
            marker, words = words[0], words[1:]
            if marker not in (MARKER_REVOKED, MARKER_CA):
                logger.debug("%s:%d: unknown marker %s, line skipped", path, no, marker)
                continue
        if len(words) < 3:
            logger.debug("%s:%d: too few fields, line skipped", path, no)
            continue
        try:
            base64.b64decode(words[2], validate=True)
        except (binascii.Error, ValueError):
            logger.debug("%s:%d: key is not base64, line skipped", path, no)
            continue
        entries.append(Entry(path, no, marker, words[0], words[1], words[2]))
    return entries


def load(paths: Iterable[Path]) -> list[Entry]:
    """The entries of every existing file in `paths` (missing files are skipped)."""
    entries: list[Entry] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            continue
        entries += parse_lines(text, str(path))
    return entries


@dataclass(frozen=True)
class Verdict:
    """What known_hosts says about a host's key.

    status: "known" (a listed key), "revoked", "changed" (other keys of that type are listed),
    "unknown" (nothing for this type). `expected` are the listed entries of that type,
    `ca_only` tells that the host is vouched for only by a @cert-authority line.
    """

    status: str
    expected: tuple[Entry, ...] = ()
    revoked_by: Optional[Entry] = None
    ca_only: bool = False


def check(entries: Sequence[Entry], name: str, key_type: str, blob: bytes) -> Verdict:
    """The verdict of `entries` on host `name` offering key (`key_type`, `blob`)."""
    mine = [e for e in entries if e.matches(name)]
    for e in mine:
        if e.marker == MARKER_REVOKED and _same_blob(e, blob):
            return Verdict("revoked", revoked_by=e)
    plain = [e for e in mine if e.marker is None]
    same_type = [e for e in plain if base_key_type(e.key_type) == base_key_type(key_type)]
    if any(_same_blob(e, blob) for e in same_type):
        return Verdict("known")
    if same_type:
        return Verdict("changed", expected=tuple(same_type))
    ca_only = not plain and any(e.marker == MARKER_CA for e in mine)
    return Verdict("unknown", ca_only=ca_only)


def known_key_types(entries: Sequence[Entry], name: str) -> set[str]:
    """The key types listed (plainly, not revoked) for host `name`."""
    return {base_key_type(e.key_type) for e in entries if e.marker is None and e.matches(name)}


def _same_blob(entry: Entry, blob: bytes) -> bool:
    try:
        return hmac.compare_digest(entry.blob(), blob)
    except (binascii.Error, ValueError):
        return False


def add_line(path: Path, name: str, key_type: str, key_b64: str) -> str:
    """Append `name key_type key` to `path` (0600, fsynced); hashed if the file already holds
    hashed names. Returns the line written."""
    try:
        hashed = any(e.patterns.startswith(_HASH_MAGIC)
                     for e in parse_lines(path.read_text(encoding="utf-8", errors="replace")))
    except FileNotFoundError:
        hashed = False
    shown = hash_name(name) if hashed else name
    line = f"{shown} {key_type} {key_b64}\n"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as handle:
        if handle.tell() > 0 and not _ends_with_newline(path):
            handle.write("\n")
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return line


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
