"""The documented JSON keys are the keys the commands really print (sqlite-utils' test_docs idea).

docs/SCHEMA.md and the README's `bench-remote --json` table are parsed into sets of dotted key
paths (`models.float32.latency_ms_p50`, `device.runtime.name`) and compared with the keys of
real output: tiny real artifacts (tests/conftest.py) deployed with `edgeq deploy --host local`
to a temporary device dir (the real daemon starts), `edgeq bench-remote --json` through that
daemon, the agent's one-shot `bench --json`, and the daemon's ops spoken to on its socket.
A key renamed in the code or in a doc fails here, in either direction.

How a key table is written (docs/SCHEMA.md and README.md):
- a Markdown table whose header starts with `key` (or `op`); its name is the first backticked
  word of the nearest heading above it (`edgeq.bench/1`, `ENVIRONMENT`, ...);
- the first cell holds one or more key paths in backticks, dotted for nesting;
- in the second cell, a backticked identifier is a child key of the row's key(s), `{...}`
  after one lists its children, and the name of an upper-case table (`TENSOR`) stands for that
  table's keys; quoted values (`"ABBA"`) and prose are not keys;
- the keys of objects inside a list are children of the list's key (`ops.name`);
- a documented key below a value that is null (or an empty list) in the real output cannot be
  seen there and is not required (e.g. `throttled.raw` on a machine without throttling flags).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMA_MD = REPO / "docs" / "SCHEMA.md"
README_MD = REPO / "README.md"

EVAL_LIMIT = 100
FAST = ["--runs-min", "10", "--run-s-min", "0.02"]
AGENT_FAST = [*FAST, "--warmup-runs-min", "2", "--warmup-s-min", "0.01"]

# ------------------------------------------------------------------------------ the doc parser

_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_BACKTICKED = re.compile(r"`([^`]+)`")
_KEY_PATH = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*$")
_TOKEN = re.compile(r"`([^`]*)`|(\{)|(\})|\b([A-Z][A-Z0-9_]{2,})\b")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def key_tables(text: str) -> dict[str, list[tuple[list[str], str]]]:
    """{table name: [(row key paths, second cell)]} for every key table of a Markdown text."""
    tables: dict[str, list[tuple[list[str], str]]] = {}
    heading_name: Optional[str] = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _HEADING.match(line)
        if m:
            names = _BACKTICKED.findall(m.group(1))
            heading_name = names[0] if names else None
        elif line.startswith("|") and _cells(line)[0] in ("key", "op") and i + 1 < len(lines) \
                and set(lines[i + 1].replace("|", "").strip()) <= set("-: "):
            assert heading_name, f"key table without a backticked name above it: {line}"
            assert heading_name not in tables, f"two key tables named {heading_name}"
            rows = tables[heading_name] = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = _cells(lines[i])
                keys = _BACKTICKED.findall(cells[0])
                bad = [k for k in keys if not _KEY_PATH.match(k)]
                assert keys and not bad, f"{heading_name}: not a key cell: {cells[0]!r}"
                rows.append((keys, cells[1] if len(cells) > 1 else ""))
                i += 1
            continue
        i += 1
    return tables


def documented(tables: dict[str, list[tuple[list[str], str]]], name: str,
               fragments: Optional[dict[str, list[tuple[list[str], str]]]] = None,
               _seen: tuple[str, ...] = ()) -> tuple[set[str], dict[str, set[str]]]:
    """(the dotted key paths a table documents, {path: the quoted values it names}).

    Upper-case table names in a cell are expanded (those of `tables`, else of `fragments`:
    e.g. the README naming SCHEMA.md's ENVIRONMENT). A quoted value belongs to the key before
    it; values after an "e.g." are examples and not recorded.
    """
    assert name not in _seen, f"key tables refer to each other in a loop: {_seen + (name,)}"
    known = {k: v for k, v in {**(fragments or {}), **tables}.items() if k.isupper()}
    paths: set[str] = set()
    values: dict[str, set[str]] = {}
    for keys, cell in tables[name]:
        for key in keys:  # `models.int8` documents `models` too
            parts = key.split(".")
            paths.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        stack = [list(keys)]  # the keys the next children belong to
        last: list[str] = []
        since_key = 0  # where the text about the last key starts
        for m in _TOKEN.finditer(cell):
            quoted, opening, closing, word = m.groups()
            word = word if word is not None else quoted if quoted in known else None
            if opening:
                stack.append(last)
            elif closing:
                stack.pop()
                last = []
            elif word is not None:
                if word in known:
                    sub, sub_values = documented(known, word, None, _seen + (name,))
                    for parent in stack[-1]:
                        paths.update(f"{parent}.{k}" for k in sub)
                        for k, v in sub_values.items():
                            values.setdefault(f"{parent}.{k}", set()).update(v)
            elif quoted is not None and _KEY_PATH.match(quoted):
                last = [f"{parent}.{quoted}" for parent in stack[-1]]
                paths.update(last)
                since_key = m.end()
            elif quoted[:1] == '"' and "e.g." not in cell[since_key:m.start()]:
                for key in last or stack[-1]:
                    values.setdefault(key, set()).add(quoted.strip('"'))
        assert len(stack) == 1, f"{name}: unbalanced braces in {cell!r}"
    return paths, values


def documented_keys(tables: dict[str, list[tuple[list[str], str]]], name: str,
                    fragments: Optional[dict[str, list[tuple[list[str], str]]]] = None
                    ) -> set[str]:
    return documented(tables, name, fragments)[0]


def value_diff(values: dict[str, set[str]], output: Any, prefix: str = "") -> list[str]:
    """Printed strings that are not among the values documented for their key, as lines.

    `<...>` in a documented value matches any text (`"file:<name>"`).
    """
    out: list[str] = []
    if isinstance(output, list):
        for item in output:
            out += value_diff(values, item, prefix)
    elif isinstance(output, dict):
        for key, value in output.items():
            path = f"{prefix}.{key}" if prefix else key
            allowed = values.get(path)
            if allowed and isinstance(value, str) and not any(
                    re.fullmatch(re.sub(r"<[^>]*>", ".*", re.escape(a)), value) for a in allowed):
                out.append(f"{path} is {value!r}, documented: {sorted(allowed)}")
            out += value_diff(values, value, path)
    return out


def real_keys(obj: Any, stop: frozenset[str] = frozenset(), prefix: str = ""
              ) -> tuple[set[str], set[str]]:
    """(every dotted key path in obj, the paths whose value is null or an empty list).

    Keys of objects inside lists are children of the list's key; paths in `stop` are kept but
    not descended into (documented elsewhere).
    """
    paths: set[str] = set()
    empty: set[str] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            if path in stop:
                continue
            if value is None or value == []:
                empty.add(path)
            sub, sub_empty = real_keys(value, stop, path)
            paths |= sub
            empty |= sub_empty
    elif isinstance(obj, list):
        for item in obj:
            sub, sub_empty = real_keys(item, stop, prefix)
            paths |= sub
            empty |= sub_empty
    return paths, empty


def key_diff(documented: set[str], real: set[str], empty: set[str]) -> list[str]:
    """What differs, as lines; [] when the doc and the output agree."""

    def unseen(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:i]) in empty for i in range(1, len(parts)))

    out = [f"printed but not documented: {k}" for k in sorted(real - documented)]
    out += [f"documented but not printed: {k}" for k in sorted(documented - real)
            if not unseen(k)]
    return out


def assert_keys(what: str, doc: tuple[set[str], dict[str, set[str]]], output: Any,
                stop: frozenset[str] = frozenset(), leave_out: tuple[str, ...] = ()) -> None:
    """Fail unless the documented keys are exactly the keys of `output` and every printed
    string is one of the values documented for its key (when values are documented).

    `leave_out`: documented keys (with their children) this output does not carry.
    """
    keys, values = doc
    keys = {k for k in keys if not any(k == x or k.startswith(x + ".") for x in leave_out)}
    real, empty = real_keys(output, stop)
    diff = key_diff(keys, real, empty) + value_diff(values, output)
    assert not diff, f"{what} disagrees with the real output:\n  " + "\n  ".join(diff)


def test_the_parser_sees_a_renamed_key() -> None:
    doc = ("## `edgeq.x/1`\n\n| key | meaning |\n|---|---|\n"
           "| `schema` | `\"edgeq.x/1\"` |\n"
           "| `a`, `b` | `c` {`d`, `e`}, `f` TENSOR (`\"v\"` is a value) |\n\n"
           "### `TENSOR`\n\n| key | meaning |\n|---|---|\n| `name` | |\n| `scale` | |\n")
    tables = key_tables(doc)
    keys = documented_keys(tables, "edgeq.x/1")
    assert keys == {"schema", "a", "b", "a.c", "b.c", "a.c.d", "a.c.e", "b.c.d", "b.c.e",
                    "a.f", "b.f", "a.name", "a.scale", "b.name", "b.scale"}
    t = {"name": "x", "scale": 1.0}
    out = {"schema": "edgeq.x/1", "a": {"c": {"d": 1, "e": 2}, "f": 0, **t},
           "b": {"c": {"d": 1, "e": 2}, "f": 0, **t}}
    assert key_diff(keys, *real_keys(out)) == []
    out["a"]["c"]["e2"] = out["a"]["c"].pop("e")
    assert key_diff(keys, *real_keys(out)) == ["printed but not documented: a.c.e2",
                                               "documented but not printed: a.c.e"]
    # below a null the documented children cannot be seen; a list's items are its children
    assert key_diff({"a", "a.b", "l", "l.x"}, *real_keys({"a": None, "l": [{"x": 1}]})) == []
    # quoted values belong to the key before them; a printed string must be one of them
    assert documented(tables, "edgeq.x/1")[1] == {"schema": {"edgeq.x/1"}, "a.f": {"v"},
                                                  "b.f": {"v"}}
    assert value_diff({"schema": {"edgeq.x/1"}, "s": {"file:<name>"}},
                      {"schema": "edgeq.x/2", "s": "file:calib.npy"}) == [
        "schema is 'edgeq.x/2', documented: ['edgeq.x/1']"]


# ------------------------------------------------------------------------------ real output


def _edgeq(*args: str, env: dict[str, str], timeout: float = 600) -> str:
    res = subprocess.run([sys.executable, "-m", "edgeq.host", *args], capture_output=True,
                         text=True, env=env, timeout=timeout)
    assert res.returncode == 0, f"edgeq {args[0]} failed:\n{res.stderr[-3000:]}"
    return res.stdout


def _agent(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeq.device", "--home", str(home), *args],
                          capture_output=True, text=True, env=env, timeout=300)


class Wire:
    """Raw JSON lines on the daemon's Unix socket (no client code in between)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(300)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self.next_id = 0

    def send(self, op: str, **args: Any) -> dict[str, Any]:
        self.file.write(json.dumps({"id": self.next_id, "op": op, "args": args}).encode()
                        + b"\n")
        self.file.flush()
        self.next_id += 1
        return json.loads(self.file.readline())

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def printed(tiny_artifacts: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, Any]]:
    """What the commands print, from one local deploy and one bench-remote through the daemon."""
    base = tmp_path_factory.mktemp("docs")
    home, home2 = base / "edgeq", base / "edgeq-b"
    env = dict(os.environ, EDGEQ_HISTORY_DB=str(base / "history.sqlite3"), COLUMNS="160")
    out: dict[str, Any] = {}
    deployed = json.loads(_edgeq("deploy", str(tiny_artifacts), "--host", "local",
                                 "--device-dir", str(home), "--json", env=env))
    try:
        assert deployed["daemon"].startswith("running"), deployed["daemon"]
        out["compare"] = json.loads(_edgeq(
            "bench-remote", str(tiny_artifacts), "--host", "local", "--device-dir", str(home),
            "--eval-limit", str(EVAL_LIMIT), "--rounds", "2", *FAST, "--json", env=env))
        out["profile"] = json.loads(_edgeq(
            "profile", str(tiny_artifacts), "--host", "local", "--device-dir", str(home),
            "--runs", "20", "--rounds", "2", "--json", env=env))
        # a fleet: the board above and a second device dir, from an Ansible inventory
        inventory = base / "lab.ini"
        inventory.write_text(f"[lab]\na ansible_connection=local edgeq_device_dir={home}\n"
                             f"b ansible_connection=local edgeq_device_dir={home2}\n")
        out["fleet_deploy"] = json.loads(_edgeq(
            "deploy", str(tiny_artifacts), "--inventory", str(inventory), "--json", env=env))
        out["fleet"] = json.loads(_edgeq(
            "bench-remote", str(tiny_artifacts), "--inventory", str(inventory),
            "--threads", "1", "--eval-limit", str(EVAL_LIMIT), "--rounds", "1", *FAST,
            "--json", env=env))
        current = json.loads((home / "deployments" / "current.json").read_text())
        out["current"] = current
        model = home / "models" / f"{current['int8']}.tflite"
        data = home / "data" / f"{current['eval_data']}.npz"
        one_shot = _agent(home, "bench", str(model), "--data", str(data), "--eval-limit",
                          str(EVAL_LIMIT), *AGENT_FAST, "--json", env=env)
        assert one_shot.returncode == 0, one_shot.stderr[-3000:]
        out["one_shot"] = json.loads(one_shot.stdout)
        wire = Wire(home / "agent.sock")
        try:
            out["hello"] = wire.send("hello", protocol=1)
            out["unknown_op"] = wire.send("no_such_op")
            ops = out["unknown_op"]["error"]["hint"].removeprefix("ops: ").split(", ")
            out["op_args"] = {op: wire.send(op, no_such_arg=1)["error"]["hint"]
                              for op in ops if op != "hello"}
            out["evaluate"] = wire.send("evaluate", model="int8", eval_limit=EVAL_LIMIT)
        finally:
            wire.close()
        yield out
    finally:
        _agent(home, "stop", env=env)
        if home2.exists():
            _agent(home2, "stop", env=env)


