"""The host's record of every bench-remote run: one SQLite file (stdlib sqlite3).

Where: `platformdirs.user_data_dir("edgeq")/history.sqlite3`, or `$EDGEQ_HISTORY_DB`, or the
`path` given to `History`. Each run keeps its whole `edgeq.compare/1` document and the
environment it ran in (device and host), plus a few columns for listing without parsing JSON.
Writes are transactions (BEGIN IMMEDIATE ... COMMIT); WAL mode and a busy timeout let a
`edgeq history` read while a bench writes, and two writers wait for each other instead of failing.
The schema version lives in its own table; a newer file than this code knows is refused.
Imports: standard library, platformdirs (lazily) and edgeq.device.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import socket
import sqlite3
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from edgeq.device import __version__
from edgeq.device.errors import EdgeqError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ENV_VAR = "EDGEQ_HISTORY_DB"
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc                TEXT NOT NULL,
    host                    TEXT NOT NULL,
    model_name              TEXT,
    machine                 TEXT,
    emulated                INTEGER,
    runtime                 TEXT,
    threads                 INTEGER,
    xnnpack                 INTEGER,
    float32_sha256          TEXT,
    int8_sha256             TEXT,
    float32_accuracy        REAL,
    int8_accuracy           REAL,
    agreement               REAL,
    float32_latency_ms_p50  REAL,
    int8_latency_ms_p50     REAL,
    environment_json        TEXT NOT NULL,
    document_json           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_time ON runs (time_utc);
"""

_SUMMARY_COLUMNS = (
    "id", "time_utc", "host", "model_name", "machine", "emulated", "runtime", "threads",
    "xnnpack", "float32_accuracy", "int8_accuracy", "agreement", "float32_latency_ms_p50",
    "int8_latency_ms_p50",
)


class HistoryError(EdgeqError):
    """The history database cannot be used."""


class RunNotFoundError(HistoryError):
    """No run with that id."""


