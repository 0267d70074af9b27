"""The run history: a real SQLite file in tmp_path, written and read back."""
from __future__ import annotations

import copy
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from edgeq.host.history import (
    SCHEMA_VERSION,
    History,
    HistoryError,
    RunNotFoundError,
    default_history_path,
)


def _doc(p50_f32: float, p50_i8: float, *, host: str = "pi@pi.local:22",
         acc: float = 0.99) -> dict[str, Any]:
    def model(p50: float, size: int, sha: str, accuracy: float) -> dict[str, Any]:
        return {"size_bytes": size, "sha256": sha, "accuracy": accuracy,
                "latency_ms_p50": p50, "latency_ms_p90": p50 * 1.2, "latency_ms_p99": p50 * 1.5,
                "latency_ms_mean": p50 * 1.05, "throughput_samples_per_s": 1000.0 / p50,
                "init_ms": 3.0, "peak_rss_bytes": 40_000_000,
                "runtime": {"name": "ai-edge-litert", "version": "2.3.0"}, "result": {}}

    return {
        "schema": "edgeq.compare/1",
        "run_id": None,
        "time_utc": "2026-11-28T12:00:00Z",
        "host": host,
        "artifacts_dir": "/tmp/a",
        "settings": {"threads": 1, "xnnpack": True, "rounds": 2, "model_name": "mnist-cnn"},
        "device": {"machine": "aarch64", "emulated": True, "emulator": "qemu-aarch64",
                   "runtime": {"name": "ai-edge-litert", "version": "2.3.0"}},
        "agreement": 0.998,
        "models": {"float32": model(p50_f32, 400_000, "a" * 64, acc),
                   "int8": model(p50_i8, 110_000, "b" * 64, acc - 0.001)},
        "ratios": {"latency_ms_p50": p50_i8 / p50_f32},
    }


def test_add_get_latest_list(tmp_path: Path) -> None:
    h = History(tmp_path / "sub" / "history.sqlite3")
    assert h.latest() is None
    assert h.list() == []
    first = _doc(2.0, 1.0)
    run1 = h.add(first)
    run2 = h.add(_doc(3.0, 1.5, host="local"))
    assert run2 > run1
    assert first["run_id"] is None, "add must not change the caller's document"
    got = h.get(run1)
    assert got["run_id"] == run1
    assert got["models"] == first["models"]
    assert h.latest()["run_id"] == run2
    rows = h.list(limit=10)
    assert [r["run_id"] for r in rows] == [run2, run1]
    assert rows[0]["host"] == "local" and rows[1]["host"] == "pi@pi.local:22"
    assert rows[1]["float32_latency_ms_p50"] == 2.0 and rows[1]["int8_latency_ms_p50"] == 1.0
    assert rows[1]["emulated"] is True and rows[1]["xnnpack"] is True
    assert rows[1]["model_name"] == "mnist-cnn" and rows[1]["runtime"] == "ai-edge-litert 2.3.0"
    assert [r["run_id"] for r in h.list(limit=1)] == [run2]
    env = h.environment(run1)
    assert env["device"]["machine"] == "aarch64" and env["host"]["edgeq_version"]
    # a second History on the same file sees the same runs
    assert History(h.path).count() == 2


def test_two_runs_compare_through_history(tmp_path: Path) -> None:
    from edgeq.host.compare import delta_rows

    h = History(tmp_path / "h.sqlite3")
    a = h.add(_doc(2.0, 1.0))
    b = h.add(_doc(2.0, 0.5))
    rows = {name: (va, vb, change) for name, va, vb, change in delta_rows(h.get(a), h.get(b))}
    assert rows["int8 Latency p50 (ms)"] == ("1.000", "0.500", "0.500x")
    assert rows["float32 Latency p50 (ms)"][2] == "1.000x"