def test_printed_setup(printed: dict[str, Any]) -> None:
    """The real output is what the key tests below take it to be."""
    doc = printed["compare"]
    assert doc["schema"] == "edgeq.compare/1" and doc["settings"]["path"] == "daemon"
    assert doc["settings"]["order"] == "ABBA"
    assert printed["one_shot"]["schema"] == "edgeq.bench/1"
    assert "agent" not in printed["one_shot"]
    assert printed["evaluate"]["ok"], printed["evaluate"]
    assert printed["evaluate"]["result"]["schema"] == "edgeq.evaluate/1"


# ------------------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def schema() -> dict[str, list[tuple[list[str], str]]]:
    return key_tables(SCHEMA_MD.read_text())


def test_readme_bench_remote_json_table(schema: dict, printed: dict[str, Any]) -> None:
    tables = key_tables(README_MD.read_text())
    # the table under `edgeq bench-remote`; it names SCHEMA.md's ENVIRONMENT and RUNTIME
    doc = documented(tables, "edgeq bench-remote", fragments=schema)
    # the device's full result is documented in docs/SCHEMA.md (tested below)
    stop = frozenset({"models.float32.result", "models.int8.result"})
    assert_keys("README.md's bench-remote --json table", doc, printed["compare"], stop)


def test_schema_manifest(schema: dict, tiny_artifacts: Path) -> None:
    manifest = json.loads((tiny_artifacts / "manifest.json").read_text())
    assert_keys("docs/SCHEMA.md edgeq.manifest/1", documented(schema, "edgeq.manifest/1"),
                manifest)


