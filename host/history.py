"""The host's record of every bench-remote run: one SQLite file (stdlib sqlite3).

Where: `platformdirs.user_data_dir("edgeq")/history.sqlite3`, or `$EDGEQ_HISTORY_DB`, or the
`path` given to `History`. Each run keeps its whole `edgeq.compare/1` document and the
environment it ran in (device and host), plus a few columns for listing without parsing JSON.
Writes are transactions (BEGIN IMMEDIATE ... COMMIT); WAL mode and a busy timeout let a
`edgeq history` read while a bench writes, and two writers wait for each other instead of failing.
The schema version lives in its own table; a newer file than this code knows is refused, an
older one is migrated in place on first use (version 1 -> 2 adds the fleet tables; its runs
stay as they were).
A fleet run (`edgeq.fleet/1`: many boards x a settings matrix) is one row of `fleets` plus one
row per board and cell in `fleet_runs` pointing at the run it stored in `runs`
(`store_fleet`, `get_fleet`, `list_fleets`); the compare documents are kept once, in `runs`.
`check_writable()` proves, before a bench measures for minutes, that a run can be stored
(the file opens, has a schema this code knows, and takes a write lock); its errors say which
of locked / read-only / disk full / newer schema / not a history it is. If storing still
fails afterwards, `save_unstored(doc, db_path)` keeps the document in a JSON file
(temp-then-rename; the current directory, else next to the database, else the temp dir).
Imports: standard library, platformdirs (lazily) and edgeq.device.
"""
from __future__ import annotations

import builtins
import errno
import json
import logging
import os
import platform
import re
import socket
import sqlite3
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from edgeq.device import __version__
from edgeq.device.errors import EdgeqError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
ENV_VAR = "EDGEQ_HISTORY_DB"
_BUSY_TIMEOUT_S = 30.0
#: how long check_writable waits for another writer (a bench storing its run takes ms)
CHECK_BUSY_TIMEOUT_S = 5.0
_NO_HISTORY = "or run without storing (--no-history)"

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