def test_schema_version_is_recorded_and_newer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    History(path).add(_doc(1.0, 1.0))
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="schema version"):
        History(path).list()


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(HistoryError) as info:
        History(path).add(_doc(1.0, 1.0))
    assert str(path) in info.value.message and "\n" not in info.value.message
    assert "EDGEQ_HISTORY_DB" in info.value.hint
    assert path.read_bytes().startswith(b"this is not sqlite"), "the bad file must be left alone"


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="not an edgeq history"):
        History(path).latest()


def test_unknown_run_and_wrong_document(tmp_path: Path) -> None:
    h = History(tmp_path / "h.sqlite3")
    with pytest.raises(RunNotFoundError, match="no run 42"):
        h.get(42)
    with pytest.raises(HistoryError, match="edgeq.compare"):
        h.add({"schema": "edgeq.bench/1"})


def test_env_var_sets_the_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_HISTORY_DB", str(tmp_path / "x.sqlite3"))
    assert default_history_path() == tmp_path / "x.sqlite3"
    History().add(_doc(1.0, 1.0))
    assert (tmp_path / "x.sqlite3").exists()
    monkeypatch.delenv("EDGEQ_HISTORY_DB")
    assert default_history_path().name == "history.sqlite3"
    assert "edgeq" in str(default_history_path())