def test_schema_train_json(schema: dict, tiny_artifacts: Path) -> None:
    train = json.loads((tiny_artifacts / "train.json").read_text())
    # history is keyed by the metric names the model was compiled with
    assert_keys("docs/SCHEMA.md train.json", documented(schema, "train.json"), train,
                stop=frozenset({"history"}))


def test_schema_bench_result(schema: dict, printed: dict[str, Any]) -> None:
    doc = documented(schema, "edgeq.bench/1")
    assert "agent.queued_s" in doc[0], "docs/SCHEMA.md no longer documents the agent block"
    assert_keys("docs/SCHEMA.md edgeq.bench/1 (one-shot agent)", doc, printed["one_shot"],
                leave_out=("agent",))  # only results that came through the daemon have it
    for kind in ("float32", "int8"):
        assert_keys(f"docs/SCHEMA.md edgeq.bench/1 (daemon, {kind} in bench-remote)", doc,
                    printed["compare"]["models"][kind]["result"])


def test_schema_environment_is_the_compare_device(schema: dict, printed: dict[str, Any]
                                                  ) -> None:
    assert_keys("docs/SCHEMA.md ENVIRONMENT", documented(schema, "ENVIRONMENT"),
                printed["compare"]["device"])


def test_schema_evaluate_result(schema: dict, printed: dict[str, Any]) -> None:
    assert_keys("docs/SCHEMA.md edgeq.evaluate/1", documented(schema, "edgeq.evaluate/1"),
                printed["evaluate"]["result"])