#: version -> what turns the previous version into it (run in order by _prepare)
_MIGRATIONS = {
    2: """
CREATE TABLE IF NOT EXISTS fleets (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_utc     TEXT NOT NULL,
    seed            INTEGER,
    matrix_json     TEXT NOT NULL,
    ok              INTEGER NOT NULL,
    boards          INTEGER NOT NULL,
    boards_ok       INTEGER NOT NULL,
    artifacts       TEXT,
    document_json   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_runs (
    fleet_id        INTEGER NOT NULL REFERENCES fleets (id),
    board           TEXT NOT NULL,
    position        INTEGER NOT NULL,
    cell_json       TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs (id)
);
CREATE INDEX IF NOT EXISTS fleet_runs_fleet ON fleet_runs (fleet_id);
""",
}

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

    def __init__(self, path: Union[str, Path, None] = None, *,
                 busy_timeout_s: float = _BUSY_TIMEOUT_S) -> None:
        self.path = Path(path).expanduser() if path is not None else default_history_path()
        self.busy_timeout_s = busy_timeout_s
        self._ready = False

    # ------------------------------------------------------------ plumbing

    def _explain(self, exc: BaseException, busy_s: float) -> HistoryError:
        """A HistoryError that says what is wrong: locked, read-only, full, unreadable."""
        code = getattr(exc, "sqlite_errorcode", None)
        text = str(exc).lower()
        if isinstance(exc, HistoryError):
            return exc
        if code in (sqlite3.SQLITE_FULL,) or "full" in text \
                or getattr(exc, "errno", None) == errno.ENOSPC:
            return HistoryError(
                f"the disk holding the history database {self.path} is full",
                hint=f"free space there, point {ENV_VAR} at another disk, {_NO_HISTORY}")
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
            return HistoryError(
                f"history database {self.path} stayed locked for {busy_s:g} s",
                hint="another program holds it (another edgeq storing a run, or an open "
                     f"sqlite3 shell); retry when it has finished, {_NO_HISTORY}")
        if code == sqlite3.SQLITE_READONLY or "readonly" in text or "read-only" in text \
                or isinstance(exc, PermissionError) or self._read_only_place():
            return HistoryError(
                f"history database {self.path} is read-only",
                hint=f"make it (and its directory) writable, point {ENV_VAR} at another "
                     f"file, {_NO_HISTORY}")
        if isinstance(exc, OSError) or code == sqlite3.SQLITE_CANTOPEN:
            return HistoryError(
                f"cannot open history database {self.path}: {exc}",
                hint=f"check the directory's permissions, point {ENV_VAR} elsewhere, "
                     f"{_NO_HISTORY}")
        return HistoryError(
            f"history database {self.path} is unreadable: {exc}",
            hint=f"move the file aside (it is not deleted for you), or point {ENV_VAR} "
                 "at another file",
        )

    def _read_only_place(self) -> bool:
        """The file, or its directory (WAL needs to create files there), is not writable."""
        where = self.path if self.path.exists() else self.path.parent
        return where.exists() and not (os.access(where, os.W_OK)
                                       and os.access(self.path.parent, os.W_OK))

    @contextmanager
    def _connect(self, busy_timeout_s: Optional[float] = None) -> Iterator[sqlite3.Connection]:
        busy_s = self.busy_timeout_s if busy_timeout_s is None else busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), timeout=busy_s, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._explain(exc, busy_s) from exc
        try:
            db.row_factory = sqlite3.Row
            if not self._ready:
                self._prepare(db)
            yield db
        except (sqlite3.DatabaseError, OSError) as exc:
            raise self._explain(exc, busy_s) from exc
        finally:
            db.close()

    @staticmethod
    @contextmanager
    def _write(db: sqlite3.Connection) -> Iterator[None]:
        """One write transaction: BEGIN IMMEDIATE, COMMIT, or ROLLBACK on any exception."""
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def check_writable(self) -> None:
        """HistoryError unless a run can be stored now: the file opens, its schema is one
        this code knows, and it takes a write lock (waiting CHECK_BUSY_TIMEOUT_S at most)."""
        busy_s = min(self.busy_timeout_s, CHECK_BUSY_TIMEOUT_S)
        with self._connect(busy_s) as db:
            db.execute("BEGIN IMMEDIATE")
            if db.in_transaction:
                db.execute("ROLLBACK")

    def _prepare(self, db: sqlite3.Connection) -> None:
        self._check_version(db)  # before anything writes (a newer file is left as it is)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        with self._write(db):
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
                if int(version) < SCHEMA_VERSION:
                    self._migrate(db, int(version))
            elif tables - {"sqlite_sequence"}:
                raise HistoryError(
                    f"{self.path} is an SQLite file that is not an edgeq history",
                    hint=f"move it aside or point {ENV_VAR} at another file",
                )
            else:
                for script in (_SCHEMA, *_MIGRATIONS.values()):
                    _execute_all(db, script)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        self._ready = True

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """Bring a file of an older schema `version` up to SCHEMA_VERSION (inside the caller's
        transaction): add what each newer version adds; stored runs are not touched."""
        for target in range(version + 1, SCHEMA_VERSION + 1):
            _execute_all(db, _MIGRATIONS[target])
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        logger.info("history: migrated %s from schema %d to %d", self.path, version,
                    SCHEMA_VERSION)

    def _check_version(self, db: sqlite3.Connection) -> None:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_version" not in tables:
            return
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        if row and row[0] is not None and int(row[0]) > SCHEMA_VERSION:
            raise HistoryError(
                f"history database {self.path} has schema version {row[0]}, this edgeq "
                f"knows up to {SCHEMA_VERSION}",
                hint=f"upgrade edgeq, point {ENV_VAR} at another file, {_NO_HISTORY}",
            )

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
            with self._write(db):
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

    # ------------------------------------------------------------ fleet runs

    def store_fleet(self, doc: dict[str, Any]) -> int:
        """Store an `edgeq.fleet/1` document (its cells' runs already stored with `add`) and
        return its fleet id; each compare document stays in `runs` only, by its run_id."""
        if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("edgeq.fleet/"):
            raise HistoryError("only edgeq.fleet documents can be stored as fleet runs",
                               hint="pass the document the fleet bench returned")
        boards = doc.get("boards") or []
        slim = dict(doc, boards=[
            dict(b, runs=[dict(r, compare=None) if r.get("run_id") is not None else r
                          for r in b.get("runs") or []]) for b in boards])
        links = [(b.get("board"), i, json.dumps(r.get("cell"), sort_keys=True), r.get("run_id"))
                 for b in boards for i, r in enumerate(b.get("runs") or [])]
        with self._connect() as db:
            with self._write(db):
                cur = db.execute(
                    "INSERT INTO fleets (created_utc, seed, matrix_json, ok, boards, boards_ok, "
                    "artifacts, document_json) VALUES (?, ?, ?, ?, ?, ?, ?, '')",
                    (doc.get("created_utc") or "", doc.get("seed"),
                     json.dumps(doc.get("matrix"), sort_keys=True), int(bool(doc.get("ok"))),
                     len(boards), sum(1 for b in boards if b.get("ok")), doc.get("artifacts")))
                fleet_id = int(cur.lastrowid or 0)
                db.execute("UPDATE fleets SET document_json = ? WHERE id = ?",
                           (json.dumps(dict(slim, fleet_id=fleet_id)), fleet_id))
                db.executemany("INSERT INTO fleet_runs (fleet_id, board, position, cell_json, "
                               "run_id) VALUES (?, ?, ?, ?, ?)",
                               [(fleet_id, *link) for link in links])
        logger.info("history: stored fleet run %d in %s", fleet_id, self.path)
        return fleet_id

    def get_fleet(self, fleet_id: int) -> dict[str, Any]:
        """The `edgeq.fleet/1` document of a fleet run, each cell's compare document put
        back from its run."""
        with self._connect() as db:
            row = db.execute("SELECT document_json FROM fleets WHERE id = ?",
                             (int(fleet_id),)).fetchone()
            if row is None:
                raise RunNotFoundError(f"no fleet run {fleet_id} in {self.path}",
                                       hint="`edgeq history fleets` lists the fleet runs")
            doc = json.loads(row[0])
            for board in doc.get("boards") or []:
                for run in board.get("runs") or []:
                    if run.get("run_id") is not None and run.get("compare") is None:
                        got = db.execute("SELECT document_json FROM runs WHERE id = ?",
                                         (int(run["run_id"]),)).fetchone()
                        run["compare"] = None if got is None else json.loads(got[0])
        return doc

    def latest_fleet_id(self) -> Optional[int]:
        """The newest fleet run's id, or None."""
        with self._connect() as db:
            row = db.execute("SELECT MAX(id) FROM fleets").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def list_fleets(self, limit: Optional[int] = 20) -> builtins.list[dict[str, Any]]:
        """Summaries of the newest fleet runs first: fleet_id, created_utc, seed, matrix,
        ok, boards, boards_ok, runs (stored cell runs)."""
        query = ("SELECT f.id, f.created_utc, f.seed, f.matrix_json, f.ok, f.boards, "
                 "f.boards_ok, f.artifacts, (SELECT COUNT(run_id) FROM fleet_runs r "
                 "WHERE r.fleet_id = f.id) AS runs FROM fleets f ORDER BY f.id DESC")
        params: tuple[Any, ...] = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (int(limit),)
        with self._connect() as db:
            rows = db.execute(query, params).fetchall()
        return [{"fleet_id": r["id"], "created_utc": r["created_utc"], "seed": r["seed"],
                 "matrix": json.loads(r["matrix_json"]), "ok": bool(r["ok"]),
                 "boards": r["boards"], "boards_ok": r["boards_ok"],
                 "artifacts": r["artifacts"], "runs": r["runs"]} for r in rows]