def test_concurrent_writers_all_land(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    History(path).list()  # create the schema first
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            h = History(path)
            for i in range(10):
                h.add(_doc(1.0 + n + i / 100, 1.0))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    h = History(path)
    assert h.count() == 40
    ids = [r["run_id"] for r in h.list(limit=None)]
    assert len(set(ids)) == 40
    # every stored document carries its own id
    for run_id in ids[:5]:
        assert h.get(run_id)["run_id"] == run_id


def test_document_json_roundtrips_exactly(tmp_path: Path) -> None:
    h = History(tmp_path / "h.sqlite3")
    doc = _doc(1.25, 0.75)
    doc["models"]["int8"]["latencies_ms"] = [0.7, 0.75, 0.8]
    run_id = h.add(copy.deepcopy(doc))
    stored = h.get(run_id)
    doc["run_id"] = run_id
    assert json.dumps(stored, sort_keys=True) == json.dumps(doc, sort_keys=True)


# ------------------------------------------------------------------ checked before measuring


def test_check_writable_refuses_a_locked_file_quickly(tmp_path: Path) -> None:
    import time

    path = tmp_path / "h.sqlite3"
    History(path).add(_doc(2.0, 1.0))
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        with pytest.raises(HistoryError, match="stayed locked for 0.3 s") as info:
            History(path, busy_timeout_s=0.3).check_writable()
        assert time.monotonic() - t0 < 3
        assert "--no-history" in info.value.hint
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    History(path).check_writable()  # free again


def test_check_writable_refuses_a_newer_schema_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    History(path).add(_doc(2.0, 1.0))
    with sqlite3.connect(str(path)) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    before = path.read_bytes()
    with pytest.raises(HistoryError, match=f"schema version {SCHEMA_VERSION + 1}") as info:
        History(path).check_writable()
    assert "upgrade edgeq" in info.value.hint
    assert path.read_bytes() == before


@pytest.fixture()
def small_mount(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 256 KiB tmpfs of our own (root only): disk-full and read-only for real."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_check_writable_refuses_a_read_only_file(small_mount: Path) -> None:
    import subprocess

    path = small_mount / "h.sqlite3"
    History(path).add(_doc(2.0, 1.0))
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    with pytest.raises(HistoryError, match="read-only") as info:
        History(path).check_writable()
    assert "writable" in info.value.hint


def test_a_full_disk_has_its_own_message(small_mount: Path) -> None:
    path = small_mount / "h.sqlite3"
    history = History(path)
    history.add(_doc(2.0, 1.0))
    big = _doc(2.0, 1.0)
    big["models"]["int8"]["result"] = {"latencies_ms": [1.0] * 100_000}  # ~600 KB of JSON
    with pytest.raises(HistoryError, match="disk holding the history database .* is full") as i:
        history.add(big)
    assert "free space" in i.value.hint


def test_save_unstored_writes_the_document_in_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.host.history import save_unstored

    monkeypatch.chdir(tmp_path)
    doc = _doc(2.0, 1.0)
    saved = save_unstored(doc, tmp_path / "db" / "h.sqlite3")
    assert saved is not None and saved.parent == tmp_path
    assert json.loads(saved.read_text()) == doc
    assert [p.name for p in tmp_path.iterdir()] == [saved.name]  # no temp file left


def test_run_checks_the_history_before_training(tmp_path: Path) -> None:
    """`edgeq run` with a locked history fails at once, before minutes of training."""
    import time

    from edgeq.host.run import run

    path = tmp_path / "h.sqlite3"
    History(path).add(_doc(2.0, 1.0))
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    stages: list[str] = []
    try:
        t0 = time.monotonic()
        with pytest.raises(HistoryError, match="locked"):
            run(tmp_path / "out", history=History(path, busy_timeout_s=0.3),
                events=lambda name, details: stages.append(name))
        assert time.monotonic() - t0 < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert stages == [] and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ fleet runs (schema 2)

# a history file as edgeq's schema-1 code wrote it (commit f2c9c81: History(...).add(doc),
# then sqlite3's iterdump), so the migration is tested on the real old layout
_V1_DUMP = """\
CREATE TABLE runs (
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
INSERT INTO "runs" VALUES(1,'2026-12-01T10:00:00Z','pi4a','mnist-cnn','aarch64',0,'',1,1,\
'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',\
'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',0.99,0.985,0.99,1.5,1.1,\
'{"device": {"emulated": false, "machine": "aarch64"}, "host": {"hostname": "lab"}}',\
'{"schema": "edgeq.compare/1", "time_utc": "2026-12-01T10:00:00Z", "host": "pi4a", "models": \
{"float32": {"sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", \
"accuracy": 0.99, "latency_ms_p50": 1.5}, "int8": {"sha256": \
"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "accuracy": 0.985, \
"latency_ms_p50": 1.1}}, "agreement": 0.99, "device": {"machine": "aarch64", "emulated": false}, \
"settings": {"threads": 1, "xnnpack": true, "model_name": "mnist-cnn"}, "run_id": 1}');
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);
INSERT INTO "schema_version" VALUES(1);
CREATE INDEX runs_time ON runs (time_utc);
INSERT INTO "sqlite_sequence" VALUES('runs',1);
"""


def _v1_file(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(_V1_DUMP)  # sqlite_sequence exists once an AUTOINCREMENT table does
    db.close()
    return path


def _fleet(run_ids: list[Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    cells = [{"threads": t, "xnnpack": True, "runtime": None} for t in (1, 2)]
    return {"schema": "edgeq.fleet/1", "fleet_id": None, "created_utc": "2026-12-02T08:00:00Z",
            "artifacts": "/tmp/a", "seed": 42, "matrix": {"threads": [1, 2], "xnnpack": [True],
                                                          "runtime": [None]},
            "ok": False, "elapsed_s": 3.5,
            "boards": [{"board": "pi4a", "target": "pi@10.0.0.5", "groups": ["pi4"], "ok": True,
                        "error": None, "order": cells[::-1],
                        "runs": [{"cell": c, "run_id": rid, "compare": doc, "error": None}
                                 for c, rid, doc in zip(cells[::-1], run_ids, runs)]},
                       {"board": "gone", "target": "192.0.2.1", "groups": [], "ok": False,
                        "error": {"code": "UnreachableHostError", "message": "no route",
                                  "hint": "check it"}, "order": cells, "runs": []}]}


def test_a_schema_1_file_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = _v1_file(tmp_path / "old.sqlite3")
    h = History(path)
    assert h.list()[0]["host"] == "pi4a" and h.get(1)["models"]["int8"]["accuracy"] == 0.985
    assert h.schema_version() == SCHEMA_VERSION == 2
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    assert {"fleets", "fleet_runs"} <= {r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    run = h.add(_doc(2.0, 1.0))
    assert run == 2 and h.list_fleets() == []
    fleet_id = h.store_fleet(_fleet([run, None], [h.get(run), None]))
    assert h.get_fleet(fleet_id)["boards"][0]["runs"][0]["compare"]["run_id"] == run


def test_store_get_and_list_fleets(tmp_path: Path) -> None:
    h = History(tmp_path / "h.sqlite3")
    docs = [dict(_doc(2.0, 1.0), run_id=h.add(_doc(2.0, 1.0))),
            dict(_doc(3.0, 1.2), run_id=h.add(_doc(3.0, 1.2)))]
    doc = _fleet([d["run_id"] for d in docs], docs)
    first = h.store_fleet(doc)
    second = h.store_fleet(doc)
    assert second > first and doc["fleet_id"] is None  # the caller's document is not changed
    got = h.get_fleet(first)
    assert got["fleet_id"] == first and got["seed"] == 42
    assert got["boards"][0]["order"] == doc["boards"][0]["order"]
    assert [r["compare"]["run_id"] for r in got["boards"][0]["runs"]] == \
        [d["run_id"] for d in docs]
    assert got["boards"][1]["error"]["code"] == "UnreachableHostError"
    stored = sqlite3.connect(h.path).execute(
        "SELECT document_json FROM fleets WHERE id = ?", (first,)).fetchone()[0]
    assert '"latency_ms_p50"' not in stored  # compare documents live once, in runs
    rows = h.list_fleets()
    assert [r["fleet_id"] for r in rows] == [second, first]
    assert rows[0]["boards"] == 2 and rows[0]["boards_ok"] == 1 and rows[0]["runs"] == 2
    assert rows[0]["matrix"]["threads"] == [1, 2] and rows[0]["ok"] is False
    assert h.latest_fleet_id() == second
    with pytest.raises(RunNotFoundError, match="no fleet run 99"):
        h.get_fleet(99)
    with pytest.raises(HistoryError, match="only edgeq.fleet"):
        h.store_fleet(_doc(1.0, 1.0))


def test_two_fleet_runs_compare_per_board_and_setting(tmp_path: Path) -> None:
    from edgeq.host.fleet import compare_fleets

    h = History(tmp_path / "h.sqlite3")
    a_docs = [dict(_doc(2.0, 1.0), run_id=h.add(_doc(2.0, 1.0))),
              dict(_doc(3.0, 1.5), run_id=h.add(_doc(3.0, 1.5)))]
    b_docs = [dict(_doc(2.0, 0.5), run_id=h.add(_doc(2.0, 0.5)))]
    a = h.get_fleet(h.store_fleet(_fleet([d["run_id"] for d in a_docs], a_docs)))
    b = h.get_fleet(h.store_fleet(_fleet([b_docs[0]["run_id"]], b_docs)))
    rows = compare_fleets(a, b)
    # order: board, then threads (A ran threads 2 first)
    assert [(r["board"], r["cell"]["threads"]) for r in rows] == [("pi4a", 1), ("pi4a", 2)]
    one, two = rows
    # fleet A ran the cells 2-threads first: 2.0/1.0 at 2 threads, 3.0/1.5 at 1 thread
    assert two["a"]["int8_latency_ms_p50"] == 1.0 and two["b"]["int8_latency_ms_p50"] == 0.5
    assert two["int8_p50_b_over_a"] == 0.5 and two["b"]["int8_speedup"] == 4.0
    assert one["b"] is None and one["int8_p50_b_over_a"] is None
    assert one["a"]["int8_speedup"] == 2.0 and one["a"]["run_id"] == a_docs[1]["run_id"]
