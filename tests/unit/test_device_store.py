"""edgeq.device.store: layout, sha256 verification, references, removal, atomic writes."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from edgeq.device.errors import IntegrityError, ModelNotFoundError, StoreError
from edgeq.device.store import (
    Store,
    atomic_write_bytes,
    atomic_write_json,
    edgeq_home,
    parse_deployment,
)


def _store_with_files(tmp_path: Path) -> tuple[Store, str, str, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.tflite").write_bytes(b"\x1c\0\0\0TFL3" + b"a" * 100)
    (src / "b.tflite").write_bytes(b"\x1c\0\0\0TFL3" + b"b" * 100)
    (src / "e.npz").write_bytes(b"PK" + b"e" * 100)
    store = Store(tmp_path / "home")
    a = store.add_model(src / "a.tflite")
    b = store.add_model(src / "b.tflite")
    d = store.add_data(src / "e.npz")
    return store, a, b, d


def test_home_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "env"))
    assert edgeq_home() == tmp_path / "env"
    assert edgeq_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("EDGEQ_HOME")
    assert edgeq_home() == Path(os.path.expanduser("~/.edgeq"))


def test_layout_and_listing(tmp_path: Path) -> None:
    store, a, b, d = _store_with_files(tmp_path)
    assert a == hashlib.sha256((tmp_path / "src" / "a.tflite").read_bytes()).hexdigest()
    assert store.model_path(a) == tmp_path / "home" / "models" / f"{a}.tflite"
    assert store.data_path(d).is_file()
    assert {m["sha256"] for m in store.list_models()} == {a, b}
    store.write_deployment({"model_name": "m", "float32": a, "int8": b, "eval_data": d})
    kinds = {m["sha256"]: m["kinds"] for m in store.list_models()}
    assert kinds == {a: ["float32"], b: ["int8"]}
    assert store.resolve_model_ref("int8") == b and store.resolve_data_ref("current") == d
    assert store.model("float32") == (a, store.model_path(a))
    assert not list(store.deployments_dir.glob(".*tmp"))  # no temp file left behind


def test_refs_without_deployment(tmp_path: Path) -> None:
    store, a, _, _ = _store_with_files(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no int8 model is deployed"):
        store.model("int8")
    with pytest.raises(ModelNotFoundError):
        store.data("current")
    with pytest.raises(ModelNotFoundError):
        store.model("0" * 64)
    store.current_path.write_text("{broken")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.model("int8")


def test_verify_detects_corruption(tmp_path: Path) -> None:
    store, a, b, d = _store_with_files(tmp_path)
    assert store.verify()["ok"] is True
    p = store.model_path(b)
    p.write_bytes(p.read_bytes()[:-1] + b"X")
    report = store.verify()
    assert report["ok"] is False
    bad = [f for f in report["files"] if not f["ok"]]
    assert [f["sha256"] for f in bad] == [b] and "corrupt" in bad[0]["error"]
    with pytest.raises(IntegrityError):
        store.model(b)
    assert store.verify(a)["ok"] is True
    with pytest.raises(ModelNotFoundError):
        store.verify("1" * 64)


def test_remove_refuses_what_is_deployed(tmp_path: Path) -> None:
    store, a, b, d = _store_with_files(tmp_path)
    store.write_deployment({"model_name": "m", "float32": a, "int8": b, "eval_data": d})
    with pytest.raises(StoreError, match="deployed"):
        store.remove(a)
    assert store.model_path(a).exists()
    removed = store.remove(a, force=True)
    assert removed[0]["kind"] == "model" and not store.model_path(a).exists()
    with pytest.raises(ModelNotFoundError):
        store.remove(a, force=True)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    atomic_write_bytes(target, b"second", mode=0o600)
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(target.parent) == ["x.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.bin"]
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_bytes() == b"old"


def test_parse_deployment_checks_what_readers_rely_on() -> None:
    a, b, d = "a" * 64, "b" * 64, "d" * 64
    good = {"model_name": "m", "float32": a, "int8": b, "eval_data": d, "extra": [1]}
    assert parse_deployment(json.dumps(good).encode()) == good
    assert parse_deployment(json.dumps({**good, "eval_data": None}).encode())["eval_data"] is None
    bad = [
        (b"{broken", "not valid JSON"),
        (b"\xff", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({**good, "int8": None}).encode(), "int8 is not a 64-hex sha256"),
        (json.dumps({**good, "float32": "../../etc/passwd"}).encode(), "float32"),
        (json.dumps({**good, "float32": a.upper()}).encode(), "float32"),
        (json.dumps({**good, "eval_data": 5}).encode(), "eval_data"),
        (json.dumps({**good, "model_name": 3}).encode(), "model_name"),
    ]
    for data, match in bad:
        with pytest.raises(StoreError, match=match) as info:
            parse_deployment(data, "dev:/x/current.json")
        assert "edgeq deploy" in info.value.hint
        assert "current.json" in info.value.message


def test_store_reads_and_writes_deployments_through_the_same_check(tmp_path: Path) -> None:
    store, a, b, d = _store_with_files(tmp_path)
    with pytest.raises(StoreError, match="int8"):
        store.write_deployment({"model_name": "m", "float32": a, "int8": "x", "eval_data": d})
    assert not store.current_path.exists()
    store.current_path.parent.mkdir(parents=True, exist_ok=True)
    store.current_path.write_text(json.dumps({"float32": a, "int8": 7}))
    with pytest.raises(StoreError, match="int8 is not a 64-hex sha256"):
        store.current_deployment()


def test_store_needs_only_the_standard_library() -> None:
    """deploy installs through this module on a bare board: no numpy, no other edgeq code."""
    code = ("import sys, edgeq.device.store; "
            "print(sorted(m for m in sys.modules if m.startswith(('edgeq', 'numpy', 'psutil'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(["edgeq", "edgeq.device", "edgeq.device.errors",
                                      "edgeq.device.fileutil", "edgeq.device.store"])


def test_claim_home_only_takes_new_empty_marked_or_earlier_edgeq_dirs(tmp_path: Path) -> None:
    from edgeq.device.store import STORE_MARKER, claim_home, home_facts, home_problem

    new = tmp_path / "a" / "new"
    assert claim_home(new) == {"state": "created"}
    assert stat.S_IMODE(new.stat().st_mode) == 0o700
    assert json.loads((new / STORE_MARKER).read_text()) == {"format": 1}
    assert claim_home(new) == {"state": "ours"}
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    assert claim_home(empty) == {"state": "marked"}
    assert stat.S_IMODE(empty.stat().st_mode) == 0o700
    # an earlier edgeq's layout: adopted, its venv marked as edgeq's
    old = tmp_path / "old"
    (old / "agent-releases" / "r1").mkdir(parents=True)
    (old / "agent").symlink_to("agent-releases/r1")
    (old / "deployments").mkdir()
    (old / "deployments" / "current.json").write_text("{}")
    (old / "venv").mkdir()
    (old / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert claim_home(old) == {"state": "adopted"}
    assert (old / "venv" / ".edgeq-venv").is_file()
    # a user's directory: refused, untouched
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and is not edgeq's"):
        claim_home(user)
    assert os.listdir(user) == ["notes.txt"]
    (user / STORE_MARKER).write_text("not json")
    assert "damaged" in home_problem(home_facts(str(user))).message
    (user / STORE_MARKER).write_text('{"format": 7}')
    assert "newer edgeq" in home_problem(home_facts(str(user))).message
    facts = home_facts(str(new))
    assert home_problem({**facts, "owner_uid": facts["uid"] + 1}).message.startswith(
        f"the device directory {new} belongs to user id")


def test_the_host_bootstrap_sees_the_device_dir_as_the_store_does(tmp_path: Path) -> None:
    """deploy's bootstrap gathers the facts before any edgeq code is on the device; they must
    be the store's own (home_problem decides on them on both sides)."""
    from edgeq.device.store import STORE_MARKER, claim_home, home_facts
    from edgeq.host.deploy import _BOOTSTRAP

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "x").write_text("x")
    claim_home(tmp_path / "ours")
    for name in ("user", "ours", "missing"):
        d = str(tmp_path / name)
        r = subprocess.run([sys.executable, "-c", _BOOTSTRAP, "probe", d, STORE_MARKER,
                            str(tmp_path)], capture_output=True, text=True, check=True)
        assert json.loads(r.stdout)["device_dir"] == home_facts(d), name