def fleet_doc(history: History, fleet: str) -> dict[str, Any]:
    """The stored fleet run `fleet` (an id, or `latest`) from `history`."""
    from edgeq.device.errors import UsageError

    if fleet == "latest":
        fleet_id = history.latest_fleet_id()
        if fleet_id is None:
            raise UsageError(f"no fleet runs yet in {history.path}",
                             hint="bench-remote with several --host or an --inventory makes one")
        return history.get_fleet(fleet_id)
    try:
        return history.get_fleet(int(fleet))
    except ValueError:
        raise UsageError(f"fleet must be a number or 'latest', not {fleet!r}",
                         hint="`edgeq history fleets` lists the fleet runs") from None


def _execute_all(db: sqlite3.Connection, script: str) -> None:
    """Each `;`-separated statement of `script` (executescript would commit the transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def save_unstored(doc: dict[str, Any], db_path: Optional[Path] = None) -> Optional[Path]:
    """Save a run that could not be stored as JSON (temp-then-rename) in the current
    directory, else next to the database, else the temp directory; its path, or None when
    no place takes it."""
    stamp = re.sub(r"[^0-9A-Za-z]", "", str(doc.get("time_utc") or "")) or str(os.getpid())
    name = f"edgeq-run-{stamp}-unstored.json"
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    places = [Path.cwd()] + ([db_path.parent] if db_path is not None else []) \
        + [Path(tempfile.gettempdir())]
    for place in places:
        target = place / name
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=str(place))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            return target
        except OSError as exc:
            logger.info("cannot save the run in %s: %s", place, exc)
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    return None