def default_history_path() -> Path:
    """$EDGEQ_HISTORY_DB, else the user's data directory for edgeq."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("edgeq", appauthor=False)) / "history.sqlite3"


def host_environment() -> dict[str, Any]:
    """The host side of a run's environment (the device side is in the document)."""
    return {
        "hostname": socket.gethostname(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python_version": platform.python_version(),
        "edgeq_version": __version__,
        "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:] if sys.argv else [],
    }


class History:
    """The run database. Each method opens its own connection, so instances are cheap
    and safe to share between threads."""

    def __init__(self, path: Union[str, Path, None] = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_history_path()
        self._ready = False

    # ------------------------------------------------------------ plumbing

    def _bad_file(self, exc: Exception) -> HistoryError:
        return HistoryError(
            f"history database {self.path} is unreadable: {exc}",
            hint=f"move the file aside (it is not deleted for you), or point {ENV_VAR} "
                 "at another file",
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(
                f"cannot open history database {self.path}: {exc}",
                hint=f"check the directory's permissions, or point {ENV_VAR} elsewhere",
            ) from exc
        try:
            db.row_factory = sqlite3.Row
            if not self._ready:
                self._prepare(db)
            yield db
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise HistoryError(
                    f"history database {self.path} stayed locked for {_BUSY_TIMEOUT_S:g} s",
                    hint="another edgeq process holds it; retry when it has finished",
                ) from exc
            raise self._bad_file(exc) from exc
        finally:
            db.close()

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "schema_version" in tables:
                row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
                version = row[0] if row else None
                if version is None or "runs" not in tables:
                    raise HistoryError(
                        f"history database {self.path} has no runs table or no schema version",
                        hint=f"it was not written by edgeq: move it aside or set {ENV_VAR}",
                    )
                if int(version) > SCHEMA_VERSION:
                    raise HistoryError(
                        f"history database {self.path} has schema version {version}, this edgeq "
                        f"knows up to {SCHEMA_VERSION}",
                        hint="upgrade edgeq, or point EDGEQ_HISTORY_DB at another file",
                    )
            elif tables - {"sqlite_sequence"}:
                raise HistoryError(
                    f"{self.path} is an SQLite file that is not an edgeq history",
                    hint=f"move it aside or point {ENV_VAR} at another file",
                )
            else:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._ready = True

    # ------------------------------------------------------------ API

    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        with self._connect() as db:
            return int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    def add(self, doc: dict[str, Any], *, host_env: Optional[dict[str, Any]] = None) -> int:
        """Store a compare document and return its run id (the stored copy carries it)."""
        if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("edgeq.compare/"):
            raise HistoryError(
                "only edgeq.compare documents can be added to the history",
                hint="pass the document bench-remote returned",
            )
        models = doc.get("models") or {}
        f32 = models.get("float32") or {}
        i8 = models.get("int8") or {}
        device = doc.get("device") or {}
        settings = doc.get("settings") or {}
        runtime = device.get("runtime") or f32.get("runtime") or {}
        environment = {"device": device, "host": host_env or host_environment()}
        values = (
            doc.get("time_utc") or "",
            doc.get("host") or "",
            settings.get("model_name"),
            device.get("machine"),
            None if device.get("emulated") is None else int(bool(device.get("emulated"))),
            " ".join(str(x) for x in (runtime.get("name"), runtime.get("version")) if x),
            settings.get("threads"),
            None if settings.get("xnnpack") is None else int(bool(settings.get("xnnpack"))),
            f32.get("sha256"),
            i8.get("sha256"),
            f32.get("accuracy"),
            i8.get("accuracy"),
            doc.get("agreement"),
            f32.get("latency_ms_p50"),
            i8.get("latency_ms_p50"),
            json.dumps(environment, sort_keys=True),
        )
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT INTO runs (time_utc, host, model_name, machine, emulated, runtime, "
                    "threads, xnnpack, float32_sha256, int8_sha256, float32_accuracy, "
                    "int8_accuracy, agreement, float32_latency_ms_p50, int8_latency_ms_p50, "
                    "environment_json, document_json) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '')",
                    values,
                )
                run_id = int(cur.lastrowid or 0)
                stored = dict(doc, run_id=run_id)
                db.execute("UPDATE runs SET document_json = ? WHERE id = ?",
                           (json.dumps(stored), run_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        logger.info("history: stored run %d in %s", run_id, self.path)
        return run_id

    def get(self, run_id: int) -> dict[str, Any]:
        """The full compare document of a run (with `run_id`)."""
        with self._connect() as db:
            row = db.execute("SELECT document_json FROM runs WHERE id = ?",
                             (int(run_id),)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run {run_id} in {self.path}",
                                   hint="`edgeq history` lists the runs")
        return json.loads(row[0])

    def environment(self, run_id: int) -> dict[str, Any]:
        """The environment a run was stored with: {"device": ..., "host": ...}."""
        with self._connect() as db:
            row = db.execute("SELECT environment_json FROM runs WHERE id = ?",
                             (int(run_id),)).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run {run_id} in {self.path}",
                                   hint="`edgeq history` lists the runs")
        return json.loads(row[0])

    def latest(self) -> Optional[dict[str, Any]]:
        """The newest run's document, or None when there is none."""
        with self._connect() as db:
            row = db.execute("SELECT document_json FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else json.loads(row[0])

    def list(self, limit: Optional[int] = 20) -> list[dict[str, Any]]:
        """Summaries of the newest runs first: run_id, time_utc, host, accuracies, p50s..."""
        query = f"SELECT {', '.join(_SUMMARY_COLUMNS)} FROM runs ORDER BY id DESC"
        params: tuple[Any, ...] = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (int(limit),)
        with self._connect() as db:
            rows = db.execute(query, params).fetchall()
        out = []
        for row in rows:
            item = {key: row[key] for key in _SUMMARY_COLUMNS}
            item["run_id"] = item.pop("id")
            for flag in ("emulated", "xnnpack"):
                if item[flag] is not None:
                    item[flag] = bool(item[flag])
            out.append(item)
        return out

    def count(self) -> int:
        """How many runs are stored."""
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