def test_systemd_unit_keeps_odd_paths_whole() -> None:
    from edgeq.device.install import render_unit

    template = ('Environment="PYTHONPATH=%h/.edgeq/agent"\n'
                'ExecStart="%h/.edgeq/bin/python" -m edgeq.device --home "%h/.edgeq" serve\n'
                "MemoryMax=75%\n")
    out = render_unit(template, '/srv/a&b#c d%e"f\\g')
    assert out.splitlines() == [
        'Environment="PYTHONPATH=/srv/a&b#c d%%e\\"f\\\\g/agent"',
        'ExecStart="/srv/a&b#c d%%e\\"f\\\\g/bin/python" -m edgeq.device --home '
        '"/srv/a&b#c d%%e\\"f\\\\g" serve',
        "MemoryMax=75%"]


def test_install_check_compares_what_the_host_would_send_with_the_device(tmp_path: Path
                                                                         ) -> None:
    """edgeq.device.install check (deploy's one-command repeated deploy): every difference is
    a reason; a record written by write_deployment with its stamp matches, but for the
    daemon, which no one runs here."""
    from edgeq.device.install import check, write_deployment

    store, a, b, d = _store_with_files(tmp_path)
    lay = store.layout
    pkg = Path(lay.release("r1"), "edgeq", "device")
    pkg.mkdir(parents=True)
    (pkg / "store.py").write_bytes(b"code")
    os.symlink("agent-releases/r1", lay.agent)
    Path(lay.deploy_script).write_bytes(b"#!/bin/sh\n")
    record = {"model_name": "m", "float32": a, "int8": b, "eval_data": d, "agent_release": "r1"}
    data = (json.dumps({**record, "manifest": {"k": 1}}, indent=2, sort_keys=True) + "\n"
            ).encode()
    sha = hashlib.sha256
    settings = {"runtime": "auto"}
    stamp = {"settings": settings, "current_sha256": sha(data).hexdigest(),
             "script": {"python_path": "/x/python"}}
    assert write_deployment(store, data, sha(data).hexdigest(), json.dumps(stamp)) == {"bad": []}
    spec = {"release": "r1", "settings": settings,
            "agent": {"store.py": sha(b"code").hexdigest()},
            "deploy_script": sha(b"#!/bin/sh\n").hexdigest(),
            "current": {**record, "manifest_sha256": sha(b'{"k": 1}').hexdigest()}}
    out = check(store, spec)
    assert out["home"] == lay.home and out["unchanged"] is False
    assert out["changed"] == [f"{lay.home} has no .edgeq-store marker"] + out["changed"][1:]
    from edgeq.device.store import claim_home

    claim_home(lay.home)  # marked and 0700, as deploy leaves it
    out = check(store, spec)
    assert len(out["changed"]) == 1 and out["changed"][0].startswith("the daemon does not answer")
    os.chmod(lay.home, 0o755)
    assert f"{lay.home} is not mode 0700" in check(store, spec)["changed"]
    os.chmod(lay.home, 0o700)
    # each difference is named
    os.chmod(lay.model(b), 0o644)
    Path(lay.model(b)).write_bytes(b"tampered")
    other = {**spec, "settings": {"runtime": "litert"},
             "agent": {"store.py": sha(b"other").hexdigest()},
             "current": {**spec["current"], "manifest_sha256": sha(b"{}").hexdigest()}}
    changed = check(store, other)["changed"]
    assert any(c.startswith(f"int8 {b[:12]} is damaged") for c in changed), changed
    assert "agent file store.py differs" in changed
    assert "current.json manifest_sha256 differs" in changed
    assert "the deploy settings differ" in changed
    # a damaged model keeps the old record; a record without its stamp (an older edgeq's)
    # never matches
    assert write_deployment(store, data, sha(data).hexdigest()) == {"bad": [lay.model(b)]}
    Path(lay.deploy_stamp).unlink()
    assert any(c.startswith("no ") for c in check(store, spec)["changed"])