def test_schema_current_json(schema: dict, printed: dict[str, Any]) -> None:
    assert_keys("docs/SCHEMA.md current.json", documented(schema, "current.json"),
                printed["current"], stop=frozenset({"manifest"}))  # tested above


def test_schema_wire_envelopes(schema: dict, printed: dict[str, Any]) -> None:
    doc = documented(schema, "response")
    assert printed["hello"]["ok"] is True and printed["unknown_op"]["ok"] is False
    assert_keys("docs/SCHEMA.md response (ok)", doc, printed["hello"],
                stop=frozenset({"result"}), leave_out=("error",))
    assert_keys("docs/SCHEMA.md response (error)", doc, printed["unknown_op"],
                leave_out=("result",))


def test_schema_daemon_ops_and_their_args(schema: dict, printed: dict[str, Any]) -> None:
    """The ops and args the daemon itself names in its errors (hello: the handshake above)."""
    real: set[str] = {"hello", "hello.protocol"}
    for op, hint in printed["op_args"].items():
        real.add(op)
        takes = hint.split(" takes: ", 1)[1]
        if takes != "no arguments":
            real.update(f"{op}.{arg}" for arg in takes.split(", "))
    diff = key_diff(documented_keys(schema, "ops"), real, set())
    assert not diff, "docs/SCHEMA.md's daemon ops disagree with the daemon:\n  " + \
        "\n  ".join(diff)


def test_schema_profile(schema: dict, printed: dict[str, Any]) -> None:
    doc = printed["profile"]
    assert doc["schema"] == "edgeq.profile/1" and doc["layers"]
    assert_keys("docs/SCHEMA.md edgeq.profile/1", documented(schema, "edgeq.profile/1",
                                                              fragments=schema), doc)


def test_schema_fleet_documents(schema: dict, printed: dict[str, Any]) -> None:
    deployed, fleet = printed["fleet_deploy"], printed["fleet"]
    assert deployed["ok"] and [b["board"] for b in deployed["boards"]] == ["a", "b"]
    assert fleet["ok"] and {b["board"] for b in fleet["boards"]} == {"a", "b"}
    assert_keys("docs/SCHEMA.md edgeq.fleet_deploy/1",
                documented(schema, "edgeq.fleet_deploy/1"), deployed,
                stop=frozenset({"boards.deploy"}))  # each board's own deploy summary
    assert_keys("docs/SCHEMA.md edgeq.fleet/1", documented(schema, "edgeq.fleet/1",
                                                            fragments=schema), fleet,
                stop=frozenset({"boards.runs.compare"}))  # edgeq.compare/1, tested above
